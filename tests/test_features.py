"""Features, their normalisation and the train/validation split."""
from __future__ import annotations

import numpy as np
import pytest

from model.errors import InputError
from model.features import FeatureNorm, raw_features, split_named, split_traces
from test_states import make_trace


def test_arrivals_counted_in_their_bins_last_bin_one_step_wide():
    trace = make_trace(0, np.ones(4), request_times=[100.0, 100.1, 100.6, 100.99, 101.3])
    features = raw_features(trace.workload)
    # bins start at 100.0, 100.25, 100.5, 100.75; the last ends at 101.0; 101.3 is outside
    np.testing.assert_array_equal(features[:, 0], [2, 0, 1, 1])
    np.testing.assert_array_equal(features[:, 1], [20, 0, 10, 10])
    np.testing.assert_array_equal(features[:, 2], [40, 0, 20, 20])


def test_normalisation_is_log1p_then_z_score_of_the_given_bins():
    train = [np.full((10, 6), 3.0), np.full((10, 6), 7.0)]
    norm = FeatureNorm.fit(train)
    np.testing.assert_allclose(norm.mean, np.log1p([3.0, 7.0]).mean())
    np.testing.assert_allclose(norm.std, np.log1p([3.0, 7.0]).std())
    assert norm.apply(np.full((5, 6), 1000.0)).mean() > 5
    constant = FeatureNorm.fit([np.zeros((4, 6))])
    assert np.all(constant.std == 1e-6)
    again = FeatureNorm.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.apply(train[0]), norm.apply(train[0]))


def test_split_is_seeded_and_deterministic():
    items = list(range(10))
    train_a, val_a = split_traces(items, 0.2, seed=1)
    train_b, val_b = split_traces(items, 0.2, seed=1)
    assert (train_a, val_a) == (train_b, val_b)
    assert len(val_a) == 2 and sorted(train_a + val_a) == items
    expected_val = [items[i] for i in np.random.default_rng(1).permutation(10)[:2]]
    assert val_a == expected_val
    assert split_traces(items, 0.2, seed=2) != (train_a, val_a)
    assert len(split_traces([0, 1], 0.01, seed=0)[1]) == 1      # at least one validation trace


def test_split_needs_two_traces():
    with pytest.raises(InputError):
        split_traces([0], 0.2, seed=0)


def test_named_rows_are_the_validation_traces_whatever_the_seed():
    traces = [make_trace(i, np.arange(200.0) + i) for i in (0, 1, 2, 3)]
    train, val = split_named(traces, (1, 3), "f.npz (TP 1)")
    assert [t.index for t in val] == [1, 3] and [t.index for t in train] == [0, 2]


@pytest.mark.parametrize("rows,elsewhere,message", [
    ((1, 9), frozenset(), "f.npz \\(TP 1\\) has no row 9 \\(its rows: 0, 1, 2\\)"),
    ((7,), frozenset({7}), "--val_traces 7 names no trace of f.npz \\(TP 1\\)"),
    ((0, 1, 2), frozenset(), "names every trace of f.npz \\(TP 1\\); none is left to train on")])
def test_named_rows_the_traces_cannot_give_are_one_line_naming_the_flag(rows, elsewhere, message):
    traces = [make_trace(i, np.arange(200.0)) for i in (0, 1, 2)]
    with pytest.raises(InputError, match=message):
        split_named(traces, rows, "f.npz (TP 1)", elsewhere)


def test_a_job_validates_on_the_named_rows_of_its_tp_and_trains_on_the_rest():
    from pathlib import Path

    from model.data import PowerData
    from model.job import prepare
    from model.settings import JobSettings
    rng = np.random.default_rng(0)
    traces = [make_trace(i, rng.choice([100.0, 200.0, 300.0], 200) + rng.normal(0, 3, 200), tp=1 + i % 2)
              for i in range(6)]                       # rows 0, 2, 4 are TP 1; 1, 3, 5 TP 2
    data = PowerData(Path("made_up.npz"), traces)
    settings = JobSettings(data_file="made_up.npz", model="llama-3-8b", hardware="a100", tp=1, num_states=3,
                           val_traces="3, 2")          # row 3 belongs to TP 2: --tp -1 names both TPs' rows
    for seed in (0, 1, 2):
        prepared = prepare(JobSettings(**{**settings.__dict__, "seed": seed}), data)
        assert [t.index for t in prepared.val] == [2] and [t.index for t in prepared.train] == [0, 4]
