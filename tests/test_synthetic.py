"""The synthetic trace (SPEC section 6)."""
from __future__ import annotations

import numpy as np

from model.classifiers.synthetic import sample_states, synthesize


def test_never_reads_the_real_watts_it_imitates():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 300)
    means, stds = np.array([80.0, 150.0, 220.0, 300.0]), np.array([3.0, 4.0, 5.0, 6.0])
    # synthesize() has no argument through which real watts could enter; replacing the
    # trace's real watts therefore cannot change it, and the same seed reproduces it
    a = synthesize(probs, means, stds, seed=7)
    b = synthesize(probs.copy(), means, stds, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, synthesize(probs, means, stds, seed=8))


def test_samples_follow_the_probabilities():
    probs = np.tile([0.1, 0.2, 0.7], (20000, 1))
    states = sample_states(probs, np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(states, minlength=3) / len(states), [0.1, 0.2, 0.7], atol=0.01)
    one_hot = np.eye(3)[[2, 0, 1, 1]]
    np.testing.assert_array_equal(sample_states(one_hot, np.random.default_rng(1)), [2, 0, 1, 1])


def test_watts_are_state_mean_plus_std_times_normal():
    probs = np.eye(2)[[0, 1] * 5000]
    watts = synthesize(probs, np.array([100.0, 300.0]), np.array([2.0, 10.0]), seed=0)
    assert abs(watts[0::2].mean() - 100) < 0.2 and abs(watts[0::2].std() - 2) < 0.1
    assert abs(watts[1::2].mean() - 300) < 0.6 and abs(watts[1::2].std() - 10) < 0.5
