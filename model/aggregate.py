"""Per-model statistics and the paper's LaTeX table from the jobs' metrics files (docs/design.md, "Outputs").

    stats, notes = aggregate("training_results/metrics", "training_results/table_summary.tex",
                             "training_results/model_statistics.csv")

File names are mapped to configurations through the grid, never guessed. Per model: mean and
population std (ddof=0) over its configurations, NaN values left out (and said so).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from model import config
from model.errors import InputError, refuse_special_file
from model.generation import methods
from model.grid import Grid
from model.latex import booktabs_table, two_lines
from model.outputs import refuse_clashes, write_text
from model.provenance import git_state, now, read_provenance
from model.results import METRICS_SUFFIX, Results, read_results

GENERATION_SUFFIX = "_generation.csv"
UP, DOWN = r"~$\uparrow$", r"~$\downarrow$"
TABLE_COLUMNS = (  # metric, header (two lines: the table fits a two-column page), decimals
    ("val_f1", two_lines(r"\textbf{Validation}", r"\textbf{F1}" + UP), 2),
    ("autocorr_r2", two_lines(r"\textbf{Autocorr}", r"\textbf{$R^2$}" + UP), 2),
    ("transition_mae", two_lines(r"\textbf{Transition}", r"\textbf{MAE (W)}" + DOWN), 1),
    ("ece", two_lines(r"\textbf{Expected}", r"\textbf{Calibration Error}" + DOWN), 4),
)
GENERATION_TABLE_COLUMNS = (
    ("ks", r"\textbf{KS}" + DOWN, 2),
    ("acf_r2", r"\textbf{ACF $R^2$}" + UP, 2),
    ("nrmse", r"\textbf{NRMSE}" + DOWN, 2),
    ("p95_error_pct", two_lines(r"\textbf{P95 err.}", r"\textbf{(\%)}" + DOWN), 1),
    ("p99_error_pct", two_lines(r"\textbf{P99 err.}", r"\textbf{(\%)}" + DOWN), 1),
    ("energy_error_pct", two_lines(r"\textbf{Energy err.}", r"\textbf{(\%)}" + DOWN), 1),
)


def collect(grid: Grid, metrics_dir: Path | str) -> Results:
    """The folder's jobs (model/results.py), read once for both tables; InputError when there is
    no folder or no job in it."""
    metrics_dir = Path(metrics_dir)
    if not metrics_dir.is_dir():
        raise InputError(f"{metrics_dir}: metrics folder not found (run run_all_training.py first)")
    results = read_results(grid, metrics_dir)
    if results.metrics.empty:
        raise InputError(f"{metrics_dir}: no metrics files (*{METRICS_SUFFIX}) of the grid's jobs")
    return results


# settings a table may pool over: the ones that make a cell of the grid (and its data file)
CELL_KEYS = ("model", "hardware", "tp", "data_sha256")


def job_settings_table(metrics_dir: Path, jobs: list[str]) -> pd.DataFrame:
    """One row per job of the settings it recorded (metrics/{job}_provenance.json)."""
    rows = []
    for job in jobs:
        record = read_provenance(config.provenance_path(metrics_dir.parent, job))
        rows.append({"job": job, **{k: v for k, v in record["settings"].items() if k not in CELL_KEYS},
                     "git_commit": (record.get("git") or {}).get("commit"), "data": record.get("data")})
    return pd.DataFrame(rows)


def mixed_settings(settings: pd.DataFrame) -> list[str]:
    """One line per setting that differs between jobs, naming the jobs with each value."""
    lines = []
    for key in [c for c in settings.columns if c not in ("job", "git_commit", "data")]:
        groups = settings.groupby(settings[key].astype(str))["job"].apply(list)
        if len(groups) > 1:
            lines.append(f"{key} differs: " + "; ".join(f"{value} in {', '.join(jobs)}"
                                                          for value, jobs in groups.items()))
    return lines


def model_statistics(grid: Grid, results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Mean and population std per model over its configurations, in the grid's model order."""
    rows, notes = [], []
    for spec in grid.models:
        subset = results[results["model"] == spec.key]
        if subset.empty:
            continue
        row: dict = {"model": spec.key}
        for metric in config.STATISTICS_METRICS:
            if metric not in subset:       # metrics files written before the metric existed
                row[f"{metric}_mean"] = row[f"{metric}_std"] = float("nan")
                continue
            values = subset[metric].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            if len(finite) < len(values):
                notes.append(f"{spec.key}: {metric} is NaN in {len(values) - len(finite)} of "
                             f"{len(values)} configurations; left out of the mean")
            row[f"{metric}_mean"] = float(finite.mean()) if len(finite) else float("nan")
            row[f"{metric}_std"] = float(finite.std(ddof=0)) if len(finite) else float("nan")
        row["n_configs"] = len(subset)
        rows.append(row)
    return pd.DataFrame(rows), notes


def missing_configurations(grid: Grid, results: pd.DataFrame) -> list[str]:
    lines = []
    for spec in grid.models:
        expected = [c.job_name for c in grid.cells([spec.key])]
        found = set(results.loc[results["model"] == spec.key, "job"])
        if len(found) < len(expected):
            missing = [job for job in expected if job not in found]
            lines.append(f"{spec.key}: {len(found)} of {len(expected)} configurations "
                         f"(missing: {', '.join(missing)})")
    return lines


def _cell(mean: float, std: float, decimals: int, n_configs: int) -> str:
    """mean~$\\pm$~std; the spread is a dash for a single configuration (its std of 0 would read
    as agreement between configurations), the whole cell a dash without a value."""
    if not math.isfinite(mean):
        return "--"
    spread = f"{std:.{decimals}f}" if n_configs > 1 else "--"
    return f"{mean:.{decimals}f}~$\\pm$~{spread}"


def _printed(stats: pd.DataFrame, metric: str, decimals: int) -> list[str]:
    """A statistics column as the console shows it: the table's cells with a plain ±."""
    return [_cell(m, s, decimals, n).replace("~$\\pm$~", " ± ")
            for m, s, n in zip(stats[f"{metric}_mean"], stats[f"{metric}_std"], stats["n_configs"])]


def latex_table(grid: Grid, stats: pd.DataFrame) -> str:
    """The paper's table*: booktabs, one row per model in grid order."""
    labels = {m.key: m.table_label for m in grid.models}
    rows = [[labels[row["model"]], *(_cell(row[f"{m}_mean"], row[f"{m}_std"], d, row["n_configs"])
                                     for m, _, d in TABLE_COLUMNS)]
            for _, row in stats.iterrows()]
    return booktabs_table(r"Power-state classifier evaluation per model: mean~$\pm$~population standard "
                          r"deviation over hardware and tensor-parallel configurations (--: one configuration).",
                          "tab:train_eval_model", [r"\textbf{Model}", *(h for _, h, _ in TABLE_COLUMNS)], rows)


def collect_generation(results: Results) -> pd.DataFrame:
    """One row per (job, method) of the folder's jobs' generation CSVs (model/results.py decides
    which jobs); empty if there are none."""
    frames = []
    for cell, path in results.job_files(GENERATION_SUFFIX):
        refuse_special_file(path, "generation CSV")
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
            raise InputError(f"{path}: not a readable generation CSV ({str(err).splitlines()[0]})") from None
        expected = ["method", *(m for m, _, _ in GENERATION_TABLE_COLUMNS)]
        if list(frame.columns) != expected or frame.empty:
            raise InputError(f"{path}: expected the header {','.join(expected)} and one row per method")
        for name in frame["method"]:
            try:
                methods.method(str(name))
            except ValueError as err:     # a method without a label would drop out of the table
                raise InputError(f"{path}: {err}") from None
        frames.append(frame.assign(model=cell.model, job=cell.job_name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def generation_statistics(grid: Grid, results: pd.DataFrame) -> pd.DataFrame:
    """Per model and method: mean and population std over every configuration (a NaN in one
    configuration makes the cell NaN rather than dropping the configuration)."""
    rows = []
    for spec in grid.models:
        subset = results[results["model"] == spec.key]
        for method in [m.name for m in methods.registered() if m.name in set(subset["method"])]:
            values = subset[subset["method"] == method]
            row: dict = {"model": spec.key, "method": method}
            for metric, _, _ in GENERATION_TABLE_COLUMNS:
                column = values[metric].to_numpy(dtype=float)
                row[f"{metric}_mean"] = float(column.mean())
                row[f"{metric}_std"] = float(column.std(ddof=0))
            row["n_configs"] = len(values)
            rows.append(row)
    return pd.DataFrame(rows)


def generation_table(grid: Grid, stats: pd.DataFrame) -> str:
    """Generated traces against held-out measured ones, per model: ours and the baselines."""
    labels = {m.key: m.table_label for m in grid.models}
    rows: list = []
    # each model a line of its own above its methods, not a column beside them: the table fits a
    # two-column page
    width = 1 + len(GENERATION_TABLE_COLUMNS)
    for i, spec in enumerate(m for m in grid.models if m.key in set(stats["model"])):
        if i:
            rows.append(r"\midrule")
        rows.append(r"\multicolumn{" + str(width) + "}{l}{" + labels[spec.key] + r"} \\")
        for _, row in stats[stats["model"] == spec.key].iterrows():
            rows.append([r"\quad " + methods.label(row["method"]),
                         *(_cell(row[f"{m}_mean"], row[f"{m}_std"], d, row["n_configs"])
                           for m, _, d in GENERATION_TABLE_COLUMNS)])
    return booktabs_table(r"Generated power traces against held-out measured traces, per model: "
                          r"median over seeds and validation traces, then mean~$\pm$~population standard "
                          r"deviation over hardware and tensor-parallel configurations (--: one configuration).",
                          "tab:generation_fidelity",
                          [r"\textbf{Model / method}", *(h for _, h, _ in GENERATION_TABLE_COLUMNS)], rows)


def aggregate_generation(grid: Grid, results: Results, out_dir: Path | str, echo=print) -> pd.DataFrame:
    """generation_statistics.csv and generation_fidelity.tex in out_dir, from the folder's
    finished jobs (model/results.py: each has its generation CSV); InputError without any."""
    rows = collect_generation(results)
    if rows.empty:
        raise InputError(f"{results.metrics_dir}: no finished job of the grid, so no generation table")
    stats = generation_statistics(grid, rows)
    csv_path = Path(out_dir) / config.GENERATION_STATISTICS_FILE
    table_path = Path(out_dir) / config.GENERATION_TABLE_FILE
    write_text(csv_path, stats.to_csv(index=False, float_format="%.10g"))
    write_text(table_path, generation_table(grid, stats))
    shown = stats[["model", "method"]].copy()
    for metric, _, decimals in GENERATION_TABLE_COLUMNS:
        shown[metric] = _printed(stats, metric, decimals)
    echo(shown.to_string(index=False))
    echo(f"generation statistics: {csv_path}")
    echo(f"generation table:      {table_path}")
    return stats


def table_stamp(settings: pd.DataFrame) -> str:
    """A LaTeX comment line saying which code made the table, when, and from what data."""
    git = git_state()
    commits = sorted({c for c in settings.get("git_commit", pd.Series(dtype=str)).dropna()})
    code = ("jobs at commit " + ", ".join(c[:12] for c in commits)) if commits else "jobs of unknown commit"
    here = f"table by commit {git['commit'][:12]}{' (uncommitted changes)' if git['dirty'] else ''}" \
        if git["commit"] else "table outside a git checkout"
    data = sorted({d for d in settings.get("data", pd.Series(dtype=str)).dropna()})
    line = f"% {code}; {here}; {now()[:10]}; data: {', '.join(data) or 'unknown'}"
    # one comment line whatever a provenance field holds: a line break would end the comment
    return re.sub(r"[\x00-\x1f\x7f\x85\u2028\u2029]", " ", line) + "\n"


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula (starting with =, +, -, @, tab or
    carriage return, and not a number) get a leading apostrophe, as spreadsheets themselves
    mark literal text."""
    def safe(value):
        if not isinstance(value, str) or not value or value[0] not in "=+-@\t\r":
            return value
        try:
            float(value)
            return value
        except ValueError:
            return "'" + value
    return frame.apply(lambda column: column if pd.api.types.is_numeric_dtype(column) else column.map(safe))


def aggregate(grid: Grid, metrics_dir: Path | str, table_path: Path | str, csv_path: Path | str,
              print_table: bool = False, allow_mixed_settings: bool = False) -> pd.DataFrame:
    """Read the metrics, write the statistics CSV, the table and all_jobs.csv, print a summary.

    Jobs trained with different settings (other than their own model, hardware, TP and data)
    are not pooled: InputError naming them, unless allow_mixed_settings.
    """
    out_dir = Path(table_path).parent
    refuse_clashes({"--out": table_path, "--csv_output": csv_path, config.ALL_JOBS_FILE: out_dir / config.ALL_JOBS_FILE,
                    config.GENERATION_STATISTICS_FILE: out_dir / config.GENERATION_STATISTICS_FILE,
                    config.GENERATION_TABLE_FILE: out_dir / config.GENERATION_TABLE_FILE},
                   {f"--metrics_dir's {p.name}": p for p in sorted(Path(metrics_dir).glob("*"))})
    found = collect(grid, metrics_dir)
    results, notes = found.metrics, found.notes
    settings = job_settings_table(Path(metrics_dir), list(results["job"]))
    mixed = mixed_settings(settings) if not settings.empty else []
    if mixed and not allow_mixed_settings:
        raise InputError(f"{metrics_dir}: the jobs were trained with different settings, so their "
                         f"mean would mix them ({' | '.join(mixed)}); rerun them alike, aggregate a "
                         "folder per setting, or pass --allow_mixed_settings")
    notes += [f"pooled despite: {line}" for line in mixed]
    stats, nan_notes = model_statistics(grid, results)
    table = table_stamp(settings) + latex_table(grid, stats)
    csv_text = stats.to_csv(index=False, float_format="%.10g")
    # a setting the metrics file also records (num_epochs) is one column, not _x and _y
    all_jobs = results.merge(settings.drop(columns=[c for c in settings.columns if c in results.columns
                                                    and c != "job"]), on="job", how="left") \
        if not settings.empty else results
    write_text(csv_path, csv_text)
    write_text(table_path, table)
    all_jobs_path = Path(table_path).parent / config.ALL_JOBS_FILE
    write_text(all_jobs_path, spreadsheet_safe(all_jobs).to_csv(index=False, float_format="%.10g"))

    shown = stats.copy()
    for metric, _, decimals in TABLE_COLUMNS:
        shown[metric] = _printed(stats, metric, decimals)
    shown["energy_error_pct"] = _printed(stats, "energy_error_pct", 1)
    print(shown[["model", *config.TABLE_METRICS, "energy_error_pct", "n_configs"]].to_string(index=False))
    for line in missing_configurations(grid, results) + nan_notes + notes:
        print(f"note: {line}")
    if print_table:
        print()
        print(table, end="")
    print(f"statistics: {csv_path}")
    print(f"table:      {table_path}")
    print(f"every job:  {all_jobs_path}")
    print()
    aggregate_generation(grid, found, Path(table_path).parent)
    return stats
