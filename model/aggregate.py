"""Per-model statistics and the paper's LaTeX table from the jobs' metrics files (SPEC section 8).

    stats, notes = aggregate("training_results/metrics", "training_results/table_summary.tex",
                             "training_results/model_statistics.csv")

File names are mapped to configurations through the grid, never guessed. Per model: mean and
population std (ddof=0) over its configurations, NaN values left out (and said so).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from model import config
from model.errors import InputError
from model.grid import MODELS, configs_by_job_name, grid
from model.outputs import write_text

METRICS_SUFFIX = "_metrics.csv"
TABLE_COLUMNS = (  # metric, header, decimals
    ("val_f1", r"Validation F1 $\uparrow$", 2),
    ("autocorr_r2", r"Autocorr $R^2$ $\uparrow$", 2),
    ("transition_mae", r"Transition MAE (W) $\downarrow$", 1),
    ("ece", r"Expected Calibration Error $\downarrow$", 4),
)


def read_metrics_file(path: Path | str) -> dict[str, float]:
    """metric -> value of one metrics CSV; ValueError saying what is wrong when it is damaged."""
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
    return values


def collect(metrics_dir: Path | str) -> tuple[pd.DataFrame, list[str]]:
    """One row per configuration found: model, hardware, tp, job, then the metrics."""
    metrics_dir = Path(metrics_dir)
    if not metrics_dir.is_dir():
        raise InputError(f"{metrics_dir}: metrics folder not found (run run_all_training.py first)")
    known = configs_by_job_name()
    rows, notes = [], []
    for path in sorted(metrics_dir.glob(f"*{METRICS_SUFFIX}")):
        job = path.name[: -len(METRICS_SUFFIX)]
        cfg = known.get(job)
        if cfg is None:
            notes.append(f"ignored {path.name}: {job!r} is not a configuration of the grid")
            continue
        try:
            values = read_metrics_file(path)
        except (ValueError, OSError) as err:
            raise InputError(f"{path}: {err}") from None
        rows.append({"model": cfg.model, "hardware": cfg.hardware, "tp": cfg.tp, "job": job, **values})
    if not rows:
        raise InputError(f"{metrics_dir}: no metrics files (*{METRICS_SUFFIX}) of the grid's jobs")
    return pd.DataFrame(rows), notes


def model_statistics(results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Mean and population std per model over its configurations, in the grid's model order."""
    rows, notes = [], []
    for spec in MODELS:
        subset = results[results["model"] == spec.key]
        if subset.empty:
            continue
        row: dict = {"model": spec.key}
        for metric in config.TABLE_METRICS:
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


def missing_configurations(results: pd.DataFrame) -> list[str]:
    lines = []
    for spec in MODELS:
        expected = [c.job_name for c in grid([spec.key])]
        found = set(results.loc[results["model"] == spec.key, "job"])
        if len(found) < len(expected):
            missing = [job for job in expected if job not in found]
            lines.append(f"{spec.key}: {len(found)} of {len(expected)} configurations "
                         f"(missing: {', '.join(missing)})")
    return lines


def _cell(mean: float, std: float, decimals: int) -> str:
    if not math.isfinite(mean):
        return "--"
    return f"{mean:.{decimals}f}~$\\pm$~{std:.{decimals}f}"


def latex_table(stats: pd.DataFrame) -> str:
    """The paper's table*: booktabs, one row per model in grid order."""
    labels = {m.key: m.table_label for m in MODELS}
    lines = [
        r"\begin{table*}[t]",
        r"\centering",
        r"\caption{Power-state classifier evaluation per model: mean~$\pm$~population standard "
        r"deviation over hardware and tensor-parallel configurations.}",
        r"\label{tab:train_eval_model}",
        r"\begin{tabular}{l" + "c" * len(TABLE_COLUMNS) + "}",
        r"\toprule",
        "Model & " + " & ".join(header for _, header, _ in TABLE_COLUMNS) + r" \\",
        r"\midrule",
    ]
    for _, row in stats.iterrows():
        cells = [_cell(row[f"{m}_mean"], row[f"{m}_std"], d) for m, _, d in TABLE_COLUMNS]
        lines.append(f"{labels[row['model']]} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def aggregate(metrics_dir: Path | str, table_path: Path | str, csv_path: Path | str,
              print_table: bool = False) -> pd.DataFrame:
    """Read the metrics, write the statistics CSV and the table, print a summary."""
    results, notes = collect(metrics_dir)
    stats, nan_notes = model_statistics(results)
    table = latex_table(stats)
    csv_text = stats.to_csv(index=False, float_format="%.10g")
    write_text(csv_path, csv_text)
    write_text(table_path, table)

    shown = stats.copy()
    for metric, _, decimals in TABLE_COLUMNS:
        shown[metric] = [_cell(m, s, decimals).replace("~$\\pm$~", " ± ")
                         for m, s in zip(stats[f"{metric}_mean"], stats[f"{metric}_std"])]
    print(shown[["model", *config.TABLE_METRICS, "n_configs"]].to_string(index=False))
    for line in missing_configurations(results) + nan_notes + notes:
        print(f"note: {line}")
    if print_table:
        print()
        print(table, end="")
    print(f"statistics: {csv_path}")
    print(f"table:      {table_path}")
    return stats
