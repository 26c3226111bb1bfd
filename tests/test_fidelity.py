"""Generation fidelity metrics against hand-computed cases, each getting worse with a worse trace."""
from __future__ import annotations

import numpy as np
import pytest

from model.generation import fidelity


def smooth_trace(n=600, seed=0):
    rng = np.random.default_rng(seed)
    level = np.repeat(rng.choice([100.0, 250.0, 400.0], n // 30), 30)
    kernel = np.ones(5) / 5
    return np.convolve(level, kernel, mode="same") + rng.normal(0, 3, n)


def test_ks_is_the_largest_gap_between_the_cdfs():
    assert fidelity.ks(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.0])) == 0.0
    assert fidelity.ks(np.array([1.0, 2.0]), np.array([5.0, 6.0])) == 1.0
    # at x = 2 the first CDF is 2/4, the second 0/4
    assert fidelity.ks(np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.0, 3.0, 4.0, 4.0])) == pytest.approx(0.5)


def test_nrmse_is_rmse_over_the_measured_range():
    real = np.array([100.0, 200.0, 300.0])
    gen = np.array([110.0, 190.0, 330.0])
    expected = np.sqrt((100 + 100 + 900) / 3) / 200
    assert fidelity.nrmse(real, gen) == pytest.approx(expected)
    assert np.isnan(fidelity.nrmse(np.full(3, 5.0), gen))


def test_percentile_and_energy_errors_by_hand():
    real = np.arange(1.0, 101.0)          # P95 = 95.05, sum 5050
    gen = real * 1.1
    assert fidelity.percentile_error_pct(real, gen, 95) == pytest.approx(10.0)
    assert fidelity.energy_error_pct(real, gen) == pytest.approx(10.0)
    assert fidelity.energy_error_pct(real, real - 5.0) == pytest.approx(100 * 500 / 5050)
    assert np.isnan(fidelity.energy_error_pct(np.zeros(4), np.ones(4)))


def test_acf_r2_is_zero_for_a_constant_trace_and_nan_when_too_short():
    real = smooth_trace()
    assert fidelity.acf_r2(real, np.full(len(real), real.mean())) == 0.0
    assert np.isnan(fidelity.acf_r2(real[:50], real[:50]))


def test_every_metric_scores_a_worse_trace_worse():
    real = smooth_trace(seed=1)
    rng = np.random.default_rng(2)
    good = real + rng.normal(0, 5, len(real))
    shuffled = rng.permutation(good)                 # right distribution, no time structure
    scaled = good * 1.3                              # right shape, wrong level
    good_scores = fidelity.fidelity(real, good)
    assert fidelity.acf_r2(real, shuffled) < good_scores["acf_r2"]
    assert fidelity.nrmse(real, shuffled) > good_scores["nrmse"]
    for metric in ("ks", "p95_error_pct", "p99_error_pct", "energy_error_pct", "nrmse"):
        assert fidelity.fidelity(real, scaled)[metric] > good_scores[metric], metric
