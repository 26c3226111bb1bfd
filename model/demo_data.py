"""Demo data: a small simulation of a vLLM server, written in the measured files' format.

    python -m model.demo_data --output_dir demo/training_data [--seed 0] [--scale demo|paper] [--grid FILE]

Writes one file per LLM and GPU type of the grid (the built-in one: 8 files), each holding the
TP values the grid uses for that LLM, with `trace_lengths`. The same seed gives identical files.
The simulated GPUs and LLMs follow the grid: a GPU from its nameplate watts, an LLM from its
size (hardware_params, llm_params).

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
  plateau than 8B. Idle is 60-80 W per A100 and 100-140 W per H100 (other GPUs: from their
  nameplate watts, hardware_params), drawn once per file (the same GPUs serve every run) with
  about 1 W between runs; the peak stays below nameplate.
- The power sensor lags (first-order response, about half a bin) and is noisy (about 1.5 %
  plus 2 W per GPU), so states are learnable from the workload but never perfectly.
- Watts are summed over the run's TP GPUs. Timestamps are an epoch clock; traces are padded
  to a common length with timestamps ramping down to 0 and the last watt value repeated.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model import config
from model.settings import add_deprecated_flag, check_seed
from model.errors import ArgumentParser, InputError, run_cli
from model.grid import Grid, ModelSpec, add_grid_flag, grid_of_argv
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
    speed: float                  # relative compute speed (an A100 is 1)


# The simulated GPU follows from the grid's nameplate watts alone (model/grid.py): geometric in
# the watts through the measurement campaign's two GPUs, which it reproduces exactly (idle
# 60-80 W and a 385 W ceiling for the A100 at 400 W; 100-140 W, 680 W and 1.9 times the speed for
# the H100 at 700 W), with the ceiling kept below nameplate.
ANCHORS = ((400.0, Hardware(idle_w=(60.0, 80.0), peak_w=385.0, speed=1.0)),
           (700.0, Hardware(idle_w=(100.0, 140.0), peak_w=680.0, speed=1.9)))
MAX_PEAK_SHARE = 0.98


def _between(low: float, high: float, t: float) -> float:
    """low at t = 0, high at t = 1 (exactly), geometric between and beyond."""
    return float(low ** (1.0 - t) * high ** t)


def hardware_params(nameplate_w: float) -> Hardware:
    """The simulated GPU of a grid's hardware entry, from its nameplate watts."""
    (low_w, low), (high_w, high) = ANCHORS
    t = np.log(nameplate_w / low_w) / np.log(high_w / low_w)
    return Hardware(idle_w=(_between(low.idle_w[0], high.idle_w[0], t), _between(low.idle_w[1], high.idle_w[1], t)),
                    peak_w=min(_between(low.peak_w, high.peak_w, t), MAX_PEAK_SHARE * nameplate_w),
                    speed=_between(low.speed, high.speed, t))


@dataclass(frozen=True)
class LLM:
    step_s: float             # decode step at batch 1 on one A100
    prefill_tok_s: float      # prompt tokens per second on one A100
    decode_plateau: float     # fraction of (peak - idle) a saturated decode batch draws
    output_median: float      # median completion length, tokens


# The simulated LLM follows from its size in billions of parameters, geometric in the size
# between (and beyond) the campaign's 8B and 70B models, which it reproduces exactly: decode steps longer, prefill slower and a saturated
# batch nearer the GPU's peak the bigger the model. Reasoning models (DeepSeek-R1 distills)
# write completions about three times as long.
SMALL, BIG = (8.0, LLM(step_s=0.024, prefill_tok_s=12000.0, decode_plateau=0.55, output_median=200.0)), \
    (70.0, LLM(step_s=0.16, prefill_tok_s=1500.0, decode_plateau=0.72, output_median=200.0))
REASONING_OUTPUT_MEDIAN = 600.0
_SIZE = re.compile(r"(\d+(?:\.\d+)?)b(?![a-z])", re.IGNORECASE)


def model_size_b(spec: ModelSpec) -> float:
    """Billions of parameters: the grid's `size_b`, else the "<N>b" in the model's key or file
    stem (llama-3-70b: 70)."""
    if spec.size_b is not None:
        return spec.size_b
    for name in (spec.key, spec.file_stem):
        found = _SIZE.findall(name)
        if found:
            return float(found[-1])
    raise InputError(f"model {spec.key!r}: the demo cannot tell its size; give size_b (billions of "
                     "parameters) for it in the grid file")


def llm_params(spec: ModelSpec) -> LLM:
    """The simulated LLM of a grid's model entry."""
    (small_b, small), (big_b, big) = SMALL, BIG
    t = np.log(model_size_b(spec) / small_b) / np.log(big_b / small_b)     # 0 at 8B, 1 at 70B
    reasoning = "deepseek" in spec.file_stem or "deepseek" in spec.key
    return LLM(step_s=_between(small.step_s, big.step_s, t),
               prefill_tok_s=_between(small.prefill_tok_s, big.prefill_tok_s, t),
               decode_plateau=float(np.clip(small.decode_plateau * (1.0 - t) + big.decode_plateau * t, 0.3, 0.9)),
               output_median=REASONING_OUTPUT_MEDIAN if reasoning else small.output_median)


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


def simulate_file(grid: Grid, seed: int, model_index: int, hardware: str, scale: str,
                  rates: tuple[float, ...] = POISSON_RATES) -> tuple[list[dict], list[int], list[float]]:
    """All runs of one (LLM, GPU type) file in the data file's keys, their TPs and arrival rates."""
    spec = grid.models[model_index]
    rng = np.random.default_rng([seed, model_index, grid.hardware.index(hardware)])
    llm, hw = llm_params(spec), hardware_params(grid.gpu_tdp_w[hardware])
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


def write_demo_files(grid: Grid, out_dir: Path | str, seed: int = 0, scale: str = "demo",
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
    targets = [(model_index, spec, hw, out_dir / grid.data_file_name(spec.key, hw))
               for model_index, spec in enumerate(grid.models) if not models or spec.key in models
               for hw in grid.hardware if not hardware or hw in hardware]
    # measured data must never be replaced by simulated data: refuse before writing anything
    for *_, path in targets:
        if (path.exists() or path.is_symlink()) and not is_demo_file(path):
            raise InputError(f"{path}: exists and was not written by the demo generator (no "
                             "'simulated' mark); refusing to overwrite it with demo data; "
                             "choose another folder")
    for spec in {spec for _, spec, _, _ in targets}:
        llm_params(spec)            # a model of unknown size fails before any file is written
    written = []
    for model_index, _spec, hw, path in targets:
        runs, tps, run_rates = simulate_file(grid, seed, model_index, hw, scale, tuple(rates))
        try:
            # `simulated` marks the file as demo data wherever its results go (provenance, table)
            write_power_file(path, runs, tps, extra={"poisson_rate": np.asarray(run_rates),
                                                     "simulated": np.array(1)},
                             pad_timestamps="ramp")
        except OSError as err:
            raise InputError(f"{path}: cannot write: {err.strerror}") from None
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    grid = grid_of_argv(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(__doc__)
    add_grid_flag(parser)
    parser.add_argument("--output_dir", default=None, help="folder to write the grid's .npz files into (required)")
    add_deprecated_flag(parser, "--out", "--output_dir", "output_dir")
    parser.add_argument("--seed", type=int, default=config.SEED, help="seed of the simulation (same seed, same files)")
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in POISSON_RATES),
                        help="arrival rates (requests/s) the traces of each TP cycle through "
                             "(default: %(default)s); e.g. one rate alone makes held-out traffic")
    parser.add_argument("--scale", choices=sorted(SCALES), default="demo",
                        help="demo: 10 traces of ~280 bins per TP; paper: 30 of ~2,450 bins")
    args = parser.parse_args(argv)
    if args.output_dir is None:
        parser.error("the following arguments are required: --output_dir")
    check_seed(args.seed)
    try:
        rates = tuple(float(r) for r in args.rates.split(","))
    except ValueError:
        raise InputError(f"--rates {args.rates!r}: expected numbers like 0.5,1,2") from None
    for path in write_demo_files(grid, args.output_dir, args.seed, args.scale, rates=rates):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main, "demo_data")
