"""The checkpoint reader against crafted files: anything wrong is one InputError, never a
traceback, wrong numbers or a file name with a path in it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from model.classifiers.gru import PowerStateGRU
from model.errors import InputError
from model.features import FeatureNorm
from model.generation.serving import ServingModel
from model.states import PowerStates

K = 3


# what the made-up checkpoint "trained on" (extrapolation.training_ranges): up to 4 requests/s
# of 100 prompt and 50 output tokens each over 10 s windows, at most 8 requests active
TRAINING_TRAFFIC = {"window_s": 10.0, "bin_s": 0.25, "bins": 4000,
                    "arrival_rate_per_s": {"low": 0.0, "high": 4.0, "mean": 2.0},
                    "prompt_tokens_per_s": {"low": 0.0, "high": 400.0, "mean": 200.0},
                    "output_tokens_per_s": {"low": 0.0, "high": 200.0, "mean": 100.0},
                    "active_requests": {"low": 0.0, "high": 8.0, "mean": 3.0}}


def tiny_checkpoint(path, **overrides):
    """A made-up, valid checkpoint of an untrained classifier (no training needed)."""
    torch.manual_seed(0)
    model = PowerStateGRU(K, hidden_size=4, num_layers=1, dropout=0.0)
    fields = dict(
        model_args=model.model_args, model_state=model.state_dict(),
        norm=FeatureNorm(np.zeros(6), np.ones(6)), states=PowerStates(np.array([100.0, 200.0, 300.0])),
        state_means=np.array([100.0, 200.0, 300.0]), state_stds=np.array([5.0, 5.0, 5.0]),
        state_lows=np.array([90.0, 180.0, 280.0]), state_highs=np.array([110.0, 220.0, 310.0]),
        configuration={"model": "m", "hardware": "h", "tp": 1, "job_name": "m_h_tp1", "bin_s": 0.25,
                       "gpu_tdp_w": 400.0},
        training_watts={"min": 90.0, "max": 310.0, "mean": 180.0, "residual_lag1": 0.5,
                        "state_shares": [0.5, 0.3, 0.2],
                        "nameplate": {"nameplate_w": 400.0, "bin_s": 0.25, "share_above_nameplate": 0.0,
                                      "peak_0.25s_w": 310.0, "peak_1s_w": 300.0, "peak_60s_w": 250.0}},
        input_tokens=np.array([10, 20]), output_tokens=np.array([5, 6]),
        serving_model=ServingModel(1000.0, 0.02, 0.01).to_dict(),
        training_traffic=TRAINING_TRAFFIC,
        train_trace_sha256=["0" * 64])      # a trace no test file holds: every test trace is held out
    fields.update(overrides)
    save_checkpoint(path, Checkpoint(**fields))
    return path


def crafted(path, change):
    """A valid checkpoint whose raw record `change(record)` altered, saved as torch would."""
    tiny_checkpoint(path)
    record = torch.load(path, weights_only=True)
    change(record)
    torch.save(record, path)
    return path


def test_a_made_up_checkpoint_loads(tmp_path):
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "ok.pt"))
    assert ckpt.configuration["job_name"] == "m_h_tp1" and ckpt.classifier.model_args["num_states"] == K


def _set(*keys, value):
    def change(record):
        target = record
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value(target[keys[-1]]) if callable(value) else value
    return change


@pytest.mark.parametrize("job_name", ["../../escape", "/tmp/elsewhere", "m_h_tp1\n", "m/h_x_tp1", "a_b_tp0"])
def test_a_job_name_that_is_not_one_is_refused(tmp_path, job_name):
    path = crafted(tmp_path / "c.pt", _set("configuration", "job_name", value=job_name))
    with pytest.raises(InputError, match="job_name"):
        load_checkpoint(path)


CRAFTED = {
    "another architecture": _set("model_args", "hidden_size", value=8),
    "another shape": _set("model_state", "head.weight", value=torch.zeros(K, 3)),
    "a weight of another type": _set("model_state", "head.bias", value=[0.0] * K),
    "integer weights": _set("model_state", "head.bias", value=torch.zeros(K, dtype=torch.int64)),
    "a missing weight": lambda r: r["model_state"].pop("head.bias"),
    "model_args of another type": _set("model_args", value="GRU"),
    "a huge classifier": _set("model_args", "hidden_size", value=10**9),
    "states of another length": _set("states", "means", value=[100.0, 200.0]),
    "states as text": _set("states", "stds", value="five"),
    "a token pool of floats": _set("token_pool", "input_tokens", value=torch.tensor([1.5, 2.0])),
    "a serving model with text": _set("serving_model", "step_s", value="fast"),
    "a bin width of zero": _set("configuration", "bin_s", value=0.0),
    "state ranges upside down": _set("states", "lows", value=[90.0, 230.0, 280.0]),
    "training traffic as text": _set("training_traffic", value="busy"),
    "a training traffic range upside down": _set("training_traffic", "arrival_rate_per_s", value={
        "low": 5.0, "high": 4.0, "mean": 2.0}),
    "a training traffic range without its high": _set("training_traffic", "active_requests", value={
        "low": 0.0, "mean": 3.0}),
    "a training traffic window of zero": _set("training_traffic", "window_s", value=0.0),
    "a calibration method nobody knows": _set("calibration", "method", value="platt"),
    "a temperature of zero": _set("calibration", "temperature", value=0.0),
    "a temperature as text": _set("calibration", "temperature", value="warm"),
    "calibration as a number": _set("calibration", value=2.0),
}
NOT_FINITE = {
    "NaN weights": _set("model_state", "gru.weight_hh_l0", value=lambda w: torch.full_like(w, float("nan"))),
    "infinite weights": _set("model_state", "head.weight", value=lambda w: torch.full_like(w, float("inf"))),
    "NaN state means": _set("states", "means", value=[100.0, float("nan"), 300.0]),
    "negative state means": _set("states", "means", value=[-1e6, 200.0, 300.0]),
    "NaN state highs": _set("states", "highs", value=[110.0, float("nan"), 310.0]),
    "NaN feature normalisation": _set("feature_norm", "std", value=[float("nan")] * 6),
    "infinite training watts": _set("training_watts", "mean", value=float("inf")),
    "NaN training traffic": _set("training_traffic", "prompt_tokens_per_s", value={
        "low": 0.0, "high": float("nan"), "mean": 1.0}),
}


@pytest.mark.parametrize("kind", CRAFTED)
def test_a_checkpoint_of_another_architecture_shape_or_type_is_one_input_error(tmp_path, kind):
    path = crafted(tmp_path / "c.pt", CRAFTED[kind])
    with pytest.raises(InputError, match="not a usable checkpoint") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", NOT_FINITE)
def test_a_checkpoint_with_nan_or_negative_numbers_is_refused_not_used(tmp_path, kind):
    path = crafted(tmp_path / "c.pt", NOT_FINITE[kind])
    with pytest.raises(InputError, match="NaN or infinite|negative|not finite"):
        load_checkpoint(path)


def test_a_checkpoint_of_version_3_without_state_ranges_is_refused_asking_for_a_retrain(tmp_path):
    def version_3(record):
        record["version"] = 3
        for key in ("lows", "highs"):
            del record["states"][key]
    with pytest.raises(InputError, match="version 3; this version reads .* version 5 .*retrain"):
        load_checkpoint(crafted(tmp_path / "old.pt", version_3))


def test_a_version_4_checkpoint_without_its_training_traffic_is_refused_asking_for_a_retrain(tmp_path):
    def version_4(record):
        record["version"] = 4
        del record["training_traffic"]
    with pytest.raises(InputError, match="lacks 'training_traffic'.*retrain"):
        load_checkpoint(crafted(tmp_path / "old.pt", version_4))


def test_the_training_traffic_comes_back_as_it_was_saved(tmp_path):
    assert load_checkpoint(tiny_checkpoint(tmp_path / "c.pt")).training_traffic == TRAINING_TRAFFIC


def test_a_checkpoint_of_version_4_without_its_calibration_is_refused_naming_it(tmp_path):
    with pytest.raises(InputError, match="lacks 'calibration'"):
        load_checkpoint(crafted(tmp_path / "old.pt", lambda r: r.pop("calibration")))


def test_the_recorded_temperature_divides_the_logits_generation_uses(tmp_path):
    from model.generation.generator import windowed_log_probabilities
    plain = load_checkpoint(tiny_checkpoint(tmp_path / "plain.pt"))
    scaled = load_checkpoint(tiny_checkpoint(tmp_path / "scaled.pt",
                                             calibration={"method": "temperature", "temperature": 2.0}))
    assert plain.calibration == {"method": "none", "temperature": 1.0}
    assert scaled.calibration["temperature"] == 2.0 and scaled.classifier.temperature == 2.0
    features = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    logits = plain.classifier(torch.from_numpy(features)[None])[0].double()
    expected = torch.log_softmax(logits / 2.0, dim=1).detach().numpy()
    assert np.allclose(windowed_log_probabilities(scaled.classifier, features), expected, atol=1e-6)


def test_a_disk_filling_during_the_save_says_no_space_left(tmp_path, monkeypatch):
    import builtins
    from model import outputs

    def full_disk(path, mode="r", *args, **kwargs):      # every write fails as on a full disk
        return builtins.open("/dev/full" if "w" in mode else path, mode, *args, **kwargs)
    monkeypatch.setattr(outputs, "open", full_disk, raising=False)
    with pytest.raises(InputError, match="no space left on device"):
        tiny_checkpoint(tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def test_the_server_record_round_trips_and_a_version_4_checkpoint_without_it_is_refused(tmp_path):
    server = {"settings": {"max_num_seqs": 128, "prefix_caching": True, "vllm_version": "9.9.9"},
              "batch_cap": {"max_batch": 128, "source": "the server's max_num_seqs", "max_num_seqs": 128,
                            "most_active_measured": 14.0}}
    assert load_checkpoint(tiny_checkpoint(tmp_path / "ok.pt", server=server)).server == server

    def version_4(record):
        record["version"] = 4
        del record["server"]
    with pytest.raises(InputError, match="lacks 'server'"):
        load_checkpoint(crafted(tmp_path / "old.pt", version_4))
    with pytest.raises(InputError, match="server batch_cap is not a dict"):
        load_checkpoint(crafted(tmp_path / "bad.pt", _set("server", "batch_cap", value=[1])))
