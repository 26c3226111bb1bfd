"""Metrics against hand-computed cases, and each one getting worse with a worse model."""
from __future__ import annotations

import numpy as np
import pytest
from statsmodels.tsa.stattools import acf

from model.classifiers import metrics
from model.classifiers.synthetic import synthesize

K = 3


def test_classification_scores_hand_computed():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    scores = metrics.classification_scores(labels, predictions, K)
    # per class: precision 1/2, 2/3, 1; recall 1/2, 1, 1/2; each class has weight 1/3
    assert scores["val_precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert scores["val_recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    f1 = [0.5, 2 * (2 / 3) / (2 / 3 + 1), 2 * 0.5 / 1.5]
    assert scores["val_f1"] == pytest.approx(np.mean(f1))
    assert scores["val_accuracy"] == pytest.approx(4 / 6)


def test_ece_hand_computed_and_counts_confidence_one():
    probs = np.array([[1.0, 0.0, 0.0],      # conf 1.0 (last bin, closed), correct
                      [0.0, 1.0, 0.0],      # conf 1.0, wrong
                      [0.55, 0.45, 0.0],    # conf 0.55, correct
                      [0.35, 0.33, 0.32]])  # conf 0.35, wrong
    labels = np.array([0, 0, 0, 2])
    expected = 0.5 * abs(0.5 - 1.0) + 0.25 * abs(1 - 0.55) + 0.25 * abs(0 - 0.35)
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(expected)
    perfect = np.eye(3)[[0, 1, 2]]
    assert metrics.expected_calibration_error(perfect, np.array([0, 1, 2])) == 0.0
    assert metrics.expected_calibration_error(perfect, np.array([1, 2, 0])) == pytest.approx(1.0)


def test_mean_trace_cross_entropy_is_per_trace_then_mean():
    lp = [np.log(np.array([[0.5, 0.5], [0.25, 0.75]])), np.log(np.array([[0.1, 0.9]]))]
    y = [np.array([0, 1]), np.array([1])]
    expected = np.mean([-(np.log(0.5) + np.log(0.75)) / 2, -np.log(0.9)])
    assert metrics.mean_trace_cross_entropy(lp, y) == pytest.approx(expected)


def test_autocorr_r2_hand_computed():
    rng = np.random.default_rng(0)
    real = np.sin(np.arange(300) / 7.0) + rng.normal(0, 0.1, 300)
    syn = np.sin(np.arange(300) / 9.0) + rng.normal(0, 0.1, 300)
    a, b = acf(real, nlags=50, fft=True)[1:], acf(syn, nlags=50, fft=True)[1:]
    expected = np.corrcoef(a, b)[0, 1] ** 2
    assert metrics.autocorr_r2([real], [syn]) == pytest.approx(expected)
    assert metrics.autocorr_r2([real], [real]) == pytest.approx(1.0)


def test_autocorr_r2_constant_zero_short_skipped_and_length_weighted():
    rng = np.random.default_rng(1)
    real = np.sin(np.arange(200) / 5.0) + rng.normal(0, 0.05, 200)
    assert metrics.autocorr_r2([real], [np.full(200, 3.0)]) == 0.0
    assert np.isnan(metrics.autocorr_r2([real[:100]], [real[:100]]))
    mixed = metrics.autocorr_r2([real, real[:100], real[:150]], [real, real[:100], np.full(150, 1.0)])
    assert mixed == pytest.approx(200 / 350)


def test_transition_mae_hand_computed():
    labels = [np.array([0, 0, 1, 1, 0])]
    real = [np.array([100.0, 100.0, 200.0, 200.0, 100.0])]
    syn = [np.array([100.0, 110.0, 170.0, 180.0, 150.0])]
    # changes at t=2 (real +100, syn +60) and t=4 (real -100, syn -30)
    assert metrics.transition_mae(real, syn, labels) == pytest.approx((40 + 70) / 2)
    assert np.isnan(metrics.transition_mae(real, syn, [np.zeros(5, int)]))


def test_energy_error_pct_hand_computed():
    assert metrics.energy_error_pct([np.array([100.0, 100.0])], [np.array([90.0, 120.0])]) == pytest.approx(5.0)


# --- every metric gets worse when the model gets worse ----------------------------------------

def _scenario():
    """A labelled power trace and three classifiers: the truth, shuffled labels, a constant."""
    rng = np.random.default_rng(0)
    means, stds = np.array([100.0, 250.0, 400.0]), np.array([5.0, 5.0, 5.0])
    labels = np.repeat(rng.integers(0, K, 60), rng.integers(5, 15, 60))[:600]
    real = means[labels] + rng.normal(0, 5, len(labels))
    good = np.eye(K)[labels] * 0.97 + 0.03 / K
    shuffled = np.eye(K)[rng.permutation(labels)] * 0.9 + 0.1 / K
    constant = np.tile(np.array([0.2, 0.6, 0.2]), (len(labels), 1))
    return labels, real, means, stds, {"good": good, "shuffled": shuffled, "constant": constant}


def _score_all(labels, real, means, stds, probs):
    syn = synthesize(probs, means, stds, seed=0)
    scores = metrics.classification_scores(labels, probs.argmax(1), K)
    return {
        "val_f1": scores["val_f1"], "val_precision": scores["val_precision"],
        "val_recall": scores["val_recall"], "val_accuracy": scores["val_accuracy"],
        "ece": metrics.expected_calibration_error(probs, labels),
        "final_val_loss": metrics.mean_trace_cross_entropy([np.log(probs)], [labels]),
        "autocorr_r2": metrics.autocorr_r2([real], [syn]),
        "transition_mae": metrics.transition_mae([real], [syn], [labels]),
        "energy_error_pct": metrics.energy_error_pct([real], [syn]),
    }


HIGHER_IS_BETTER = {"val_f1", "val_precision", "val_recall", "val_accuracy", "autocorr_r2"}


@pytest.mark.parametrize("metric", sorted(HIGHER_IS_BETTER | {"ece", "final_val_loss", "transition_mae"}))
def test_metric_worse_for_worse_model(metric):
    labels, real, means, stds, models = _scenario()
    scores = {name: _score_all(labels, real, means, stds, p)[metric] for name, p in models.items()}
    sign = 1 if metric in HIGHER_IS_BETTER else -1
    assert sign * scores["good"] > sign * scores["shuffled"], scores
    assert sign * scores["good"] > sign * scores["constant"], scores


def test_energy_error_worse_for_a_model_biased_in_level():
    # Total energy only sees the mix of states, so shuffled labels (same mix) score like the
    # truth; a model that over- or under-predicts load is what it catches.
    labels, real, means, stds, models = _scenario()
    always_busy = np.tile([0.02, 0.08, 0.9], (len(labels), 1))
    never_busy = np.tile([0.9, 0.08, 0.02], (len(labels), 1))
    good = _score_all(labels, real, means, stds, models["good"])["energy_error_pct"]
    for worse in (always_busy, never_busy):
        assert _score_all(labels, real, means, stds, worse)["energy_error_pct"] > good + 20


def test_autocorr_r2_not_near_one_for_a_model_that_cannot_predict():
    labels, real, means, stds, models = _scenario()
    assert _score_all(labels, real, means, stds, models["constant"])["autocorr_r2"] < 0.5
    assert _score_all(labels, real, means, stds, models["good"])["autocorr_r2"] > 0.9


def test_acf_mae_by_hand_and_growing_when_the_lag_one_correlation_halves():
    def ar1(phi, n=4000, seed=0):
        e = np.random.default_rng(seed).standard_normal(n)
        x = np.empty(n)
        x[0] = e[0]
        for t in range(1, n):
            x[t] = phi * x[t - 1] + e[t]
        return x

    real = ar1(0.6)
    assert metrics.acf_mae([real], [real]) == 0.0
    # against a constant (no autocorrelation at all) it is the mean |ACF| of the real trace
    expected = np.mean(np.abs(metrics.acf_lags(real)))
    assert metrics.acf_mae([real], [np.full(len(real), 3.0)]) == pytest.approx(expected)
    close, halved = ar1(0.6, seed=1), ar1(0.3, seed=1)
    assert metrics.acf_mae([real], [halved]) > metrics.acf_mae([real], [close]) + 0.01
    # autocorr_r2 hardly notices the halving: the ACF keeps its shape (the reason acf_mae exists)
    assert metrics.autocorr_r2([real], [halved]) > 0.5
    assert np.isnan(metrics.acf_mae([real[:50]], [real[:50]]))


def test_energy_error_of_all_zero_watts_is_nan():
    from model.classifiers.metrics import energy_error_pct
    assert np.isnan(energy_error_pct([np.zeros(200)], [np.full(200, 5.0)]))
    assert energy_error_pct([np.full(10, 2.0)], [np.full(10, 3.0)]) == pytest.approx(50.0)
