"""Validation traces shape nothing: changing their watts (or their workload) moves neither the
states, their watts, the feature normalisation, nor (for watts) the synthetic trace. Each check
is also run against a deliberately leaky stage, to show it would fail if the property broke."""
from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from model.classifiers.gru import PowerStateGRU
from model.classifiers.train import FitResult
from model.data import load_power_file
from model.features import FeatureNorm, raw_features
from model.job import Prepared, evaluate, prepare
from model.settings import JobSettings
from model.states import fit_power_states, state_watts


@pytest.fixture(scope="module")
def case(demo_dir):
    path = demo_dir / "vllm-benchmark_llama-3-70b_a100.npz"
    settings = JobSettings(data_file=str(path), model="llama-3-70b", hardware="a100", tp=4,
                           use_wandb=False, progress=False)
    return settings, load_power_file(path)


def altered(data, settings, what: str):
    """A copy of the data whose validation traces have other watts, or another workload."""
    val_indices = {t.index for t in prepare(settings, data).val}
    data = copy.deepcopy(data)
    for trace in data.traces:
        if trace.index in val_indices:
            if what == "watts":
                trace.power = trace.power[::-1] * 1.7 + 40.0
            else:
                trace.workload = replace(trace.workload, active_requests=trace.workload.active_requests * 5 + 3,
                                         decode_tokens=trace.workload.decode_tokens * 9)
    return data


def untrained_model(settings):
    torch.manual_seed(0)
    return PowerStateGRU(settings.num_states, 16, gru_impl="torch").eval()


def what_moves(settings, data, what, prepare_fn=prepare, evaluate_fn=evaluate) -> set[str]:
    """The names of the fitted things that differ between the data and its altered copy."""
    a, b = prepare_fn(settings, data), prepare_fn(settings, altered(data, settings, what))
    moved = set()
    if not np.allclose(a.states.centroids, b.states.centroids):
        moved.add("states")
    if not (np.allclose(a.state_means, b.state_means) and np.allclose(a.state_stds, b.state_stds)):
        moved.add("state_watts")
    if not (np.allclose(a.norm.mean, b.norm.mean) and np.allclose(a.norm.std, b.norm.std)):
        moved.add("normalisation")
    model = untrained_model(settings)
    syn_a = evaluate_fn(settings, model, a, FitResult([1.0])).synthetic
    syn_b = evaluate_fn(settings, model, b, FitResult([1.0])).synthetic
    if not all(np.array_equal(x, y) for x, y in zip(syn_a, syn_b)):
        moved.add("synthetic")
    return moved


def leaky_prepare(settings, data) -> Prepared:
    """States and normalisation fitted on every trace, validation included (the old bug)."""
    p = prepare(settings, data)
    everything = p.train + p.val
    states = fit_power_states([t.power for t in everything], settings.num_states)
    train_labels = [states.label(t.power) for t in p.train]
    means, stds = state_watts([t.power for t in p.train], train_labels, states)
    norm = FeatureNorm.fit([raw_features(t.workload) for t in everything])
    return Prepared(p.train, p.val, states, means, stds, norm, train_labels, [states.label(t.power) for t in p.val])


def peeking_evaluate(settings, model, prepared, fit_result):
    """A synthetic trace that leans on the real watts it should imitate blind."""
    result = evaluate(settings, model, prepared, fit_result)
    result.synthetic = [0.9 * s + 0.1 * t.power for s, t in zip(result.synthetic, prepared.val)]
    return result


def test_validation_watts_move_nothing_that_is_fitted_or_generated(case):
    settings, data = case
    assert what_moves(settings, data, "watts") == set()


def test_validation_workload_moves_neither_states_nor_normalisation(case):
    settings, data = case
    moved = what_moves(settings, data, "workload")
    assert not moved & {"states", "state_watts", "normalisation"}
    assert "synthetic" in moved       # the classifier does read the workload it is given


def test_the_check_catches_states_fitted_on_validation_watts(case):
    settings, data = case
    assert {"states", "state_watts"} <= what_moves(settings, data, "watts", prepare_fn=leaky_prepare)


def test_the_check_catches_normalisation_fitted_on_validation_workload(case):
    settings, data = case
    assert "normalisation" in what_moves(settings, data, "workload", prepare_fn=leaky_prepare)


def test_the_check_catches_a_synthetic_trace_that_reads_real_watts(case):
    settings, data = case
    assert "synthetic" in what_moves(settings, data, "watts", evaluate_fn=peeking_evaluate)
