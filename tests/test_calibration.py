"""Temperature scaling (model/classifiers/calibration.py) and where a job fits it: on the
training traces' calibration slices, which the weights never train on, never on validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax

from model import config
from model.classifiers import metrics
from model.classifiers.calibration import calibration_split, fit_temperature, nll
from model.classifiers.gru import PowerStateGRU
from model.data import Trace, Workload
from model.features import FeatureNorm, raw_features
from model.job import Prepared, calibrate, train, training_cuts
from model.settings import JobSettings
from model.states import PowerStates
from model.tracking import Tracker


def test_the_fitted_temperature_of_identical_two_state_bins_is_hand_computed():
    # every bin has logits (4, 0) and 3 in 4 bins are state 0: the NLL is lowest where
    # softmax(4 / T) gives state 0 probability 3/4, i.e. 4 / T = log(3), T = 4 / log(3)
    logits = np.tile([4.0, 0.0], (400, 1))
    labels = np.array([0, 0, 0, 1] * 100)
    assert fit_temperature(logits, labels) == pytest.approx(4 / math.log(3), rel=1e-4)


def _logits(rng, n, k, margin, accuracy):
    """Logits whose top state is the label in `accuracy` of the bins, `margin` above the rest."""
    labels = rng.integers(0, k, n)
    top = np.where(rng.random(n) < accuracy, labels, (labels + rng.integers(1, k, n)) % k)
    logits = rng.normal(0, 0.1, (n, k))
    logits[np.arange(n), top] += margin
    return logits, labels


def test_overconfident_logits_get_a_temperature_above_one_and_a_lower_nll():
    logits, labels = _logits(np.random.default_rng(0), 2000, 4, margin=8.0, accuracy=0.7)
    temperature = fit_temperature(logits, labels)
    assert temperature > 1.5
    assert nll(logits, labels, temperature) < nll(logits, labels) - 0.5


def test_underconfident_logits_get_a_temperature_below_one():
    logits, labels = _logits(np.random.default_rng(1), 2000, 4, margin=0.5, accuracy=0.99)
    assert fit_temperature(logits, labels) < 1.0


@pytest.mark.parametrize("seed", range(6))
def test_the_fit_never_raises_the_nll_of_its_own_bins(seed):
    rng = np.random.default_rng(seed)
    logits, labels = rng.normal(0, rng.uniform(0.1, 20), (300, 5)), rng.integers(0, 5, 300)
    temperature = fit_temperature(logits, labels)
    assert temperature > 0 and nll(logits, labels, temperature) <= nll(logits, labels, 1.0)


def test_no_calibration_bins_means_no_scaling():
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0


def test_temperature_lowers_the_ece_of_an_overconfident_classifier_and_keeps_every_prediction():
    rng = np.random.default_rng(2)
    fit_logits, fit_labels = _logits(rng, 3000, 4, margin=8.0, accuracy=0.7)
    logits, labels = _logits(rng, 3000, 4, margin=8.0, accuracy=0.7)      # other bins, same model
    temperature = fit_temperature(fit_logits, fit_labels)
    before, after = np.exp(log_softmax(logits, axis=1)), np.exp(log_softmax(logits / temperature, axis=1))
    assert (after.argmax(1) == before.argmax(1)).all()
    assert metrics.expected_calibration_error(after, labels) < metrics.expected_calibration_error(before, labels) / 3


@pytest.mark.parametrize("n_bins, cut", [(100, 80), (101, 81), (5, 4), (2, 1), (1, 1), (0, 0)])
def test_the_calibration_slice_is_the_last_fifth_of_a_trace_leaving_both_sides_a_bin(n_bins, cut):
    assert config.CALIBRATION_SHARE == 0.2
    assert calibration_split(n_bins) == cut


def test_the_classifier_divides_its_logits_by_its_temperature():
    torch.manual_seed(0)
    model = PowerStateGRU(3, hidden_size=4, num_layers=1, dropout=0.0).eval()
    x = torch.randn(1, 20, config.NUM_FEATURES)
    plain = model(x)
    model.temperature = 2.5
    assert torch.allclose(model(x), plain / 2.5)


# --- where a job fits it -------------------------------------------------------------------

def _trace(index: int, rng, n: int) -> Trace:
    load = rng.integers(0, 20, n).astype(np.float64)
    workload = Workload(timestamps=np.arange(n) * 0.25, prefill_tokens=load * 50, decode_tokens=load * 10,
                        active_requests=load, request_times=np.sort(rng.uniform(0, n * 0.25, 30)),
                        input_tokens=rng.integers(10, 500, 30).astype(np.float64),
                        output_tokens=rng.integers(10, 200, 30).astype(np.float64))
    return Trace(index, 1, workload, 100.0 + 10.0 * load + rng.normal(0, 5, n))


def _prepared(val_labels_shift: int = 0) -> Prepared:
    """Made-up traces: two training traces, one validation trace, three states."""
    rng = np.random.default_rng(0)
    train, val = [_trace(0, rng, 150), _trace(1, rng, 120)], [_trace(2, rng, 110)]
    states = PowerStates(np.array([120.0, 200.0, 280.0]))
    train_labels = [states.label(t.power) for t in train]
    val_labels = [(states.label(t.power) + val_labels_shift) % 3 for t in val]
    norm = FeatureNorm.fit([raw_features(t.workload) for t in train])
    return Prepared(train, val, states, np.array([120.0, 200.0, 280.0]), np.array([5.0, 5.0, 5.0]), norm,
                    train_labels, val_labels)


def _settings(calibration: str) -> JobSettings:
    return JobSettings(data_file="made-up.npz", model="llama-3-8b", hardware="a100", tp=1, lr=3e-3,
                       num_epochs=3, num_states=3, hidden_size=4, num_layers=1, dropout=0.0,
                       calibration=calibration, use_wandb=False, progress=False)


@pytest.mark.parametrize("calibration, cuts", [("none", [150, 120]), ("temperature", [120, 96])])
def test_with_temperature_the_weights_never_train_on_the_calibration_slices(monkeypatch, calibration, cuts):
    import model.job as job
    seen = {}

    def spy(model, train_x, train_y, val_x, val_y, **kwargs):
        seen["x"], seen["y"], seen["val"] = [x.shape[1] for x in train_x], [len(y) for y in train_y], val_x
        return job.FitResult([1.0])
    monkeypatch.setattr(job, "fit", spy)
    prepared = _prepared()
    assert training_cuts(_settings(calibration), prepared) == cuts
    train(_settings(calibration), prepared, torch.device("cpu"), "torch", Tracker("t", {}, enabled=False),
          None, {})
    assert seen["x"] == cuts and seen["y"] == cuts
    assert [x.shape[1] for x in seen["val"]] == [110]          # validation traces stay whole


def test_the_temperature_is_fitted_on_training_slices_and_never_reads_validation():
    torch.manual_seed(0)
    model = PowerStateGRU(3, hidden_size=4, num_layers=1, dropout=0.0).eval()
    with torch.no_grad():
        model.head.weight.mul_(30.0)          # an overconfident classifier, untrained
    record = calibrate(_settings("temperature"), model, _prepared())
    assert record["method"] == "temperature" and model.temperature == record["temperature"] > 1.0
    assert record["bins"] == (150 - 120) + (120 - 96)
    assert record["nll_after"] < record["nll_before"]
    # other validation labels: the same temperature
    assert calibrate(_settings("temperature"), model, _prepared(val_labels_shift=1))["temperature"] == \
        record["temperature"]
    assert calibrate(_settings("none"), model, _prepared()) == {"method": "none", "temperature": 1.0}
    assert model.temperature == 1.0
