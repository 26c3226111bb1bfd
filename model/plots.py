"""Figures to look at before trusting the table: loss curves, real vs synthetic traces, their
autocorrelation functions, and the reliability diagrams behind the ECE.

    python -m model.plots --results_dir demo/training_results
    python3 aggregate_metrics.py --plots          # the same, after the table

Reads DIR/metrics/*_losses.csv and DIR/synthetic/*.npz; writes PNG and PDF under DIR/plots/:
loss_curves, reliability, and per job {job}_trace and {job}_acf. Sized for a two-column paper
(3.5 in single column, 7 in across), 8 pt text, the Okabe-Ito colour-blind-safe palette.
Exit status: 0 done, 2 nothing to plot or a damaged results file (named on stderr).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from model import config
from model.classifiers import metrics
from model.errors import EXIT_OK, ArgumentParser, InputError, run_cli
from model.grid import MODELS, MODELS_BY_KEY, add_grid_flag, cells_by_job_name, grid_from_argv
from model.outputs import atomic_path
from model.validation_series import read_validation_series

COLUMN_WIDTH_IN = 3.5
PAGE_WIDTH_IN = 7.0
FORMATS = ("png", "pdf")
PNG_DPI = 200
# Okabe & Ito (2008), without the yellow, which is too light on white
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000")
REAL_COLOUR, SYNTHETIC_COLOUR = "#000000", "#E69F00"
TRUE_COLOUR, PREDICTED_COLOUR = "#0072B2", "#D55E00"
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.0,
         "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42}
# legends sit outside the data: beside the panel, or in the strip above it
LEGEND_BESIDE = {"frameon": False, "loc": "upper left", "bbox_to_anchor": (1.0, 1.0)}
LEGEND_ABOVE = {"frameon": False, "loc": "lower right", "bbox_to_anchor": (1.0, 1.0), "ncols": 2,
                "borderaxespad": 0.1}
LOSSES_SUFFIX = "_losses.csv"


# ---------------------------------------------------------------- reading results

def read_losses(metrics_dir: Path | str) -> pd.DataFrame:
    """Every grid job's loss CSV as rows of job, model, hardware, tp, epoch, train_loss."""
    known = cells_by_job_name()
    frames = []
    for path in sorted(Path(metrics_dir).glob(f"*{LOSSES_SUFFIX}")):
        cfg = known.get(path.name[: -len(LOSSES_SUFFIX)])
        if cfg is None:
            continue
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            raise InputError(f"{path}: not a readable loss CSV") from None
        if (list(frame.columns) != ["epoch", "train_loss"] or frame.empty
                or frame["train_loss"].dtype.kind not in "fi"):
            raise InputError(f"{path}: expected a header 'epoch,train_loss' and a number per epoch")
        frames.append(frame.assign(job=cfg.job_name, model=cfg.model, hardware=cfg.hardware, tp=cfg.tp))
    columns = ["job", "model", "hardware", "tp", "epoch", "train_loss"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


# ---------------------------------------------------------------- figures

def _label(hardware: str, tp: int) -> str:
    return f"{hardware.upper()} TP{tp}"


def _panel_grid(n: int, height_per_row: float) -> tuple[Figure, list]:
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    width = COLUMN_WIDTH_IN if n == 1 else PAGE_WIDTH_IN
    fig = Figure(figsize=(width, height_per_row * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def loss_curves_figure(losses: pd.DataFrame) -> Figure:
    """Train loss per epoch: one panel per model, one line per hardware/TP."""
    models = [m for m in MODELS if m.key in set(losses["model"])]
    fig, axes = _panel_grid(len(models), 1.9)
    for ax, spec in zip(axes, models):
        subset = losses[losses["model"] == spec.key]
        for colour, ((hardware, tp), run) in zip(PALETTE, subset.groupby(["hardware", "tp"], sort=True)):
            ax.plot(run["epoch"], run["train_loss"], color=colour, label=_label(hardware, tp))
        ax.set_title(spec.display_name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("train loss (nats)")
        ax.legend(**LEGEND_BESIDE)
    return fig


def trace_figure(trace: dict[str, np.ndarray], title: str) -> Figure:
    """Real and synthetic watts over time, true and predicted states underneath."""
    fig = Figure(figsize=(PAGE_WIDTH_IN, 3.0), layout="constrained")
    watts_ax, states_ax = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    time = trace["time_s"]
    watts_ax.plot(time, trace["real_watts"], color=REAL_COLOUR, label="real", linewidth=0.8)
    watts_ax.plot(time, trace["synthetic_watts"], color=SYNTHETIC_COLOUR, label="synthetic",
                  linewidth=0.8, alpha=0.85)
    watts_ax.set_ylabel("power (W)")
    watts_ax.set_title(title, loc="left")
    watts_ax.legend(**LEGEND_ABOVE)
    states_ax.step(time, trace["true_states"], where="post", color=TRUE_COLOUR, label="true state")
    states_ax.step(time, trace["predicted_states"], where="post", color=PREDICTED_COLOUR,
                   label="predicted state", linestyle="--")
    num_states = trace["probabilities"].shape[1]
    states_ax.set_yticks(range(num_states))
    states_ax.set_ylim(-0.5, num_states - 0.5)
    states_ax.set_ylabel("state (0 = lowest W)")
    states_ax.set_xlabel("time since trace start (s)")
    states_ax.legend(**LEGEND_ABOVE)
    return fig


def acf_figure(trace: dict[str, np.ndarray], title: str, nlags: int = config.ACF_NLAGS) -> Figure:
    """The real and synthetic autocorrelation functions that autocorr_r2 compares, for one trace."""
    acf_real = metrics.acf_lags(trace["real_watts"], nlags)
    acf_synthetic = metrics.acf_lags(trace["synthetic_watts"], nlags)
    r2 = metrics.autocorr_r2([trace["real_watts"]], [trace["synthetic_watts"]], nlags)
    lags = np.arange(1, nlags + 1)
    fig = Figure(figsize=(COLUMN_WIDTH_IN, 2.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(lags, acf_real, color=REAL_COLOUR, marker="o", markersize=2, label="real")
    ax.plot(lags, acf_synthetic, color=SYNTHETIC_COLOUR, marker="s", markersize=2, label="synthetic")
    ax.axhline(0.0, color="#999999", linewidth=0.5)
    ax.set_xlabel(f"lag (bins of {config.SAMPLE_PERIOD_S} s)")
    ax.set_ylabel("autocorrelation")
    ax.set_title(f"{title}\n$R^2$ = {r2:.2f} for this trace", loc="left")
    ax.legend(**LEGEND_BESIDE)
    return fig


def reliability_figure(by_model: dict[str, tuple[np.ndarray, np.ndarray, int]],
                       n_bins: int = config.ECE_BINS) -> Figure:
    """Accuracy against confidence per model, validation bins of all its jobs pooled.

    by_model: model key -> (probabilities (N, K), true states (N,), number of jobs pooled).
    """
    models = [m for m in MODELS if m.key in by_model]
    fig, axes = _panel_grid(len(models), 2.3)
    centres = (np.arange(n_bins) + 0.5) / n_bins
    for ax, spec in zip(axes, models):
        probabilities, labels, n_jobs = by_model[spec.key]
        counts, accuracy, _ = metrics.reliability_bins(probabilities, labels, n_bins)
        ece = metrics.expected_calibration_error(probabilities, labels, n_bins)
        filled = counts > 0
        ax.bar(centres[filled], accuracy[filled], width=1.0 / n_bins, color=PALETTE[0],
               edgecolor="white", linewidth=0.5, label="accuracy")
        ax.plot([0, 1], [0, 1], color=PALETTE[1], linestyle="--", label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-state probability)")
        ax.set_ylabel("accuracy")
        pooled = f"{n_jobs} jobs pooled" if n_jobs > 1 else "1 job"
        ax.set_title(f"{spec.display_name}: ECE {ece:.3f}, {pooled}", loc="left")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False)
    return fig


# ---------------------------------------------------------------- writing

def generated_day_figure(time_s: np.ndarray, watts: np.ndarray, title: str,
                         baselines: dict[str, float] | None = None) -> Figure:
    """A generated trace over its whole span: 1-minute means over the raw bins, with constant
    baselines (TDP, mean) as dashed lines."""
    fig = Figure(figsize=(PAGE_WIDTH_IN, 2.2), layout="constrained")
    ax = fig.subplots()
    hours = np.asarray(time_s) / 3600.0
    ax.plot(hours, watts, color=SYNTHETIC_COLOUR, linewidth=0.3, alpha=0.35, label="generated, 0.25 s")
    step = max(1, int(round(60.0 / np.median(np.diff(time_s))))) if len(time_s) > 1 else 1
    n = len(watts) // step * step
    if n:
        ax.plot(hours[:n:step], np.asarray(watts)[:n].reshape(-1, step).mean(axis=1), color=REAL_COLOUR,
                linewidth=0.8, label="generated, 1-min mean")
    for colour, (name, value) in zip(PALETTE[2:], (baselines or {}).items()):
        ax.axhline(value, color=colour, linestyle="--", linewidth=0.8, label=name)
    ax.set_xlabel("time (h)")
    ax.set_ylabel("power (W)")
    ax.set_title(title, loc="left")
    ax.legend(**LEGEND_BESIDE)
    return fig


def held_out_figure(time_s: np.ndarray, measured: np.ndarray, generated: dict[str, np.ndarray],
                    title: str) -> Figure:
    """A measured trace the model never saw, and what each method generated for its arrivals."""
    fig = Figure(figsize=(PAGE_WIDTH_IN, 2.4), layout="constrained")
    ax = fig.subplots()
    # the first method is drawn last of the generated ones and the measured trace on top
    styled = list(zip((SYNTHETIC_COLOUR, *PALETTE[2:]), generated.items()))
    for i, (colour, (name, watts)) in reversed(list(enumerate(styled))):
        ax.plot(time_s, watts, color=colour, linewidth=0.8, alpha=0.9 if i == 0 else 0.45, label=name)
    ax.plot(time_s, measured, color=REAL_COLOUR, linewidth=0.9, label="measured")
    ax.set_xlabel("time since trace start (s)")
    ax.set_ylabel("power (W)")
    ax.set_title(title, loc="left")
    ax.legend(**LEGEND_BESIDE)
    return fig


def save_figure(fig: Figure, plots_dir: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = plots_dir / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI)
        paths.append(path)
    return paths


def shown_trace(traces: list[dict]) -> dict:
    """The trace a job's trace and ACF figures show: its first validation trace long enough
    to count in autocorr_r2."""
    long_enough = [t for t in traces if len(t["real_watts"]) >= config.MIN_ACF_BINS]
    return (long_enough or traces)[0]


def pooled_by_model(jobs_by_model: dict[str, list[list[dict]]]) -> dict[str, tuple]:
    """model -> (probabilities, true states, number of jobs) over all its jobs' validation bins."""
    return {model: (np.concatenate([t["probabilities"] for traces in jobs for t in traces]),
                    np.concatenate([t["true_states"] for traces in jobs for t in traces]),
                    len(jobs))
            for model, jobs in jobs_by_model.items()}


def write_plots(results_dir: Path | str, echo=print) -> list[Path]:
    """Every figure the results allow; returns the files written."""
    results_dir = Path(results_dir)
    losses = read_losses(results_dir / config.METRICS_SUBDIR)
    known = cells_by_job_name()
    series_files = sorted(p for p in (results_dir / config.SYNTHETIC_SUBDIR).glob("*.npz")
                          if p.stem in known)
    if losses.empty and not series_files:
        raise InputError(f"{results_dir}: nothing to plot (no {config.METRICS_SUBDIR}/*{LOSSES_SUFFIX} "
                         f"and no {config.SYNTHETIC_SUBDIR}/*.npz of the grid's jobs)")
    series = {path.stem: read_validation_series(path) for path in series_files}   # all read before any is drawn
    plots_dir = results_dir / config.PLOTS_SUBDIR
    written: list[Path] = []
    with matplotlib.rc_context(STYLE):
        if not losses.empty:
            written += save_figure(loss_curves_figure(losses), plots_dir, "loss_curves")
        pooled: dict[str, list] = {}
        for job, traces in series.items():
            if not traces:
                continue
            cfg = known[job]
            shown = shown_trace(traces)
            title = (f"{MODELS_BY_KEY[cfg.model].display_name}, {_label(cfg.hardware, cfg.tp)}, "
                     f"validation trace {shown['trace_index']}")
            written += save_figure(trace_figure(shown, title), plots_dir, f"{job}_trace")
            written += save_figure(acf_figure(shown, title), plots_dir, f"{job}_acf")
            pooled.setdefault(cfg.model, []).append(traces)
        if pooled:
            written += save_figure(reliability_figure(pooled_by_model(pooled)), plots_dir, "reliability")
    echo(f"figures:    {plots_dir}/ ({len(written) // len(FORMATS)} figures, "
         f"{' and '.join(f.upper() for f in FORMATS)})")
    return written


def main() -> int:
    grid_from_argv(sys.argv[1:])
    parser = ArgumentParser(__doc__)
    add_grid_flag(parser)
    parser.add_argument("--results_dir", default=str(config.RESULTS_DIR),
                        help=f"a results folder of run_all_training.py (default {config.RESULTS_DIR})")
    args = parser.parse_args()
    write_plots(args.results_dir)
    return EXIT_OK


if __name__ == "__main__":
    run_cli(main, "model.plots")
