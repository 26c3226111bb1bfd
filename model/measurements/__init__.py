"""Raw measurements -> training traces, one module per source format (docs/design.md, "Raw data").

    sources = read_folder(runs_dir, ReadOptions(num_gpus=None, seed=0))
    pairs, lonely_runs, lonely_logs = pair_runs(sources.runs, sources.logs)
    bins = bin_run(run, log, gpus=[0, 1])          # nvidia-smi GPU indices

Every format is a module with a file `SUFFIX` and `read(path, options) -> Sources` (common.py):
native_run.py reads the campaign's run folders (a manifest.json with its requests, power log and
engine counters, found in any subfolder: `RECURSIVE`), vllm_json.py the serving benchmark's
results (the runs), nvidia_smi.py the power logs. read_folder sends each file of a folder to the
format of its suffix, leaving out the files of native run folders; binning.py pairs runs with
logs (by time, or the log a native run names) and bins them. `python -m model.prepare_data` is
the command-line front end.
"""
from __future__ import annotations

from pathlib import Path

from model.measurements import native_run, nvidia_smi, vllm_json
from model.measurements.binning import bin_run, overlap_s, pair_runs, run_watts
from model.measurements.common import BenchmarkRun, PowerLog, ReadOptions, Sources
from model.measurements.nvidia_smi import read_power_log
from model.measurements.vllm_json import is_benchmark_result, read_benchmarks

# The formats, in the order their files are read; a new one is a module here (docs/design.md,
# "Extending"). A RECURSIVE format's files are found in any subfolder (those its `claims`
# accepts), and the folders holding them belong to it: the other formats leave their files alone.
FORMATS = (native_run, nvidia_smi, vllm_json)

__all__ = ["FORMATS", "BenchmarkRun", "PowerLog", "ReadOptions", "Sources", "bin_run", "files_by_format",
           "is_benchmark_result", "overlap_s", "pair_runs", "read_benchmarks", "read_folder",
           "read_power_log", "run_watts"]


def files_by_format(folder: Path) -> dict[object, list[Path]]:
    """Each format's files in the folder, by suffix, sorted by name: a RECURSIVE format's anywhere
    under it, the others' in the folder itself, except in a folder a RECURSIVE format claims."""
    found, claimed = {}, set()
    for fmt in sorted(FORMATS, key=lambda f: not getattr(f, "RECURSIVE", False)):
        if getattr(fmt, "RECURSIVE", False):
            found[fmt] = [p for p in sorted(folder.rglob(fmt.SUFFIX)) if fmt.claims(p)]
            claimed |= {path.parent for path in found[fmt]}
        else:
            found[fmt] = [p for p in sorted(folder.glob(f"*{fmt.SUFFIX}")) if p.parent not in claimed]
    return {fmt: found[fmt] for fmt in FORMATS}


def read_folder(folder: Path, options: ReadOptions | None = None) -> Sources:
    """Every file of every format in the folder, read into one Sources (options: the defaults
    when None)."""
    options = options or ReadOptions()
    found = Sources()
    for fmt, paths in files_by_format(folder).items():
        for path in paths:
            found += fmt.read(path, options)
    return found
