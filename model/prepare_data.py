"""Build a training file from raw measurements: vLLM benchmark JSONs + nvidia-smi power CSVs.

    python -m model.prepare_data --runs measurements/llama8b_h100 --model llama-3-8b --hardware h100
    python -m model.prepare_data --runs DIR --model llama-3-70b --hardware a100 --gpus 4,5,6,7 \\
        --out model/training_data/vllm-benchmark_llama-3-70b_a100.npz

DIR holds, for every run, the JSON of `benchmark_serving.py --save-result --save-detailed` (or
`vllm bench serve`; with the run's `tensor_parallel_size`, e.g. `--metadata tensor_parallel_size=2`;
`--append-result` files hold one run per line) and the CSV of `nvidia-smi --query-gpu=timestamp,
index,power.draw,... --format=csv -lms 250` recorded during it; files are paired by time, not by
name, and JSON files that are not benchmark results are skipped. Writes the .npz (default:
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
from model.data import DataError, load_power_file, pad_runs
from model.errors import EXIT_OK, ArgumentParser, InputError, run_cli
from model.grid import add_grid_flag, grid_of_argv
from model.measurements import (BenchmarkRun, ReadOptions, bin_run, files_by_format, nvidia_smi, pair_runs,
                                read_folder, vllm_json)
from model.measurements.binning import MAX_SAMPLE_GAP_S
from model.outputs import atomic_path, file_sha256, refuse_clashes, same_file, write_json



def sidecar_path(npz_path: Path) -> Path:
    return npz_path.with_name(npz_path.stem + ".sources.json")


def run_gpus(run: BenchmarkRun, gpus: list[int] | None) -> list[int]:
    """The nvidia-smi indices of the GPUs whose watts make up a run: the first TP of --gpus, or 0..TP-1."""
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
    refuse_clashes({"--out": out, "--out's sources file": sidecar_path(out)},
                   {f"the raw file {p.name}": p for p in files[vllm_json] + files[nvidia_smi]
                    if not (overwrite and same_file(p, sidecar_path(out)))})   # our own, replaced
    if not files[vllm_json] or not files[nvidia_smi]:
        raise InputError(f"{runs_dir}: needs benchmark *.json and power *.csv files; found "
                         f"{len(files[vllm_json])} and {len(files[nvidia_smi])}")
    sources = read_folder(runs_dir, ReadOptions(num_gpus, seed, allow_rebuilt))
    pairs, lonely_runs, lonely_logs = pair_runs(sources.runs, sources.logs)
    for name, why in sources.skipped:
        echo(f"unmatched: {name}: {why}")
    for run in lonely_runs:
        echo(f"unmatched: {run.name}: no power CSV covers its span")
    for log in lonely_logs:
        echo(f"unmatched: {log.path.name}: no benchmark run during it")
    if not pairs:
        raise InputError(f"{runs_dir}: no benchmark JSON overlaps a power CSV in time")

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
            "power_rows_dropped": log.dropped_rows, **run.arrivals_source})
        if run.rebuilt:
            echo(f"{run.name}: no per-request send times; arrivals {run.arrivals_source['arrivals']}")
    arrays = pad_runs(traces) | {     # the data file's own layout (model/data.py)
        "tensor_parallelism": np.array([run.tp for run, _ in pairs], dtype=np.int64),
        "poisson_rate": np.array([run.request_rate for run, _ in pairs], dtype=float),
    }
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
    parser.add_argument("--runs", required=True, help="folder of benchmark JSONs and power CSVs")
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
