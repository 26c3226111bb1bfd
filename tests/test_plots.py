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

from conftest import files_under, load_arrays, run_cli
from model import config
from model.aggregate import read_metrics_file
from model.classifiers import metrics
from model.data import load_power_file
from model.job import run_job
from model.settings import JobSettings
from model.plots import (STYLE, acf_figure, loss_curves_figure, pooled_by_model, read_losses,
                         reliability_figure, shown_trace, trace_figure)
from model.validation_series import read_validation_series

pytestmark = pytest.mark.slow   # every test here starts a process or trains

JOBS = (("llama-3-8b", "a100", 1), ("llama-3-8b", "a100", 2), ("deepseek-r1-distill-70b", "h100", 4))


@pytest.fixture(scope="module")
def results(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("plots_results")
    for model, hardware, tp in JOBS:
        data_file = next(demo_dir.glob(f"*_{model.replace('-distill', '')}_{hardware}.npz"))
        run_job(JobSettings(data_file=str(data_file), model=model, hardware=hardware, tp=tp, lr=3e-3,
                            num_epochs=4, output_dir=str(out), use_wandb=False, progress=False))
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
    names = {"loss_curves", "reliability"} | {f"{j}_{kind}" for j in job_names() for kind in ("trace", "acf")}
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

    (acf_ax,) = acf_figure(shown, "t").axes
    real_acf = metrics.acf_lags(saved["real_watts"][start:start + n])
    np.testing.assert_allclose(acf_ax.lines[0].get_ydata(), real_acf)
    np.testing.assert_allclose(acf_ax.lines[1].get_ydata(), metrics.acf_lags(saved["synthetic_watts"][start:start + n]))
    assert np.corrcoef(acf_ax.lines[0].get_ydata(), acf_ax.lines[1].get_ydata())[0, 1] ** 2 == pytest.approx(
        metrics.autocorr_r2([shown["real_watts"]], [shown["synthetic_watts"]]))

    losses = read_losses(out / "metrics")
    loss_axes = loss_curves_figure(losses).axes
    assert len(loss_axes) == 2                      # one panel per model present
    plotted = {line.get_label(): line.get_ydata() for line in loss_axes[0].lines}
    assert set(plotted) == {"A100 TP1", "A100 TP2"}
    np.testing.assert_array_equal(plotted["A100 TP2"],
                                  pd.read_csv(config.losses_path(out, job_names()[1]))["train_loss"])

    jobs = {"llama-3-8b": [read_validation_series(config.synthetic_path(out, j)) for j in job_names()[:2]]}
    (rel_ax,) = reliability_figure(pooled_by_model(jobs)).axes
    probabilities = np.concatenate([load_arrays(config.synthetic_path(out, j))["probabilities"] for j in job_names()[:2]])
    labels = np.concatenate([load_arrays(config.synthetic_path(out, j))["true_states"] for j in job_names()[:2]])
    counts, accuracy, _ = metrics.reliability_bins(probabilities, labels)
    np.testing.assert_allclose([bar.get_height() for bar in rel_ax.patches[: (counts > 0).sum()]],
                               accuracy[counts > 0])
    assert f"ECE {metrics.expected_calibration_error(probabilities, labels):.3f}" in rel_ax.get_title(loc="left")


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
    with matplotlib.rc_context(STYLE):
        figures = {
            "loss_curves": loss_curves_figure(read_losses(out / "metrics")),
            "reliability": reliability_figure(pooled_by_model(
                {"llama-3-8b": [traces[j] for j in job_names()[:2]], "deepseek-r1-distill-70b": [traces[job_names()[2]]]})),
            "trace": trace_figure(shown_trace(traces[job_names()[0]]), "Llama-3.1 (8B), A100 TP1, validation trace 12"),
            "acf": acf_figure(shown_trace(traces[job_names()[0]]), "Llama-3.1 (8B), A100 TP1, validation trace 12"),
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


def test_nothing_to_plot_or_damaged_series_exit_2(results, tmp_path):
    proc = run_cli("-m", "model.plots", "--results_dir", str(tmp_path))
    assert proc.returncode == 2 and "nothing to plot" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    out, _ = results
    damaged = tmp_path / "damaged"
    (damaged / "synthetic").mkdir(parents=True)
    job = job_names()[0]
    good = config.synthetic_path(out, job).read_bytes()
    (damaged / "synthetic" / f"{job}.npz").write_bytes(good[: len(good) // 2])
    proc = run_cli("-m", "model.plots", "--results_dir", str(damaged))
    assert proc.returncode == 2 and f"{job}.npz" in proc.stderr and "Traceback" not in proc.stderr
    assert not (damaged / "plots").exists()

    arrays = load_arrays(config.synthetic_path(out, job))
    del arrays["probabilities"]
    np.savez(damaged / "synthetic" / f"{job}.npz", **arrays)
    proc = run_cli("-m", "model.plots", "--results_dir", str(damaged))
    assert proc.returncode == 2 and "'probabilities' is missing" in proc.stderr
