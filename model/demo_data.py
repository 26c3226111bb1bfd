"""Demo data: a small simulation of a vLLM server, written in the measured files' format.

    python -m model.demo_data --out demo/training_data [--seed 0] [--scale demo|paper]

Writes the 8 files of the grid (4 LLMs x 2 GPU types), each holding the TP values the grid
uses for that LLM, with `trace_lengths`. The same seed gives identical files.

Assumptions of the simulation (one 0.25 s bin at a time):
- Requests arrive as a Poisson process at the measurement campaign's rates (0.125 to 4 req/s).
  Prompt and completion lengths are log-normal with long tails, like ShareGPT; the reasoning
  (DeepSeek-R1-Distill) models write completions about three times as long.
- Continuous batching: arrived requests queue for prefill, which processes prompt tokens at a
  throughput that grows with GPU speed and TP and shrinks with model size. A prefilled request
  then decodes one token per engine step; a step takes longer for bigger models and batches.
  Time spent on prefill in a bin is not available for decoding.
- Per-GPU watts = idle + (peak - idle) x load. Load is the prefill share of the bin (compute
  bound, near peak) plus the decode share times a decode level: a step up as soon as anything
  decodes, then a plateau that grows with batch size and saturates; 70B models reach a higher
  plateau than 8B. Idle is 60-80 W per A100 and 100-140 W per H100, drawn once per file (the
  same GPUs serve every run) with about 1 W between runs; the peak stays below 400 W (A100)
  and 700 W (H100).
- The power sensor lags (first-order response, about half a bin) and is noisy (about 1.5 %
  plus 2 W per GPU), so states are learnable from the workload but never perfectly.
- Watts are summed over the run's TP GPUs. Timestamps are an epoch clock; traces are padded
  to a common length with timestamps ramping down to 0 and the last watt value repeated.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model import config
from model.errors import ArgumentParser, InputError, run_cli
from model.grid import HARDWARE, MODELS, data_file_name
from model.data import write_power_file

POISSON_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
SCALES = {
    # traces per TP, (min, max) bins per trace
    "demo": (10, (240, 320)),
    "paper": (30, (2400, 2500)),
}


@dataclass(frozen=True)
class Hardware:
    idle_w: tuple[float, float]   # per-GPU idle range
    peak_w: float                 # per-GPU ceiling at full load
    speed: float                  # relative compute speed


HARDWARE_PARAMS = {
    "a100": Hardware(idle_w=(60.0, 80.0), peak_w=385.0, speed=1.0),
    "h100": Hardware(idle_w=(100.0, 140.0), peak_w=680.0, speed=1.9),
}


@dataclass(frozen=True)
class LLM:
    step_s: float             # decode step at batch 1 on one A100
    prefill_tok_s: float      # prompt tokens per second on one A100
    decode_plateau: float     # fraction of (peak - idle) a saturated decode batch draws
    output_median: float      # median completion length, tokens


def llm_params(file_stem: str) -> LLM:
    big = "70b" in file_stem
    reasoning = "deepseek" in file_stem
    return LLM(step_s=0.16 if big else 0.024,
               prefill_tok_s=1500.0 if big else 12000.0,
               decode_plateau=0.72 if big else 0.55,
               output_median=(600.0 if reasoning else 200.0))


def per_gpu_watts(hw: Hardware, llm: LLM, idle_w: float, prefill_share: np.ndarray,
                  decode_share: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Noise-free per-GPU power for each bin, before the sensor lag."""
    saturation = 1.0 - np.exp(-np.asarray(batch) / 24.0)
    decode_load = np.where(np.asarray(batch) > 0, 0.25 + (llm.decode_plateau - 0.25) * saturation, 0.0)
    load = np.clip(0.95 * prefill_share + decode_share * decode_load, 0.0, 1.0)
    return idle_w + (hw.peak_w - idle_w) * load


def simulate_run(rng: np.random.Generator, llm: LLM, hw: Hardware, tp: int, rate: float,
                 n_bins: int, idle_w: float) -> dict[str, np.ndarray]:
    """One measured run: per-bin workload and watts, per-request arrivals and lengths."""
    dt = config.SAMPLE_PERIOD_S
    duration = n_bins * dt
    n_requests = rng.poisson(rate * duration)
    arrivals = np.sort(rng.uniform(0.0, duration, n_requests))
    input_tokens = np.clip(rng.lognormal(np.log(220.0), 0.9, n_requests), 4, 4096).astype(np.int64)
    output_tokens = np.clip(rng.lognormal(np.log(llm.output_median), 0.8, n_requests), 1, 4096).astype(np.int64)

    step_s = llm.step_s / (hw.speed * tp ** 0.7)
    prefill_budget = llm.prefill_tok_s * hw.speed * tp ** 0.8 * dt

    prefill = np.zeros(n_bins)
    decode = np.zeros(n_bins)
    active = np.zeros(n_bins)
    prefill_share = np.zeros(n_bins)
    decode_share = np.zeros(n_bins)
    batch_size = np.zeros(n_bins)

    waiting: list[list] = []       # [request, prompt tokens left]
    decoding: list[list] = []      # [request, completion tokens left]
    next_request = 0
    for b in range(n_bins):
        bin_end = (b + 1) * dt
        while next_request < n_requests and arrivals[next_request] < bin_end:
            waiting.append([next_request, float(input_tokens[next_request])])
            next_request += 1
        active[b] = len(waiting) + len(decoding)
        budget = prefill_budget
        while waiting and budget > 0:
            item = waiting[0]
            done = min(item[1], budget)
            item[1] -= done
            budget -= done
            prefill[b] += done
            if item[1] <= 0:
                waiting.pop(0)
                decoding.append([item[0], float(output_tokens[item[0]])])
        prefill_share[b] = 1.0 - budget / prefill_budget
        if decoding:
            decode[b] = sum(output_tokens[r] for r, _ in decoding)
            batch_size[b] = len(decoding)
            decode_share[b] = 1.0 - prefill_share[b]
            tokens_each = decode_share[b] * dt / (step_s * (1.0 + len(decoding) / 64.0))
            for item in decoding:
                item[1] -= tokens_each
            decoding = [item for item in decoding if item[1] > 0]

    idle_w = idle_w + rng.normal(0.0, 1.0)
    target = per_gpu_watts(hw, llm, idle_w, prefill_share, decode_share, batch_size)
    lagged = np.empty(n_bins)
    level = target[0]
    for b in range(n_bins):
        level = 0.55 * target[b] + 0.45 * level
        lagged[b] = level
    gpus = lagged[None, :] + rng.normal(0.0, 1.0, (tp, n_bins)) * (0.015 * lagged + 2.0)
    power = np.clip(gpus, 0.9 * hw.idle_w[0], hw.peak_w).sum(axis=0)
    return {"power": power, "prefill_tokens": prefill, "decode_tokens": decode,
            "active_requests": active, "arrivals": arrivals,
            "input_tokens": input_tokens, "output_tokens": output_tokens}


def simulate_file(seed: int, model_index: int, hardware: str, scale: str,
                  rates: tuple[float, ...] = POISSON_RATES) -> tuple[list[dict], list[int], list[float]]:
    """All runs of one (LLM, GPU type) file in the data file's keys, their TPs and arrival rates."""
    spec = MODELS[model_index]
    rng = np.random.default_rng([seed, model_index, HARDWARE.index(hardware)])
    llm, hw = llm_params(spec.file_stem), HARDWARE_PARAMS[hardware]
    traces_per_tp, (min_bins, max_bins) = SCALES[scale]
    idle_w = rng.uniform(*hw.idle_w)   # the same GPUs serve every run of a file
    runs, tps, run_rates = [], [], []
    for tp in spec.tp_values:
        for i in range(traces_per_tp):
            rate = rates[i % len(rates)]
            n_bins = int(rng.integers(min_bins, max_bins + 1))
            runs.append(simulate_run(rng, llm, hw, tp, rate, n_bins, idle_w))
            tps.append(tp)
            run_rates.append(rate)
    files_runs = []
    for i, run in enumerate(runs):
        start = 1.76e9 + 3600.0 * i + rng.uniform(0, 60)
        files_runs.append({
            "timestamps": start + config.SAMPLE_PERIOD_S * np.arange(len(run["power"])),
            "power_traces": run["power"], "prefill_tokens": run["prefill_tokens"],
            "decode_tokens": run["decode_tokens"], "active_requests": run["active_requests"],
            "request_timestamps": start + run["arrivals"], "input_tokens": run["input_tokens"],
            "output_tokens": run["output_tokens"]})
    return files_runs, tps, run_rates


def is_demo_file(path: Path) -> bool:
    """Whether `path` is a data file this module wrote (it carries the `simulated` mark)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return "simulated" in npz.files
    except Exception:    # unreadable, not an npz, a directory: not ours
        return False


def write_demo_files(out_dir: Path | str, seed: int = 0, scale: str = "demo",
                     models: list[str] | None = None, hardware: list[str] | None = None,
                     rates: tuple[float, ...] = POISSON_RATES) -> list[Path]:
    """Write the grid's data files (or those of the given models/hardware) into out_dir; the
    traces of each TP cycle through `rates` (arrivals per second)."""
    if scale not in SCALES:
        raise InputError(f"unknown --scale {scale!r}; choose from {', '.join(SCALES)}")
    if not rates or any(not (r > 0 and np.isfinite(r)) for r in rates):
        raise InputError(f"--rates must be positive numbers of requests per second, got {rates}")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{out_dir}: cannot create the output folder: {err.strerror}") from None
    targets = [(model_index, spec, hw, out_dir / data_file_name(spec.key, hw))
               for model_index, spec in enumerate(MODELS) if not models or spec.key in models
               for hw in HARDWARE if not hardware or hw in hardware]
    # measured data must never be replaced by simulated data: refuse before writing anything
    for *_, path in targets:
        if (path.exists() or path.is_symlink()) and not is_demo_file(path):
            raise InputError(f"{path}: exists and was not written by the demo generator (no "
                             "'simulated' mark); refusing to overwrite it with demo data; "
                             "choose another folder")
    written = []
    for model_index, spec, hw, path in targets:
        runs, tps, run_rates = simulate_file(seed, model_index, hw, scale, tuple(rates))
        try:
            # `simulated` marks the file as demo data wherever its results go (provenance, table)
            write_power_file(path, runs, tps, extra={"poisson_rate": np.asarray(run_rates),
                                                     "simulated": np.array(1)},
                             pad_timestamps="ramp")
        except OSError as err:
            raise InputError(f"{path}: cannot write: {err.strerror}") from None
        written.append(path)
    return written


def main() -> int:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--out", required=True, help="folder to write the 8 .npz files into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation (same seed, same files)")
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in POISSON_RATES),
                        help="arrival rates (requests/s) the traces of each TP cycle through "
                             "(default: %(default)s); e.g. one rate alone makes held-out traffic")
    parser.add_argument("--scale", choices=sorted(SCALES), default="demo",
                        help="demo: 10 traces of ~280 bins per TP; paper: 30 of ~2,450 bins")
    args = parser.parse_args()
    try:
        rates = tuple(float(r) for r in args.rates.split(","))
    except ValueError:
        raise InputError(f"--rates {args.rates!r}: expected numbers like 0.5,1,2") from None
    for path in write_demo_files(args.out, args.seed, args.scale, rates=rates):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main, "demo_data")
