"""Figures from saved validation series and loss curves."""
from __future__ import annotations

import itertools

import matplotlib
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from conftest import files_under, load_arrays, run_cli, run_main
from model import config
from model.results import read_metrics_file
from model.checkpoint import load_checkpoint
from model.classifiers import metrics
from model.classifiers.synthetic import synthesize
from model.data import load_power_file
from model.errors import InputError
from model.job import run_job
from model.settings import JobSettings
from model.plots import (OVERVIEW_METRICS, STYLE, acf_figure, confusion_counts, confusion_figure,
                         loss_curves_figure, overview_figure, pooled_by_model, read_job_metrics,
                         read_losses, read_val_losses, reliability_figure, row_normalised,
                         shown_trace, state_boundaries, trace_figure, trace_title, watts_figure)
from model.validation_series import read_validation_series
from model.grid import BUILT_IN

pytestmark = pytest.mark.slow   # every test here starts a process or trains

JOBS = (("llama-3-8b", "a100", 1), ("llama-3-8b", "a100", 2), ("deepseek-r1-distill-70b", "h100", 4))
# the first job trains past two validation epochs (every 10) to a last one that is not a multiple
EPOCHS = (21, 4, 4)
SEED = 0


@pytest.fixture(scope="module")
def results(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("plots_results")
    for (model, hardware, tp), epochs in zip(JOBS, EPOCHS):
        data_file = next(demo_dir.glob(f"*_{model.replace('-distill', '')}_{hardware}.npz"))
        run_job(JobSettings(data_file=str(data_file), model=model, hardware=hardware, tp=tp, lr=3e-3,
                            num_epochs=epochs, seed=SEED, output_dir=str(out), use_wandb=False,
                            progress=False))
    return out, demo_dir


def job_names():
    return [f"{m}_{h}_tp{tp}" for m, h, tp in JOBS]


def test_saved_series_are_the_ones_the_metrics_scored(results):
    out, demo_dir = results
    for (model, hardware, tp), job in zip(JOBS, job_names()):
        arrays = load_arrays(config.synthetic_path(out, job))
        traces = read_validation_series(config.synthetic_path(out, job))
        data = load_power_file(next(demo_dir.glob(f"*_{model.replace('-distill', '')}_{hardware}.npz")))
        by_index = {t.index: t for t in data.traces_for_tp(tp)}
        for trace in traces:
            measured = by_index[trace["trace_index"]]
            np.testing.assert_array_equal(trace["real_watts"], measured.power)
            np.testing.assert_allclose(trace["time_s"], measured.timestamps - measured.timestamps[0])
        np.testing.assert_array_equal(arrays["predicted_states"], arrays["probabilities"].argmax(axis=1))
        scored = read_metrics_file(config.metrics_path(out, job))
        assert metrics.expected_calibration_error(arrays["probabilities"], arrays["true_states"]) == \
            pytest.approx(scored["ece"], abs=1e-12)
        assert metrics.autocorr_r2([t["real_watts"] for t in traces], [t["synthetic_watts"] for t in traces]) \
            == pytest.approx(scored["autocorr_r2"], abs=1e-12)
        f1 = metrics.classification_scores(arrays["true_states"], arrays["predicted_states"], 6)["val_f1"]
        assert f1 == pytest.approx(scored["val_f1"], abs=1e-12)


def test_every_figure_is_written_as_a_sensible_png_and_a_pdf(results, tmp_path):
    out, _ = results
    proc = run_cli("-m", "model.plots", "--results_dir", str(out))
    assert proc.returncode == 0, proc.stderr
    names = {"loss_curves", "reliability", "overview"} | {
        f"{j}_{kind}" for j in job_names() for kind in ("trace", "acf", "watts", "confusion")}
    assert files_under(out / "plots") == {f"{n}.{fmt}" for n in names for fmt in ("png", "pdf")}
    for name in names:
        image = matplotlib.image.imread(out / "plots" / f"{name}.png")
        height, width = image.shape[:2]
        assert width in (700, 1400), (name, width)          # 3.5 or 7 inches at 200 dpi
        assert 300 <= height <= 1200, (name, height)
        assert image[..., :3].std() > 0.05                    # not blank
        pdf = (out / "plots" / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")


def test_plotted_series_are_the_saved_ones(results):
    out, _ = results
    job = job_names()[0]
    saved = load_arrays(config.synthetic_path(out, job))
    shown = shown_trace(read_validation_series(config.synthetic_path(out, job)))
    n = len(shown["real_watts"])
    start = int(np.cumsum(np.r_[0, saved["trace_lengths"]])[list(saved["trace_indices"]).index(shown["trace_index"])])

    watts_ax, states_ax = trace_figure(shown, "t").axes
    np.testing.assert_array_equal(watts_ax.lines[0].get_ydata(), saved["real_watts"][start:start + n])
    np.testing.assert_array_equal(watts_ax.lines[1].get_ydata(), saved["synthetic_watts"][start:start + n])
    np.testing.assert_array_equal(states_ax.lines[0].get_ydata(), saved["true_states"][start:start + n])
    np.testing.assert_array_equal(states_ax.lines[1].get_ydata(), saved["predicted_states"][start:start + n])
    np.testing.assert_array_equal(states_ax.lines[2].get_ydata(), saved["sampled_states"][start:start + n])
    (watts_axis,) = states_ax.child_axes          # the state axis' right-hand side: each state's watts
    assert [t.get_text() for t in watts_axis.get_yticklabels()] == \
        [f"{s}: {w:.0f} W" for s, w in enumerate(saved["state_means"])]

    (acf_ax,) = acf_figure(shown, "t").axes
    real_acf = metrics.acf_lags(saved["real_watts"][start:start + n])
    np.testing.assert_allclose(acf_ax.lines[0].get_ydata(), real_acf)
    np.testing.assert_allclose(acf_ax.lines[1].get_ydata(), metrics.acf_lags(saved["synthetic_watts"][start:start + n]))
    assert np.corrcoef(acf_ax.lines[0].get_ydata(), acf_ax.lines[1].get_ydata())[0, 1] ** 2 == pytest.approx(
        metrics.autocorr_r2([shown["real_watts"]], [shown["synthetic_watts"]]))

    losses = read_losses(BUILT_IN, out / "metrics")
    loss_axes = loss_curves_figure(BUILT_IN, losses, read_val_losses(BUILT_IN, out / "metrics")).axes
    assert len(loss_axes) == 2                      # one panel per model present
    assert loss_axes[0].get_shared_y_axes().joined(loss_axes[0], loss_axes[1])
    plotted = {line.get_label(): line for line in loss_axes[0].lines}
    assert set(plotted) == {"A100 TP1", "A100 TP2", "_A100 TP1 validation", "_A100 TP2 validation"}
    np.testing.assert_array_equal(plotted["A100 TP2"].get_ydata(),
                                  pd.read_csv(config.losses_path(out, job_names()[1]))["train_loss"])
    val = pd.read_csv(config.val_losses_path(out, job_names()[0]))
    np.testing.assert_array_equal(plotted["_A100 TP1 validation"].get_xdata(), val["epoch"])
    np.testing.assert_array_equal(plotted["_A100 TP1 validation"].get_ydata(), val["val_loss"])
    assert plotted["_A100 TP1 validation"].get_color() == plotted["A100 TP1"].get_color()

    jobs = {"llama-3-8b": [read_validation_series(config.synthetic_path(out, j)) for j in job_names()[:2]]}
    rel_ax, count_ax = reliability_figure(BUILT_IN, pooled_by_model(jobs)).axes
    probabilities = np.concatenate([load_arrays(config.synthetic_path(out, j))["probabilities"] for j in job_names()[:2]])
    labels = np.concatenate([load_arrays(config.synthetic_path(out, j))["true_states"] for j in job_names()[:2]])
    counts, accuracy, _ = metrics.reliability_bins(probabilities, labels)
    np.testing.assert_allclose([bar.get_height() for bar in rel_ax.patches[: (counts > 0).sum()]],
                               accuracy[counts > 0])
    assert [bar.get_height() for bar in count_ax.patches] == list(counts[counts > 0])
    assert sum(bar.get_height() for bar in count_ax.patches) == len(labels)
    ece = metrics.expected_calibration_error(probabilities, labels)
    assert f"pooled ECE {ece:.3f} over 2 jobs" in rel_ax.get_title(loc="left")


def _undrawn_tick_labels(fig) -> set[int]:
    """Tick labels matplotlib keeps but does not draw: ticks outside the axis' view limits."""
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            span = high - low
            for tick in axis.get_major_ticks():
                if not low - 1e-9 * span <= tick.get_loc() <= high + 1e-9 * span:
                    hidden |= {id(tick.label1), id(tick.label2)}
    return hidden


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 - 0.5 and b.x0 < a.x1 - 0.5 and a.y0 < b.y1 - 0.5 and b.y0 < a.y1 - 0.5


def test_no_text_overlaps_and_legends_stay_off_the_data(results):
    out, _ = results
    traces = {j: read_validation_series(config.synthetic_path(out, j)) for j in job_names()}
    shown = shown_trace(traces[job_names()[0]])
    title = trace_title(BUILT_IN, *JOBS[0], traces[job_names()[0]], shown)
    with matplotlib.rc_context(STYLE):
        figures = {
            "loss_curves": loss_curves_figure(BUILT_IN, read_losses(BUILT_IN, out / "metrics")),
            "reliability": reliability_figure(BUILT_IN, pooled_by_model(
                {"llama-3-8b": [traces[j] for j in job_names()[:2]], "deepseek-r1-distill-70b": [traces[job_names()[2]]]})),
            "trace": trace_figure(shown_trace(traces[job_names()[0]]), title),
            "acf": acf_figure(shown_trace(traces[job_names()[0]]), title),
            "watts": watts_figure(traces[job_names()[2]], "DeepSeek-Distill (70B), H100 TP4"),
            "confusion": confusion_figure(traces[job_names()[2]], "DeepSeek-Distill (70B), H100 TP4"),
            "overview": overview_figure(BUILT_IN, read_job_metrics(BUILT_IN, out / "metrics")),
        }
    for name, fig in figures.items():
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
                 and id(t) not in _undrawn_tick_labels(fig)]
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
        for (text_a, a), (text_b, b) in itertools.combinations(boxes, 2):
            assert not _overlaps(a, b), f"{name}: {text_a!r} overlaps {text_b!r}"
        figure_box = fig.bbox
        for _, box in boxes:
            assert box.x0 >= -1 and box.x1 <= figure_box.x1 + 1 and box.y0 >= -1 and box.y1 <= figure_box.y1 + 1
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                assert not _overlaps(legend.get_window_extent(renderer), ax.patch.get_window_extent(renderer)), name


def copy_finished_job(results_dir, dest, job):
    """The metrics-folder files of a finished job (model/results.py), copied into dest/metrics."""
    (dest / "metrics").mkdir(parents=True, exist_ok=True)
    for kind in ("provenance", "generation", "metrics"):
        source = config.job_file(results_dir, kind, job)
        (dest / "metrics" / source.name).write_bytes(source.read_bytes())


def test_nothing_to_plot_or_damaged_series_exit_2(results, tmp_path):
    proc = run_main("-m", "model.plots", "--results_dir", str(tmp_path))
    assert proc.returncode == 2 and "nothing to plot" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    out, _ = results
    damaged = tmp_path / "damaged"
    (damaged / "synthetic").mkdir(parents=True)
    job = job_names()[0]
    copy_finished_job(out, damaged, job)   # a finished job (model/results.py) with a damaged series file
    good = config.synthetic_path(out, job).read_bytes()
    (damaged / "synthetic" / f"{job}.npz").write_bytes(good[: len(good) // 2])
    proc = run_main("-m", "model.plots", "--results_dir", str(damaged))
    assert proc.returncode == 2 and f"{job}.npz" in proc.stderr and "Traceback" not in proc.stderr
    assert not (damaged / "plots").exists()

    arrays = load_arrays(config.synthetic_path(out, job))
    del arrays["probabilities"]
    np.savez(damaged / "synthetic" / f"{job}.npz", **arrays)
    proc = run_main("-m", "model.plots", "--results_dir", str(damaged))
    assert proc.returncode == 2 and "'probabilities' is missing" in proc.stderr


def test_validation_loss_is_saved_every_10_epochs_and_after_the_last(results):
    out, _ = results
    for job, epochs in zip(job_names(), EPOCHS):
        path = config.val_losses_path(out, job)
        assert path.read_text().splitlines()[0] == "epoch,val_loss"
        saved = pd.read_csv(path)
        expected = sorted(set(range(config.VAL_EVERY, epochs + 1, config.VAL_EVERY)) | {epochs})
        assert list(saved["epoch"]) == expected                     # 10, 20, 21 and 4
        assert np.all(np.isfinite(saved["val_loss"])) and np.all(saved["val_loss"] > 0)
        # the train losses keep their own two-column file, one row per epoch
        losses = pd.read_csv(config.losses_path(out, job))
        assert list(losses.columns) == ["epoch", "train_loss"] and list(losses["epoch"]) == list(range(1, epochs + 1))
        # after the last epoch the model is the one scored: its loss is the metrics file's
        scored = read_metrics_file(config.metrics_path(out, job))
        assert saved["val_loss"].iloc[-1] == pytest.approx(scored["final_val_loss"], rel=1e-4)
    assert list(read_val_losses(BUILT_IN, out / "metrics")["job"].unique()) == job_names()       # in grid order


def test_sampled_states_are_the_ones_the_synthetic_watts_were_drawn_from(results):
    out, _ = results
    for job in job_names():
        saved = load_arrays(config.synthetic_path(out, job))
        states = saved["sampled_states"]
        assert len(states) == len(saved["synthetic_watts"])
        z = (saved["synthetic_watts"] - saved["state_means"][states]) / saved["state_stds"][states]
        assert np.abs(z).max() < 6.0
        # and exactly: drawing again with the job's seed gives the same states and watts
        bounds = np.cumsum(np.r_[0, saved["trace_lengths"]])
        for i, index in enumerate(saved["trace_indices"]):
            part = slice(bounds[i], bounds[i + 1])
            watts, again = synthesize(saved["probabilities"][part], saved["state_means"], saved["state_stds"],
                                      SEED + int(index), return_states=True)
            np.testing.assert_array_equal(again, states[part])
            np.testing.assert_array_equal(watts, saved["synthetic_watts"][part])
    # the sampled states are a draw, not the classifier's argmax
    assert not np.array_equal(states, saved["predicted_states"])


@pytest.mark.parametrize("change", ["no version", "old version", "no centroids"])
def test_a_series_file_of_another_version_is_refused_naming_it(results, tmp_path, change):
    out, _ = results
    arrays = load_arrays(config.synthetic_path(out, job_names()[0]))
    if change == "no version":
        del arrays["series_version"]
    elif change == "old version":
        arrays["series_version"] = np.array(1)
    else:
        del arrays["state_centroids"]
    path = tmp_path / "series.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match="rerun the job" if "version" in change else "'state_centroids' is missing"):
        read_validation_series(path)


def test_confusion_counts_sum_to_the_validation_bins(results):
    out, _ = results
    for job in job_names():
        traces = read_validation_series(config.synthetic_path(out, job))
        saved = load_arrays(config.synthetic_path(out, job))
        num_states = saved["probabilities"].shape[1]
        counts = confusion_counts(traces, num_states)
        assert counts.shape == (num_states, num_states)
        assert counts.sum() == len(saved["true_states"])
        assert counts[2, 1] == np.sum((saved["true_states"] == 2) & (saved["predicted_states"] == 1))
        np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(saved["true_states"], minlength=num_states))
        shares = row_normalised(counts)
        present = counts.sum(axis=1) > 0
        np.testing.assert_allclose(shares[present].sum(axis=1), 1.0)
        assert np.all(np.isnan(shares[~present]))
        (ax, _colourbar) = confusion_figure(traces, "t").axes
        np.testing.assert_array_equal(ax.images[0].get_array().filled(np.nan), shares)
        assert sum(int(t.get_text()) for t in ax.texts) == len(saved["true_states"])


def test_watts_histogram_boundaries_are_midpoints_of_the_centroids(results):
    out, _ = results
    job = job_names()[2]
    saved = load_arrays(config.synthetic_path(out, job))
    # the saved centroids are the job's k-means centroids, which the checkpoint also holds
    np.testing.assert_array_equal(saved["state_centroids"], load_checkpoint(config.checkpoint_path(out, job)).states.centroids)
    centroids = np.sort(saved["state_centroids"])
    np.testing.assert_allclose(state_boundaries(saved["state_centroids"][::-1]), (centroids[:-1] + centroids[1:]) / 2)
    (ax,) = watts_figure(read_validation_series(config.synthetic_path(out, job)), "t").axes
    drawn = [line.get_xdata()[0] for line in ax.lines]
    np.testing.assert_allclose(drawn, (centroids[:-1] + centroids[1:]) / 2)
    assert sum(bar.get_height() for bar in ax.patches) == len(saved["real_watts"])   # validation watts
    assert "validation" in ax.get_xlabel()


def test_overview_has_one_point_per_configuration_found(results, tmp_path):
    out, _ = results
    found = read_job_metrics(BUILT_IN, out / "metrics")
    assert list(found["job"]) == [j for j in job_names() if j in set(found["job"])] and len(found) == len(JOBS)
    axes = overview_figure(BUILT_IN, found).axes
    assert [ax.get_ylabel() for ax in axes] == [label for _, label in OVERVIEW_METRICS]
    for ax, (metric, _) in zip(axes, OVERVIEW_METRICS):
        points = [line for line in ax.lines if not line.get_label().startswith("_")]
        assert sum(len(line.get_ydata()) for line in points) == len(JOBS)
        drawn = sorted(np.concatenate([line.get_ydata() for line in points]))
        expected = sorted(read_metrics_file(config.metrics_path(out, j))[metric] for j in job_names())
        np.testing.assert_allclose(drawn, expected)
    # one configuration fewer: one point fewer
    for job in job_names()[1:]:
        copy_finished_job(out, tmp_path, job)
    fewer = overview_figure(BUILT_IN, read_job_metrics(BUILT_IN, tmp_path / "metrics")).axes[0]
    assert sum(len(line.get_ydata()) for line in fewer.lines if not line.get_label().startswith("_")) == 2
