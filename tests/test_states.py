"""Power states: k-means on the training watts, numbered by ascending watts, and their watts."""
from __future__ import annotations

import numpy as np
import pytest

from model.data import Trace, Workload
from model.errors import InputError
from model.states import PowerStates, fit_power_states, state_ranges, state_watts


def make_trace(index, power, active=None, request_times=(), tp=1):
    n = len(power)
    ts = 100.0 + 0.25 * np.arange(n)
    active = np.zeros(n) if active is None else np.asarray(active, float)
    k = len(request_times)
    workload = Workload(ts, np.zeros(n), np.zeros(n), active, np.asarray(request_times, float),
                        np.full(k, 10.0), np.full(k, 20.0))
    return Trace(index, tp, workload, np.asarray(power, float))


def test_states_numbered_by_ascending_watts():
    rng = np.random.default_rng(0)
    levels = np.array([500.0, 100.0, 300.0])      # deliberately not sorted
    traces = [make_trace(i, rng.choice(levels, 300) + rng.normal(0, 2, 300)) for i in range(3)]
    states = fit_power_states([t.power for t in traces], 3)
    assert np.all(np.diff(states.centroids) > 0)
    np.testing.assert_allclose(states.centroids, [100, 300, 500], atol=2)
    np.testing.assert_array_equal(states.label(np.array([99.0, 510.0, 301.0])), [0, 2, 1])


def test_state_watts_from_given_bins_and_empty_state_falls_back():
    states = PowerStates(np.array([100.0, 200.0, 300.0]))
    power = [np.array([98.0, 102.0, 195.0, 205.0])]
    labels = [states.label(power[0])]
    means, stds = state_watts(power, labels, states)
    np.testing.assert_allclose(means, [100.0, 200.0, 300.0])
    np.testing.assert_allclose(stds[:2], [2.0, 5.0])
    np.testing.assert_allclose(stds[2], np.sqrt((2 * 4 + 2 * 25) / 4))   # pooled std


def test_too_few_distinct_watts_is_input_error():
    with pytest.raises(InputError, match="distinct power values"):
        fit_power_states([np.full(200, 100.0), np.full(200, 150.0)], 6)


def test_state_ranges_are_each_states_training_extremes_and_an_empty_state_gets_the_whole_range():
    states = PowerStates(np.array([100.0, 200.0, 300.0]))
    power = [np.array([98.0, 102.0, 195.0]), np.array([205.0, 99.0])]
    lows, highs = state_ranges(power, [states.label(p) for p in power], states)
    np.testing.assert_array_equal(lows, [98.0, 195.0, 98.0])
    np.testing.assert_array_equal(highs, [102.0, 205.0, 205.0])
