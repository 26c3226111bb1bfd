"""One reader of a results folder, for the tables and the figures alike (docs/design.md, "Outputs").

    results = read_results(grid, "training_results/metrics")
    results.metrics      # one row per job: model, hardware, tp, job, then its metrics, grid order
    results.cells        # the same jobs as GridCells
    results.notes        # why a file or a job was left out

Which jobs a results folder holds is decided here once: the grid's jobs whose metrics file (the
file a job writes last) is there, less those whose training diverged (the launcher's summary
says so, or the loss is not finite). The aggregator's tables and every figure read only these
jobs' files, so a table and its figures always show the same jobs.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from model import config
from model.errors import InputError, refuse_special_file
from model.grid import Grid, GridCell
from model.outputs import write_csv

METRICS_SUFFIX = "_metrics.csv"
# The layout of a job's files. The metrics file, written last, carries it as its last row; a
# folder of another version is refused with the advice to rerun, never read around (a job of
# this version always writes its provenance record and generation CSV before its metrics).
RESULTS_VERSION = 1
VERSION_ROW = "results_version"


@dataclass
class Results:
    metrics_dir: Path
    metrics: pd.DataFrame                 # model, hardware, tp, job, then the metrics
    cells: list[GridCell] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def jobs(self) -> list[str]:
        return [c.job_name for c in self.cells]

    @property
    def root(self) -> Path:
        return self.metrics_dir.parent

    def job_files(self, suffix: str) -> list[tuple[GridCell, Path]]:
        """Each job's metrics/{job}{suffix} file that exists, in grid order."""
        return [(cell, path) for cell in self.cells
                if (path := self.metrics_dir / f"{cell.job_name}{suffix}").is_file()]


def write_metrics_file(path: Path | str, values: dict[str, float]) -> None:
    """A job's metrics CSV: `metric,value` rows (config.METRIC_ORDER first), then the version."""
    write_csv(path, ["metric", "value"],
              [[k, repr(float(v))] for k, v in values.items()] + [[VERSION_ROW, RESULTS_VERSION]])


def read_metrics_file(path: Path | str) -> dict[str, float]:
    """metric -> value of one metrics CSV (the version row checked and left out); ValueError
    saying what is wrong when it is damaged or of another version."""
    refuse_special_file(path, "metrics CSV")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError("file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"not a readable CSV ({str(err).splitlines()[0]})") from None
    if list(frame.columns) != ["metric", "value"]:
        raise ValueError(f"header is {','.join(map(str, frame.columns))!r}, expected 'metric,value'")
    values = {}
    for metric, value in zip(frame["metric"], frame["value"]):
        try:
            values[metric] = float(value)
        except ValueError:
            raise ValueError(f"metric {metric!r} has value {value!r}, not a number") from None
    missing = [m for m in config.METRIC_ORDER if m not in values]
    if missing:
        raise ValueError(f"metric {missing[0]!r} is missing (truncated file?)")
    version = values.pop(VERSION_ROW, None)
    if version != RESULTS_VERSION:
        raise ValueError(f"results of another version of the pipeline (results version "
                         f"{'none' if version is None else f'{version:g}'}; this reads {RESULTS_VERSION}); "
                         "rerun the job")
    return values


def diverged_jobs(summary_path: Path) -> set[str]:
    """Jobs the launcher's summary records as diverged (none without a readable summary)."""
    try:
        records = json.loads(Path(summary_path).read_text())
        return {r["job_name"] for r in records if r.get("status") == "diverged"}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return set()


def read_results(grid: Grid, metrics_dir: Path | str) -> Results:
    """The jobs of a results folder's metrics folder and their metrics (none when it is absent);
    InputError naming a damaged metrics file."""
    metrics_dir = Path(metrics_dir)
    known = grid.cells_by_job_name()
    notes = [f"ignored {path.name}: {path.name[: -len(METRICS_SUFFIX)]!r} is not a configuration of the grid"
             for path in sorted(metrics_dir.glob(f"*{METRICS_SUFFIX}"))
             if path.name[: -len(METRICS_SUFFIX)] not in known]
    diverged = diverged_jobs(metrics_dir.parent / config.SUMMARY_FILE)
    rows, cells = [], []
    for job, cell in known.items():
        path = metrics_dir / f"{job}{METRICS_SUFFIX}"
        if not path.exists() and not path.is_symlink():
            continue            # not there; anything else there (a FIFO, a folder) is read and refused
        try:
            values = read_metrics_file(path)
        except (ValueError, OSError) as err:
            raise InputError(f"{path}: {err}") from None
        for kind in ("provenance", "generation"):      # written before the metrics file
            companion = config.job_file(metrics_dir.parent, kind, job)
            if not companion.exists() and not companion.is_symlink():
                raise InputError(f"{companion}: missing beside {path.name}; the job's files are incomplete "
                                 "(rerun the job)")
        # a model whose loss is not finite learned nothing: its scores would only blur the table
        if job in diverged or not math.isfinite(values.get("final_train_loss", float("nan"))):
            notes.append(f"left out {job}: its training diverged (loss not finite)"
                         + (" in the last run; its metrics file is from an earlier one" if job in diverged else ""))
            continue
        rows.append({"model": cell.model, "hardware": cell.hardware, "tp": cell.tp, "job": job, **values})
        cells.append(cell)
    return Results(metrics_dir, pd.DataFrame(rows), cells, notes)
