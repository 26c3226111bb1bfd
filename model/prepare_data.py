"""Build a training file from raw measurements: vLLM benchmark JSONs + nvidia-smi power CSVs.

    python -m model.prepare_data --runs measurements/llama8b_h100 --model llama-3-8b --hardware h100
    python -m model.prepare_data --runs DIR --model llama-3-70b --hardware a100 --gpus 4,5,6,7 \\
        --out model/training_data/vllm-benchmark_llama-3-70b_a100.npz

DIR holds, for every run, the JSON of `benchmark_serving.py --save-result --save-detailed` (or
`vllm bench serve`; with the run's `tensor_parallel_size`, e.g. `--metadata tensor_parallel_size=2`;
`--append-result` files hold one run per line) and the CSV of `nvidia-smi --query-gpu=timestamp,
index,power.draw,... --format=csv -lms 250` recorded during it; files are paired by time, not by
name, and JSON files that are not benchmark results are skipped. Run folders of the
measurement campaign's native layout (manifest.json, requests.json, power.csv, optionally vLLM's
engine.csv) are found anywhere under DIR: each names its own TP, GPUs (by uuid) and clocks, and
its server settings are recorded; runs with the prefix cache on and off are refused together
(a configuration each). Writes the .npz (default:
model/training_data/<the grid's file name>) and beside it <name>.sources.json: the source files,
their checksums, the power column read, how each run's send times were obtained and placed.
Exit status: 0 written, 2 bad or inconsistent raw files (named on stderr), nothing written.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from model import config
from model.settings import check_seed
from model.data import DataError, load_power_file, pad_runs, server_arrays
from model.errors import EXIT_OK, ArgumentParser, InputError, run_cli
from model.grid import add_grid_flag, grid_of_argv
from model.measurements import (BenchmarkRun, ReadOptions, bin_run, files_by_format, native_run, nvidia_smi,
                                pair_runs, read_folder, vllm_json)
from model.measurements.binning import MAX_SAMPLE_GAP_S
from model.outputs import atomic_path, file_sha256, refuse_clashes, same_file, write_json



def sidecar_path(npz_path: Path) -> Path:
    return npz_path.with_name(npz_path.stem + ".sources.json")


def run_gpus(run: BenchmarkRun, gpus: list[int] | None) -> list[int]:
    """The nvidia-smi indices of the GPUs whose watts make up a run: those a native run folder's
    manifest names, else the first TP of --gpus, or 0..TP-1."""
    if run.gpus is not None:
        return run.gpus
    chosen = gpus if gpus is not None else list(range(run.tp))
    if len(chosen) < run.tp:
        raise InputError(f"{run.path.parent / run.name}: TP {run.tp} needs {run.tp} GPUs, --gpus lists "
                         f"{len(chosen)}; pass the {run.tp} nvidia-smi indices the run used")
    return chosen[: run.tp]


def prepare(runs_dir: Path, model: str, hardware: str, out: Path, gpus: list[int] | None,
            num_gpus: int | None, seed: int, overwrite: bool, allow_rebuilt: bool = False,
            echo=print, max_gap_s: float = MAX_SAMPLE_GAP_S) -> Path:
    if not runs_dir.is_dir():
        raise InputError(f"{runs_dir}: not a folder")
    for path in (out, sidecar_path(out)):
        if path.exists() and not overwrite:
            raise InputError(f"{path}: already exists; pass --overwrite to replace it")
    files = files_by_format(runs_dir)
    native_files = [p.parent / name for p in files[native_run] for name in native_run.RUN_FILES]
    refuse_clashes({"--out": out, "--out's sources file": sidecar_path(out)},
                   {f"the raw file {p.relative_to(runs_dir)}": p for p in files[vllm_json] + files[nvidia_smi] + native_files
                    if not (overwrite and same_file(p, sidecar_path(out)))})   # our own, replaced
    refuse_native_folders_without_manifest(runs_dir, files)
    if not files[native_run] and (not files[vllm_json] or not files[nvidia_smi]):
        raise InputError(f"{runs_dir}: needs benchmark *.json and power *.csv files, or run folders with a "
                         f"manifest.json; found {len(files[vllm_json])} JSON and {len(files[nvidia_smi])} CSV files")
    sources = read_folder(runs_dir, ReadOptions(num_gpus, seed, allow_rebuilt))
    if not sources.runs:
        raise InputError(f"{runs_dir}: no benchmark result: none of its {len(files[vllm_json])} JSON files "
                         f"is a vLLM serving-benchmark result (--save-result --save-detailed), and no "
                         f"folder under it holds a run's manifest.json")
    pairs, lonely_runs, lonely_logs = pair_runs(sources.runs, sources.logs)
    for name, why in sources.skipped:
        echo(f"unmatched: {name}: {why}")
    for run in lonely_runs:
        echo(f"unmatched: {run.name}: no power CSV covers its span")
    for log in lonely_logs:
        echo(f"unmatched: {log.path.name}: no benchmark run during it")
    if not pairs:
        raise InputError(f"{runs_dir}: no benchmark JSON overlaps a power CSV in time")
    refuse_mixed_prefix_caching(runs_dir, [run for run, _ in pairs])
    if gpus is not None and any(run.gpus is not None for run, _ in pairs):
        echo("note: --gpus applies to benchmark JSON runs; a native run folder's GPUs are the ones its "
             "manifest.json lists in server.active_gpu_uuids")

    traces, records = [], []
    for row, (run, log) in enumerate(pairs):
        chosen = run_gpus(run, gpus)
        traces.append(bin_run(run, log, chosen, max_gap_s=max_gap_s))
        records.append({
            "row": row, "benchmark": run.name, "benchmark_sha256": file_sha256(run.path),
            "power_log": log.path.name, "power_log_sha256": file_sha256(log.path),
            "tensor_parallel_size": run.tp, "gpus": chosen, "gpu_rows": log.layout,
            "power_column": log.column, "duration_s": run.duration, "bins": len(traces[-1]["timestamps"]),
            "requests": len(run.arrivals), "failed_requests_dropped": run.n_failed,
            "power_samples_dropped": traces[-1]["dropped_power_samples"],
            "power_rows_dropped": log.dropped_rows, **run.arrivals_source, **native_record(run, runs_dir)})
        if run.engine is not None:
            records[-1]["engine"] = native_run.engine_agreement(run.engine, run, config.SAMPLE_PERIOD_S)
            for line in engine_notes(records[-1]["engine"]):
                echo(f"note: {run.name}: {line}")
        if run.rebuilt:
            echo(f"{run.name}: no per-request send times; arrivals {run.arrivals_source['arrivals']}")
    arrays = pad_runs(traces) | {     # the data file's own layout (model/data.py)
        "tensor_parallelism": np.array([run.tp for run, _ in pairs], dtype=np.int64),
        "poisson_rate": np.array([run.request_rate for run, _ in pairs], dtype=float),
    } | server_arrays([run.server for run, _ in pairs])
    sidecar = {"model": model, "hardware": hardware, "sample_period_s": config.SAMPLE_PERIOD_S,
               "clock": "local wall-clock time of the recording machine, read as UTC", "seed": seed,
               "max_gap_s": max_gap_s,
               "traces": records,
               "unmatched": [name for name, _ in sources.skipped] + [r.name for r in lonely_runs] + [log.path.name for log in lonely_logs]}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        try:
            data = load_power_file(tmp)        # what training will read, checked before it lands
        except DataError as err:
            raise InputError(f"{runs_dir}: the traces built from it are not usable: {err.problem}") from None
        write_json(sidecar_path(out), sidecar)
    counts = {tp: sum(t.tp == tp for t in data.traces) for tp in data.tp_values}
    echo(f"wrote {out}: {len(pairs)} traces (" + ", ".join(f"TP {tp}: {n}" for tp, n in counts.items())
         + f"), sources in {sidecar_path(out).name}")
    return out


def refuse_native_folders_without_manifest(runs_dir: Path, files: dict) -> None:
    """A folder of the native layout (requests.json and power.csv) without its manifest.json
    cannot be read: the manifest holds its TP, GPUs, clocks and window."""
    for folder in sorted({runs_dir, *(p.parent for p in runs_dir.rglob(native_run.REQUESTS))}):
        requests = folder / native_run.REQUESTS
        if native_run.is_run_folder_without_manifest(folder) and not (
                folder == runs_dir and requests in files[vllm_json] and vllm_json.read_benchmarks(requests)):
            raise InputError(f"{folder}: holds {native_run.REQUESTS} and {native_run.POWER} of a native run "
                             f"folder but no {native_run.SUFFIX}; it says the run's TP, GPUs, clocks and "
                             f"window: copy it from the run")


def refuse_mixed_prefix_caching(runs_dir: Path, runs: list[BenchmarkRun]) -> None:
    """Prefix cache on and off are two configurations (model/data.py _check_one_prefix_caching)."""
    settings = {run.server.get("prefix_caching") for run in runs} - {None}
    if len(settings) > 1:
        on = next(run.name for run in runs if run.server.get("prefix_caching") is True)
        off = next(run.name for run in runs if run.server.get("prefix_caching") is False)
        raise InputError(f"{runs_dir}: mixes runs with vLLM's prefix cache on ({on}) and off ({off}); "
                         f"they are two configurations: prepare them into separate data files")


def native_record(run: BenchmarkRun, runs_dir: Path) -> dict:
    """What .sources.json adds for a native run folder: its manifest and the server's settings."""
    if run.power_log is None:
        return {}
    manifest = run.path.parent / native_run.SUFFIX
    return {"run_folder": str(run.path.parent.relative_to(runs_dir)) if run.path.parent != runs_dir else ".",
            "manifest_sha256": file_sha256(manifest), "server": dict(run.server)}


# Below these the series built from the requests do not follow what vLLM counted (a check of
# the data the serving model is fitted to; docs/design.md, "Raw data"). A correlation needs a
# run long enough to vary: under MIN_ENGINE_SAMPLES it is recorded but not judged. Fewer than
# half the samples the window should hold: the engine's clock (or its file) is not the run's.
MIN_ENGINE_R, MAX_TOKEN_MISMATCH, MIN_ENGINE_SAMPLES, MIN_ENGINE_COVERAGE = 0.5, 0.05, 40, 0.5


def engine_notes(agreement: dict) -> list[str]:
    """Lines on where the request-derived series disagree with vLLM's own counters."""
    compared, expected = agreement["samples_compared"], agreement["samples_expected"]
    if compared < MIN_ENGINE_COVERAGE * expected:
        return [f"{agreement['engine_file']} has {compared} samples within the run's window, which should hold "
                f"about {expected}: its clock (clock.engine_epoch_offset_s) or the file is not the run's; "
                "nothing compared"]
    notes = []
    r = agreement["in_flight_vs_running_plus_waiting_r"]
    if np.isfinite(r) and r < MIN_ENGINE_R and compared >= MIN_ENGINE_SAMPLES:
        notes.append(f"requests in flight follow vLLM's running + waiting with r {r:.2f} only (below "
                     f"{MIN_ENGINE_R}); check the request timings")
    for kind in ("prompt", "generation"):
        engine, requests = agreement[f"{kind}_tokens_engine"], agreement[f"{kind}_tokens_requests"]
        if requests > 0 and abs(engine - requests) > MAX_TOKEN_MISMATCH * requests:
            notes.append(f"vLLM counted {engine:.0f} {kind} tokens during the run, the requests hold {requests:.0f}")
    return notes


def parse_gpus(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        gpus = [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise InputError(f"--gpus {text!r}: expected GPU indices like 0,1") from None
    if not gpus or min(gpus) < 0 or len(set(gpus)) != len(gpus):
        raise InputError(f"--gpus {text!r}: expected distinct GPU indices like 0,1")
    return gpus


def main() -> int:
    grid = grid_of_argv(sys.argv[1:])
    parser = ArgumentParser(__doc__)
    add_grid_flag(parser)
    parser.add_argument("--runs", required=True,
                        help="folder of benchmark JSONs and power CSVs, and/or native run folders (anywhere under it)")
    parser.add_argument("--model", required=True, choices=grid.model_keys, help="the LLM the runs served")
    parser.add_argument("--hardware", required=True, choices=grid.hardware, help="the GPU type the runs used")
    parser.add_argument("--out", default=None, help="the .npz to write (default: model/training_data/<grid name>)")
    parser.add_argument("--gpus", default=None,
                        help="nvidia-smi indices of the GPUs whose watts are summed (default 0..TP-1)")
    parser.add_argument("--num_gpus", type=int, default=None,
                        help="GPU rows per sample in CSVs without an index column (default: the count "
                             "that fits the sampling period)")
    parser.add_argument("--seed", type=int, default=config.SEED, help="for rebuilt arrival times")
    parser.add_argument("--allow_rebuilt_arrivals", action="store_true",
                        help="use randomly rebuilt send times for runs whose JSON has none (finite request rate)")
    parser.add_argument("--max_gap_s", type=float, default=MAX_SAMPLE_GAP_S,
                        help="longest hole in a used GPU's power values during a run, in seconds, bridged by "
                             f"interpolation; a longer one refuses the run (default: {MAX_SAMPLE_GAP_S:g})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args()
    check_seed(args.seed)
    if args.num_gpus is not None and args.num_gpus < 1:
        raise InputError(f"--num_gpus must be at least 1, got {args.num_gpus}")
    if not (args.max_gap_s > 0 and np.isfinite(args.max_gap_s)):
        raise InputError(f"--max_gap_s must be a positive number of seconds, got {args.max_gap_s}")
    out = Path(args.out) if args.out else config.DATA_DIR / grid.data_file_name(args.model, args.hardware)
    prepare(Path(args.runs), args.model, args.hardware, out, parse_gpus(args.gpus), args.num_gpus,
            args.seed, args.overwrite, args.allow_rebuilt_arrivals, max_gap_s=args.max_gap_s)
    return EXIT_OK


if __name__ == "__main__":
    run_cli(main, "model.prepare_data")
