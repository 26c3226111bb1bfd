"""Figures to look at before trusting the table: loss curves, real vs synthetic traces, their
autocorrelation functions, the reliability diagrams behind the ECE, each job's watts against its
state boundaries and its confusion matrix, and an overview of every configuration's metrics.

    python -m model.plots --results_dir demo/training_results
    python3 aggregate_metrics.py --plots          # the same, after the table

Reads DIR/metrics/*_losses.csv, *_val_losses.csv, *_metrics.csv and DIR/synthetic/*.npz; writes
PNG and PDF under DIR/plots/: loss_curves, reliability, overview, and per job {job}_trace,
{job}_acf, {job}_watts and {job}_confusion. Sized for a two-column paper
(3.5 in single column, 7 in across), 8 pt text, the Okabe-Ito colour-blind-safe palette.
Exit status: 0 done, 2 nothing to plot or a damaged results file (named on stderr).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator

from model import config
from model.classifiers import metrics
from model.errors import EXIT_OK, ArgumentParser, InputError, run_cli
from model.grid import Grid, add_grid_flag, load_grid
from model.outputs import atomic_path
from model.results import METRICS_SUFFIX, Results, read_results
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
VAL_LOSSES_SUFFIX = "_val_losses.csv"
# the overview's panels: metric, axis label (short: the panels are about an inch tall)
OVERVIEW_METRICS = (("val_f1", "F1 \u2191"), ("autocorr_r2", "ACF $R^2$ \u2191"),
                    ("transition_mae", "trans. MAE (W) \u2193"), ("ece", "ECE \u2193"),
                    ("energy_error_pct", "energy err. (%) \u2193"))


# ---------------------------------------------------------------- reading results

def _read_loss_files(results: Results, suffix: str, column: str) -> pd.DataFrame:
    """Each of the folder's jobs' {job}{suffix} CSV (header 'epoch,{column}') as rows of job,
    model, hardware, tp, epoch, column."""
    frames = []
    for cfg, path in results.job_files(suffix):
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            raise InputError(f"{path}: not a readable loss CSV") from None
        if (list(frame.columns) != ["epoch", column] or frame.empty
                or frame[column].dtype.kind not in "fi"):
            raise InputError(f"{path}: expected a header 'epoch,{column}' and a number per epoch")
        frames.append(frame.assign(job=cfg.job_name, model=cfg.model, hardware=cfg.hardware, tp=cfg.tp))
    columns = ["job", "model", "hardware", "tp", "epoch", column]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def read_losses(grid: Grid, metrics_dir: Path | str) -> pd.DataFrame:
    """The folder's jobs' (model/results.py) loss CSVs as rows of job, model, hardware, tp, epoch,
    train_loss."""
    return _read_loss_files(read_results(grid, metrics_dir), LOSSES_SUFFIX, "train_loss")


def read_val_losses(grid: Grid, metrics_dir: Path | str) -> pd.DataFrame:
    """The folder's jobs' validation-loss CSVs as rows of job, model, hardware, tp, epoch, val_loss
    (jobs run before it was written have none)."""
    return _read_loss_files(read_results(grid, metrics_dir), VAL_LOSSES_SUFFIX, "val_loss")


def read_job_metrics(grid: Grid, metrics_dir: Path | str) -> pd.DataFrame:
    """One row per job of the folder (model/results.py), in grid order: job, model, hardware, tp
    and the overview's metrics (NaN for one a file lacks)."""
    return _overview_rows(read_results(grid, metrics_dir))


def _overview_rows(results: Results) -> pd.DataFrame:
    columns = ["job", "model", "hardware", "tp", *(m for m, _ in OVERVIEW_METRICS)]
    return results.metrics.reindex(columns=columns) if not results.metrics.empty else pd.DataFrame(columns=columns)


def state_boundaries(centroids: np.ndarray) -> np.ndarray:
    """The watts where nearest-centroid labelling changes state: midpoints of sorted centroids."""
    ordered = np.sort(np.asarray(centroids, dtype=float))
    return (ordered[:-1] + ordered[1:]) / 2.0


def confusion_counts(traces: list[dict], num_states: int) -> np.ndarray:
    """(K, K) bin counts over a job's validation traces: row = true state, column = predicted."""
    from sklearn.metrics import confusion_matrix     # scikit-learn loads when a figure needs it
    return confusion_matrix(np.concatenate([t["true_states"] for t in traces]),
                            np.concatenate([t["predicted_states"] for t in traces]),
                            labels=np.arange(num_states))


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row as shares of its total; NaN for a state no validation bin has."""
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)


def state_tick_labels(state_means: np.ndarray) -> list[str]:
    return [f"{s}: {watts:.0f} W" for s, watts in enumerate(state_means)]


# ---------------------------------------------------------------- figures

def _label(hardware: str, tp: int) -> str:
    return f"{hardware.upper()} TP{tp}"


def job_title(grid: Grid, model: str, hardware: str, tp: int) -> str:
    return f"{grid.models_by_key[model].display_name}, {_label(hardware, tp)}"


def trace_title(grid: Grid, model: str, hardware: str, tp: int, traces: list[dict], shown: dict) -> str:
    """Which validation trace a figure shows: its place among the job's validation traces and
    its row in the data file (the trace index), which are different numbers."""
    position = next(i for i, trace in enumerate(traces) if trace is shown) + 1
    return (f"{job_title(grid, model, hardware, tp)}\nvalidation trace {position} of {len(traces)}, "
            f"row {shown['trace_index']} of the data file")


def _panel_grid(n: int, height_per_row: float, sharey: bool = False) -> tuple[Figure, list]:
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    width = COLUMN_WIDTH_IN if n == 1 else PAGE_WIDTH_IN
    fig = Figure(figsize=(width, height_per_row * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def loss_curves_figure(grid: Grid, losses: pd.DataFrame, val_losses: pd.DataFrame | None = None) -> Figure:
    """Train loss per epoch (solid) and validation loss where it was computed (dashed, markers,
    the same colour): one panel per model on one shared y-axis, one colour per hardware/TP."""
    models = [m for m in grid.models if m.key in set(losses["model"])]
    fig, axes = _panel_grid(len(models), 1.9, sharey=True)
    has_val = val_losses is not None and not val_losses.empty
    for ax, spec in zip(axes, models):
        subset = losses[losses["model"] == spec.key]
        for colour, ((hardware, tp), run) in zip(PALETTE, subset.groupby(["hardware", "tp"], sort=True)):
            ax.plot(run["epoch"], run["train_loss"], color=colour, label=_label(hardware, tp))
            if has_val:
                val = val_losses[val_losses["job"] == run["job"].iloc[0]]
                # a leading underscore keeps these out of the legend: the colour says which run
                ax.plot(val["epoch"], val["val_loss"], color=colour, linestyle="--", marker="o",
                        markersize=2.5, label=f"_{_label(hardware, tp)} validation")
        ax.set_title(spec.display_name)
        ax.set_xlabel("epoch")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("cross-entropy (nats)")
        handles, labels = ax.get_legend_handles_labels()
        if has_val:
            handles += [Line2D([], [], color="#777777"),
                        Line2D([], [], color="#777777", linestyle="--", marker="o", markersize=2.5)]
            labels += ["train", "validation"]
        ax.legend(handles, labels, **LEGEND_BESIDE)
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
    # drawn independently per bin, so dots rather than a line, under the other two
    states_ax.plot(time, trace["sampled_states"], linestyle="none", marker=".", markersize=1.5,
                   color=SYNTHETIC_COLOUR, alpha=0.6, zorder=1, label="sampled state (synthetic line)")
    num_states = trace["probabilities"].shape[1]
    states_ax.set_yticks(range(num_states))
    states_ax.set_ylim(-0.5, num_states - 0.5)
    states_ax.set_ylabel("state (0 = lowest W)")
    states_ax.set_xlabel("time since trace start (s)")
    if "state_means" in trace:
        # the watts the synthetic line draws around in each state (training traces' means)
        watts_axis = states_ax.secondary_yaxis("right")
        watts_axis.set_yticks(range(num_states), labels=state_tick_labels(trace["state_means"]))
    handles = states_ax.get_legend_handles_labels()
    states_ax.legend(*handles, **(LEGEND_ABOVE | {"ncols": len(handles[0])}))
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


def reliability_figure(grid: Grid, by_model: dict[str, tuple[np.ndarray, np.ndarray, int]],
                       n_bins: int = config.ECE_BINS) -> Figure:
    """Accuracy against confidence per model, validation bins of all its jobs pooled, and under
    it the number of bins in each confidence bin.

    by_model: model key -> (probabilities (N, K), true states (N,), number of jobs pooled).
    """
    models = [m for m in grid.models if m.key in by_model]
    cols = 1 if len(models) == 1 else 2
    rows = math.ceil(len(models) / cols)
    fig = Figure(figsize=(COLUMN_WIDTH_IN if cols == 1 else PAGE_WIDTH_IN, 2.6 * rows + 0.4),
                 layout="constrained")
    # each model: accuracy above, the number of validation bins in each confidence bin below
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[3, 1] * rows)
    axes, count_axes = [], {}
    for i, spec in enumerate(models):
        row, col = divmod(i, cols)
        axes.append(fig.add_subplot(grid[2 * row, col]))
        count_axes[spec.key] = fig.add_subplot(grid[2 * row + 1, col], sharex=axes[-1])
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
        ax.tick_params(labelbottom=False)
        ax.set_ylabel("accuracy")
        # ECE over all the model's bins at once: not the table's mean of per-job ECEs
        pooled = f"pooled ECE {ece:.3f} over {n_jobs} jobs" if n_jobs > 1 else f"ECE {ece:.3f}, 1 job"
        ax.set_title(f"{spec.display_name}\n{pooled}", loc="left")
        count_ax = count_axes[spec.key]
        # log scale: most bins are confident, and the sparse bins are the ones to doubt
        count_ax.bar(centres[filled], counts[filled], width=1.0 / n_bins, color="#999999",
                     edgecolor="white", linewidth=0.5)
        count_ax.set_yscale("log")
        count_ax.yaxis.set_major_locator(LogLocator(numticks=3))
        count_ax.set_ylim(0.8, max(10.0, counts.max() * 2.0))
        count_ax.set_ylabel("bins")
        count_ax.set_xlabel("confidence (top-state probability)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False)
    return fig


def watts_figure(traces: list[dict], title: str) -> Figure:
    """Histogram of the job's validation watts with the state boundaries the k-means centroids
    (fitted on the training watts) put on them, each state's number at its centroid."""
    centroids = np.sort(traces[0]["state_centroids"])
    watts = np.concatenate([t["real_watts"] for t in traces])
    fig = Figure(figsize=(COLUMN_WIDTH_IN, 2.4), layout="constrained")
    ax = fig.subplots()
    heights, _, _ = ax.hist(watts, bins=60, color=PALETTE[0], alpha=0.8)
    for boundary in state_boundaries(centroids):
        ax.axvline(boundary, color=PALETTE[1], linestyle="--", linewidth=0.8)
    # headroom above the tallest bar for the state numbers
    ax.set_ylim(0, heights.max() * 1.18)
    for state, centroid in enumerate(centroids):
        ax.text(centroid, 0.98, str(state), transform=ax.get_xaxis_transform(), ha="center",
                va="top", fontsize=7, color=PALETTE[1])
    ax.set_xlabel(f"power of the {len(traces)} validation traces (W)")
    ax.set_ylabel("bins")
    ax.set_title(f"{title}\nstates at their centroids, boundaries dashed", loc="left")
    return fig


def confusion_figure(traces: list[dict], title: str) -> Figure:
    """True against predicted state over the job's validation bins: colour is the share of the
    true state's bins (rows sum to 1), the number in each cell the bins."""
    num_states = traces[0]["probabilities"].shape[1]
    counts = confusion_counts(traces, num_states)
    shares = row_normalised(counts)
    fig = Figure(figsize=(COLUMN_WIDTH_IN, 3.0), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (true, predicted), count in np.ndenumerate(counts):
        dark = not np.isnan(shares[true, predicted]) and shares[true, predicted] > 0.6
        ax.text(predicted, true, str(count), ha="center", va="center", fontsize=6,
                color="white" if dark else "black")
    ax.set_xticks(range(num_states))
    ax.set_yticks(range(num_states))
    ax.set_xlabel("predicted state")
    ax.set_ylabel("true state (0 = lowest W)")
    ax.spines[["top", "right"]].set_visible(True)
    ax.set_title(f"{title}\n{counts.sum()} validation bins", loc="left")
    fig.colorbar(image, ax=ax, label="share of the true state's bins", shrink=0.8)
    return fig


def overview_figure(grid: Grid, job_metrics: pd.DataFrame) -> Figure:
    """One panel per metric, one point per configuration found, grouped by model (colour)."""
    models = [m for m in grid.models if m.key in set(job_metrics["model"])]
    fig = Figure(figsize=(PAGE_WIDTH_IN, 1.0 * len(OVERVIEW_METRICS) + 0.9), layout="constrained")
    axes = fig.subplots(len(OVERVIEW_METRICS), 1, sharex=True, squeeze=False)[:, 0]
    positions, tick_labels, x = {}, [], 0.0
    for spec in models:   # a gap between models keeps each model's group together
        for row in job_metrics[job_metrics["model"] == spec.key].itertuples():
            positions[row.job] = x
            tick_labels.append(f"{row.hardware.upper()}\nTP{row.tp}")
            x += 1.0
        x += 0.6
    ticks = list(positions.values())
    for ax, (metric, label) in zip(axes, OVERVIEW_METRICS):
        for colour, spec in zip(PALETTE, models):
            subset = job_metrics[job_metrics["model"] == spec.key]
            ax.plot([positions[j] for j in subset["job"]], subset[metric], linestyle="none", marker="o",
                    markersize=3.5, color=colour, label=spec.display_name)
        ax.set_ylabel(label)
        ax.grid(axis="y", color="#dddddd", linewidth=0.5)
    axes[-1].set_xticks(ticks, labels=tick_labels)
    axes[-1].set_xlim(min(ticks) - 0.6, max(ticks) + 0.6)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=len(models),
               frameon=False)
    axes[0].set_title(f"{len(job_metrics)} of the grid's {len(grid.cells())} configurations, "
                      "each scored on its validation traces (\u2191 higher is better, \u2193 lower)",
                      loc="left")
    return fig


# ---------------------------------------------------------------- writing

def generated_day_figure(time_s: np.ndarray, watts: np.ndarray, title: str,
                         baselines: dict[str, float] | None = None) -> Figure:
    """A generated trace over its whole span: 1-minute means over the raw bins, with constant
    baselines (nameplate, mean) as dashed lines."""
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


def write_plots(grid: Grid, results_dir: Path | str, echo=print) -> list[Path]:
    """Every figure the results allow; returns the files written."""
    results_dir = Path(results_dir)
    results = read_results(grid, results_dir / config.METRICS_SUBDIR)     # the jobs the tables show, too
    losses = _read_loss_files(results, LOSSES_SUFFIX, "train_loss")
    val_losses = _read_loss_files(results, VAL_LOSSES_SUFFIX, "val_loss")
    job_metrics = _overview_rows(results)
    known = {c.job_name: c for c in results.cells}
    series_files = [path for job in known if (path := config.synthetic_path(results_dir, job)).is_file()]
    if not results.cells:
        raise InputError(f"{results_dir}: nothing to plot (no {config.METRICS_SUBDIR}/*{METRICS_SUFFIX} "
                         "of a grid job that finished training)")
    series = {path.stem: read_validation_series(path) for path in series_files}   # all read before any is drawn
    plots_dir = results_dir / config.PLOTS_SUBDIR
    written: list[Path] = []
    with matplotlib.rc_context(STYLE):
        if not losses.empty:
            written += save_figure(loss_curves_figure(grid, losses, val_losses), plots_dir, "loss_curves")
        pooled: dict[str, list] = {}
        for job, traces in series.items():
            if not traces:
                continue
            cfg = known[job]
            shown = shown_trace(traces)
            title = trace_title(grid, cfg.model, cfg.hardware, cfg.tp, traces, shown)
            written += save_figure(trace_figure(shown, title), plots_dir, f"{job}_trace")
            written += save_figure(acf_figure(shown, title), plots_dir, f"{job}_acf")
            written += save_figure(watts_figure(traces, job_title(grid, cfg.model, cfg.hardware, cfg.tp)),
                                   plots_dir, f"{job}_watts")
            written += save_figure(confusion_figure(traces, job_title(grid, cfg.model, cfg.hardware, cfg.tp)),
                                   plots_dir, f"{job}_confusion")
            pooled.setdefault(cfg.model, []).append(traces)
        if pooled:
            written += save_figure(reliability_figure(grid, pooled_by_model(pooled)), plots_dir, "reliability")
        if not job_metrics.empty:
            written += save_figure(overview_figure(grid, job_metrics), plots_dir, "overview")
    echo(f"figures:    {plots_dir}/ ({len(written) // len(FORMATS)} figures, "
         f"{' and '.join(f.upper() for f in FORMATS)})")
    return written


def main() -> int:
    parser = ArgumentParser(__doc__)
    add_grid_flag(parser)
    parser.add_argument("--results_dir", default=str(config.RESULTS_DIR),
                        help=f"a results folder of run_all_training.py (default {config.RESULTS_DIR})")
    args = parser.parse_args()
    write_plots(load_grid(args.grid), args.results_dir)
    return EXIT_OK


if __name__ == "__main__":
    run_cli(main, "model.plots")
