"""The registry of generation methods: one place to add a baseline, and nothing dropped silently."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import write_finished_job
from model import config
from model.aggregate import aggregate_generation
from model.results import read_results
from model.data import Trace, Workload
from model.errors import InputError
from model.generation import methods
from model.generation.evaluate import score_methods, standard_methods
from model.sites.site import baseline_watts
from model.grid import BUILT_IN

JOBS = ("llama-3-8b_a100_tp1", "llama-3-8b_h100_tp2")


@pytest.fixture
def dummy():
    """A made-up baseline (twice the training mean), registered for one test."""
    method = methods.register(methods.GenerationMethod(
        "double_mean", "Double mean", methods.constant(lambda ckpt: 2 * methods.mean_watts(ckpt)),
        site_baseline=True, constant_watts=lambda ckpt: 2 * methods.mean_watts(ckpt)))
    yield method
    methods.unregister(method.name)


def fake_checkpoint():
    return SimpleNamespace(configuration={"tp": 2, "gpu_tdp_w": 400.0},
                           training_watts={"mean": 300.0, "state_shares": [1.0]})


def write_generation(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for job in JOBS:         # finished jobs (model/results.py)
        write_finished_job(folder, job, {m: 0.5 for m in config.METRIC_ORDER},
                           generation="".join(f"{name},0.1,0.9,0.2,3.0,4.0,2.0\n" for name in names))


def test_a_registered_method_is_scored_tabled_and_a_site_baseline(dummy, tmp_path):
    ckpt = fake_checkpoint()
    built = standard_methods(ckpt, "independent")
    assert list(built)[-1] == "double_mean"
    workload = Workload(np.arange(200) * 0.25, *np.zeros((3, 200)), np.array([1.0]), np.array([10.0]),
                        np.array([5.0]))
    trace = Trace(0, 2, workload, np.full(200, 500.0))
    summary = score_methods([trace], {k: built[k] for k in ("tdp", "double_mean")}, seeds=1).summary
    assert summary.set_index("method").loc["double_mean", "energy_error_pct"] == pytest.approx(20.0)
    assert baseline_watts(ckpt, 100.0) == {"tdp": 900.0, "mean": 400.0, "double_mean": 700.0}

    write_generation(tmp_path / "metrics", ["ours", "tdp", "double_mean"])
    aggregate_generation(BUILT_IN, read_results(BUILT_IN, tmp_path / "metrics"), tmp_path, echo=lambda *_: None)
    stats = pd.read_csv(tmp_path / "generation_statistics.csv")
    assert list(stats["method"]) == ["ours", "tdp", "double_mean"]
    assert stats.set_index("method").loc["double_mean", "n_configs"] == 2
    assert "\\quad Double mean & 0.10~$\\pm$~0.00 &" in (tmp_path / "generation_fidelity.tex").read_text()


def test_an_unregistered_method_in_a_generation_file_is_an_input_error(tmp_path):
    write_generation(tmp_path / "metrics", ["ours", "double_mean"])
    with pytest.raises(InputError, match="llama-3-8b_a100_tp1_generation.csv: unknown generation method 'double_mean'"):
        aggregate_generation(BUILT_IN, read_results(BUILT_IN, tmp_path / "metrics"), tmp_path, echo=lambda *_: None)
    assert not (tmp_path / "generation_statistics.csv").exists()


def test_a_method_without_a_label_or_registered_twice_is_refused():
    with pytest.raises(ValueError, match="needs a name and a label"):
        methods.register(methods.GenerationMethod("nolabel", "", methods.constant(methods.mean_watts)))
    with pytest.raises(ValueError, match="registered twice"):
        methods.register(methods.GenerationMethod("tdp", "TDP", methods.constant(methods.tdp_watts)))
    with pytest.raises(ValueError, match="needs constant_watts"):
        methods.register(methods.GenerationMethod("site", "Site", methods.constant(methods.tdp_watts),
                                                  site_baseline=True))
    assert [m.name for m in methods.registered()] == ["ours", "tdp", "mean", "marginal", "measured_features"]
