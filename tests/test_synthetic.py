"""The synthetic trace."""
from __future__ import annotations

import numpy as np

from model.classifiers.synthetic import sample_states, synthesize


def test_same_seed_same_trace_and_another_seed_another():
    # that the trace never reads the real watts is shown in tests/test_held_out.py, which
    # changes them and checks that the synthetic trace does not move
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 300)
    means, stds = np.array([80.0, 150.0, 220.0, 300.0]), np.array([3.0, 4.0, 5.0, 6.0])
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


def test_coherent_sampling_keeps_each_bins_probabilities_but_correlates_draws_in_time():
    from model.generation.generator import ar1_normal, sample_coherent
    z = ar1_normal(200_000, 0.6, np.random.default_rng(0))
    assert abs(z.std() - 1.0) < 0.01 and abs(np.corrcoef(z[:-1], z[1:])[0, 1] - 0.6) < 0.01
    probs = np.tile([0.2, 0.5, 0.3], (100_000, 1))
    means, stds = np.array([100.0, 200.0, 300.0]), np.array([1.0, 1.0, 1.0])
    states, watts = sample_coherent(probs, means, stds, rho=0.8, seed=1)
    np.testing.assert_allclose(np.bincount(states, minlength=3) / len(states), [0.2, 0.5, 0.3], atol=0.01)
    coherent = np.mean(states[1:] == states[:-1])
    independent = np.mean((s := sample_states(probs, np.random.default_rng(2)))[1:] == s[:-1])
    assert coherent > independent + 0.2          # states persist from bin to bin
    assert np.array_equal(sample_coherent(probs, means, stds, 0.8, 1)[1], watts)   # seeded
