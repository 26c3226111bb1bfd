"""Raw measurements -> training traces, one module per source format (docs/design.md, "Raw data").

    sources = read_folder(runs_dir, ReadOptions(num_gpus=None, seed=0))
    pairs, lonely_runs, lonely_logs = pair_runs(sources.runs, sources.logs)
    bins = bin_run(run, log, gpus=[0, 1])          # nvidia-smi GPU indices

Every format is a module with a file `SUFFIX` and `read(path, options) -> Sources` (common.py):
vllm_json.py reads the serving benchmark's results (the runs), nvidia_smi.py the power logs.
read_folder sends each file of a folder to the format of its suffix; binning.py pairs runs with
logs by time and bins them. `python -m model.prepare_data` is the command-line front end.
"""
from __future__ import annotations

from pathlib import Path

from model.measurements import nvidia_smi, vllm_json
from model.measurements.binning import bin_run, overlap_s, pair_runs, run_watts
from model.measurements.common import BenchmarkRun, PowerLog, ReadOptions, Sources
from model.measurements.nvidia_smi import read_power_log
from model.measurements.vllm_json import is_benchmark_result, read_benchmarks

# The formats, in the order their files are read; a new one is a module here (docs/design.md,
# "Extending").
FORMATS = (nvidia_smi, vllm_json)

__all__ = ["FORMATS", "BenchmarkRun", "PowerLog", "ReadOptions", "Sources", "bin_run", "files_by_format",
           "is_benchmark_result", "overlap_s", "pair_runs", "read_benchmarks", "read_folder",
           "read_power_log", "run_watts"]


def files_by_format(folder: Path) -> dict[object, list[Path]]:
    """Each format's files in the folder, by suffix, sorted by name."""
    return {fmt: sorted(folder.glob(f"*{fmt.SUFFIX}")) for fmt in FORMATS}


def read_folder(folder: Path, options: ReadOptions | None = None) -> Sources:
    """Every file of every format in the folder, read into one Sources (options: the defaults
    when None)."""
    options = options or ReadOptions()
    found = Sources()
    for fmt, paths in files_by_format(folder).items():
        for path in paths:
            found += fmt.read(path, options)
    return found
