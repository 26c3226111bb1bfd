"""The classifier checkpoint `checkpoints/{job}.pt`: writer and reader side by side.

    save_checkpoint(path, Checkpoint(...))
    ckpt = load_checkpoint(path)           # no training code, weights_only=True
    probs = state_probabilities(ckpt.classifier, ckpt.norm.apply(raw_features(workload)))

A checkpoint describes itself: `model_args` rebuilds the classifier, and everything a generator
needs is inside (states and their watts, feature normalisation, the configuration and bin
width, the training watts' range, the training requests' token lengths, the fitted serving
model), so nothing is recomputed from the training file. It holds only tensors, numbers,
strings, lists and dicts, and is always read with weights_only=True: a planted file cannot run
code. docs/design.md, "Checkpoint", lists the fields.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model import config
from model.classifiers.gru import PowerStateGRU
from model.errors import InputError
from model.features import FeatureNorm
from model.outputs import write_torch
from model.states import PowerStates

FORMAT = "powertrace-classifier"
# 3: configuration records the GPU nameplate watts; 4: states record each state's lowest and
# highest training watts, which bound generation (an older checkpoint is refused: its draws
# would have no bounds), and training_watts how far the training watts go past nameplate;
# 5: `server` records the training runs' server settings and where the batch cap comes from;
# training_traffic, the traffic the job trained on, which generation compares its own with
# (model/generation/extrapolation.py); `calibration`, the temperature the classifier's logits
# are divided by
VERSION = 5
# What a reader needs; a checkpoint missing any of them was written before the format had it.
REQUIRED = ("format", "version", "model_args", "model_state", "feature_norm", "states",
            "configuration", "training_watts", "token_pool", "serving_model", "server", "training_traffic",
            "calibration")


@dataclass
class Checkpoint:
    model_args: dict              # PowerStateGRU(**model_args) rebuilds the classifier
    model_state: dict             # its state_dict (gru.* loads into a plain nn.GRU)
    norm: FeatureNorm
    states: PowerStates
    state_means: np.ndarray       # (K,) watts of each state on the training bins
    state_stds: np.ndarray        # (K,)
    state_lows: np.ndarray        # (K,) lowest and highest watts of each state's training bins:
    state_highs: np.ndarray       # (K,) the range generation draws within
    configuration: dict           # model, hardware, tp, job_name, bin_s
    training_watts: dict          # min, max, mean of the training traces' watts, their share above
                                  # nameplate and peaks (model/nameplate.py), ...
    input_tokens: np.ndarray      # (R,) the training requests' prompt lengths ...
    output_tokens: np.ndarray     # (R,) ... and completion lengths, pairwise
    serving_model: dict           # ServingModel.to_dict()
    training_traffic: dict        # extrapolation.training_ranges of the training traces
    server: dict = field(default_factory=lambda: {"settings": {}, "batch_cap": {}})   # serving.server_record
    # method ("none" or "temperature") and the temperature the logits are divided by (1.0: none);
    # for temperature also the share of each training trace it was fitted on, its bins, and
    # their NLL before and after (model/classifiers/calibration.py)
    calibration: dict = field(default_factory=lambda: {"method": "none", "temperature": 1.0})
    settings: dict = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    train_trace_indices: list = field(default_factory=list)
    val_trace_indices: list = field(default_factory=list)
    train_trace_sha256: list = field(default_factory=list)    # data.trace_sha256 of each training trace

    @property
    def classifier(self) -> PowerStateGRU:
        """The trained classifier in eval mode, on the CPU with torch's nn.GRU."""
        model = PowerStateGRU(**self.model_args, gru_impl="torch")
        model.load_state_dict(self.model_state)
        model.temperature = float(self.calibration["temperature"])
        return model.eval()


def save_checkpoint(path: Path | str, ckpt: Checkpoint) -> None:
    record = {
        "format": FORMAT, "version": VERSION, "model_args": dict(ckpt.model_args),
        "model_state": {k: v.detach().cpu() for k, v in ckpt.model_state.items()},
        "feature_norm": ckpt.norm.to_dict(),
        "states": {"centroids": ckpt.states.centroids.tolist(), "means": np.asarray(ckpt.state_means).tolist(),
                   "stds": np.asarray(ckpt.state_stds).tolist(), "lows": np.asarray(ckpt.state_lows).tolist(),
                   "highs": np.asarray(ckpt.state_highs).tolist()},
        "configuration": dict(ckpt.configuration), "training_watts": dict(ckpt.training_watts),
        "token_pool": {"input_tokens": torch.as_tensor(np.asarray(ckpt.input_tokens, dtype=np.int64)),
                       "output_tokens": torch.as_tensor(np.asarray(ckpt.output_tokens, dtype=np.int64))},
        "serving_model": dict(ckpt.serving_model), "server": dict(ckpt.server),
        "training_traffic": dict(ckpt.training_traffic), "calibration": dict(ckpt.calibration),
        "settings": dict(ckpt.settings),
        "fingerprint": dict(ckpt.fingerprint), "metrics": {k: float(v) for k, v in ckpt.metrics.items()},
        "train_trace_indices": list(ckpt.train_trace_indices),
        "val_trace_indices": list(ckpt.val_trace_indices),
        "train_trace_sha256": list(ckpt.train_trace_sha256),
    }
    write_torch(path, record)


def read_record(path: Path | str) -> dict:
    """The raw dict of a checkpoint file, read safely; InputError (one line) when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found" + (" (a directory)" if path.is_dir() else ""))
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}: not a checkpoint of this pipeline (holds a {type(record).__name__})")
    return record


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Rebuild everything a checkpoint holds; InputError naming what is missing or wrong when it
    is from an older version of the pipeline, not a checkpoint at all, or crafted (weights of
    another architecture, shape or type, NaN weights or state watts, a job name with a path)."""
    record = read_record(path)
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise InputError(f"{path}: checkpoint lacks {', '.join(repr(k) for k in missing)} (written "
                         "by an older version of the pipeline, or not a classifier checkpoint); "
                         "retrain the job to get one that generation can use")
    if record["format"] != FORMAT or record["version"] != VERSION:
        raise InputError(f"{path}: checkpoint format {record['format']!r} version {record['version']!r}; "
                         f"this version reads {FORMAT!r} version {VERSION} (retrain the job to get one)")
    try:
        return _checked(record)
    except _Unusable as err:
        raise InputError(f"{path}: not a usable checkpoint: {err}") from None


class _Unusable(Exception):
    """What makes a checkpoint record unusable, in a few words."""


# bounds on the classifier a checkpoint may ask for: rebuilding it allocates its weights
MODEL_ARG_BOUNDS = {"num_states": (1, 1000), "hidden_size": (1, 4096), "num_layers": (1, 16)}


def _numbers(value, what: str, length: int | None = None, positive: bool = False,
             nonnegative: bool = False) -> np.ndarray:
    """`value` as a 1-D float64 array of finite numbers (of `length`), or _Unusable."""
    try:
        array = np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError):
        raise _Unusable(f"{what} is not a list of numbers") from None
    if array.ndim != 1 or (length is not None and len(array) != length):
        raise _Unusable(f"{what} has shape {array.shape}, not ({'' if length is None else length},)")
    if not np.isfinite(array).all():
        raise _Unusable(f"{what} holds NaN or infinite values")
    if (positive and (array <= 0).any()) or (nonnegative and (array < 0).any()):
        raise _Unusable(f"{what} holds {'non-positive' if positive else 'negative'} values")
    return array


def _number(value, what: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Unusable(f"{what} is not a number ({type(value).__name__})")
    return float(_numbers([value], what, positive=positive)[0])


def _classifier_state(model_args: dict, model_state) -> dict:
    """The weights, checked to fit the classifier model_args describes (same architecture,
    names, shapes) and to be finite."""
    if set(model_args) - {"num_states", "hidden_size", "num_layers", "dropout"}:
        raise _Unusable(f"model_args has unknown keys {sorted(set(model_args))}")
    for name, (low, high) in MODEL_ARG_BOUNDS.items():
        value = model_args.get(name)
        if name in model_args and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise _Unusable(f"model_args {name} must be a whole number in {low}..{high}, got {value!r}")
    if "dropout" in model_args and not 0 <= _number(model_args["dropout"], "model_args dropout") < 1:
        raise _Unusable(f"model_args dropout must lie in [0, 1), got {model_args['dropout']!r}")
    if not isinstance(model_state, dict) or not all(isinstance(v, torch.Tensor) for v in model_state.values()):
        raise _Unusable("model_state is not a dict of tensors")
    try:
        PowerStateGRU(**model_args).load_state_dict(model_state)
    except (TypeError, RuntimeError) as err:     # another architecture, shape or parameter name
        first = str(err).strip().splitlines()[0][:160]
        raise _Unusable(f"its weights do not fit the classifier it describes ({first})") from None
    for name, tensor in model_state.items():
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise _Unusable(f"weight {name} is {'not finite' if tensor.is_floating_point() else tensor.dtype}")
    return model_state


def _checked(record: dict) -> Checkpoint:
    """The Checkpoint in `record`, every field checked for type, shape and finiteness (a file
    can be crafted; nothing wrong in it may reach generation or a file name)."""
    from model.generation.serving import ServingModel     # lazily: it needs scipy
    from model.grid import is_job_name
    for key in ("model_args", "model_state", "feature_norm", "states", "configuration", "training_watts",
                "token_pool", "serving_model", "server", "training_traffic", "calibration"):
        if not isinstance(record[key], dict):
            raise _Unusable(f"{key} is a {type(record[key]).__name__}, not a dict")
    for key in ("settings", "batch_cap"):
        if not isinstance(record["server"].get(key), dict):
            raise _Unusable(f"server {key} is not a dict")
    configuration = dict(record["configuration"])
    if not is_job_name(configuration.get("job_name")):
        raise _Unusable(f"configuration job_name {configuration.get('job_name')!r} is not a job name "
                        "(model_hardware_tpN)")
    for key in ("bin_s", "gpu_tdp_w"):
        _number(configuration.get(key), f"configuration {key}", positive=True)
    if isinstance(configuration.get("tp"), bool) or not isinstance(configuration.get("tp"), int) \
            or configuration["tp"] < 1:
        raise _Unusable(f"configuration tp must be a positive whole number, got {configuration.get('tp')!r}")
    model_args = dict(record["model_args"])
    model_state = _classifier_state(model_args, record["model_state"])
    k = model_args.get("num_states")
    states = record["states"]
    centroids = _numbers(states.get("centroids"), "states centroids", k)
    means = _numbers(states.get("means"), "states means", k, nonnegative=True)
    stds = _numbers(states.get("stds"), "states stds", k, nonnegative=True)
    lows = _numbers(states.get("lows"), "states lows", k, nonnegative=True)
    highs = _numbers(states.get("highs"), "states highs", k, nonnegative=True)
    if (lows > highs).any():
        raise _Unusable("states lows exceed their highs")
    norm = record["feature_norm"]
    norm = FeatureNorm(_numbers(norm.get("mean"), "feature_norm mean", config.NUM_FEATURES),
                       _numbers(norm.get("std"), "feature_norm std", config.NUM_FEATURES, positive=True))
    training_watts = dict(record["training_watts"])
    for key in ("min", "max", "mean"):
        _number(training_watts.get(key), f"training_watts {key}")
    _number(training_watts.get("residual_lag1"), "training_watts residual_lag1")
    _numbers(training_watts.get("state_shares"), "training_watts state_shares", k, nonnegative=True)
    nameplate = training_watts.get("nameplate")
    if not isinstance(nameplate, dict):
        raise _Unusable("training_watts nameplate is not a dict")
    _number(nameplate.get("share_above_nameplate"), "training_watts nameplate share_above_nameplate")
    pool = record["token_pool"]
    tokens = []
    for key in ("input_tokens", "output_tokens"):
        value = pool.get(key)
        if not isinstance(value, torch.Tensor) or value.dtype != torch.int64 or value.ndim != 1 or not len(value) \
                or (value < 0).any():
            raise _Unusable(f"token_pool {key} is not a non-empty 1-D tensor of token counts")
        tokens.append(value.numpy())
    if len(tokens[0]) != len(tokens[1]):
        raise _Unusable("token_pool input_tokens and output_tokens differ in length")
    try:
        ServingModel.from_dict(record["serving_model"])
    except (KeyError, ValueError, TypeError) as err:
        raise _Unusable(str(err).strip("'\"")) from None
    training_traffic = _training_traffic(record["training_traffic"])
    calibration = dict(record["calibration"])
    if calibration.get("method") not in config.CALIBRATIONS:
        raise _Unusable(f"calibration method {calibration.get('method')!r} is not one of "
                        f"{', '.join(config.CALIBRATIONS)}")
    _number(calibration.get("temperature"), "calibration temperature", positive=True)
    extras = {key: record.get(key, default) for key, default in (
        ("settings", {}), ("fingerprint", {}), ("metrics", {}), ("train_trace_indices", []),
        ("val_trace_indices", []), ("train_trace_sha256", []))}
    for key, value in extras.items():
        if not isinstance(value, type(extras[key])):
            raise _Unusable(f"{key} is a {type(value).__name__}")
    return Checkpoint(
        model_args=model_args, model_state=model_state, norm=norm, states=PowerStates(centroids),
        state_means=means, state_stds=stds, state_lows=lows, state_highs=highs, configuration=configuration, training_watts=training_watts,
        input_tokens=tokens[0], output_tokens=tokens[1], serving_model=dict(record["serving_model"]),
        server=dict(record["server"]), training_traffic=training_traffic, calibration=calibration,
        settings=dict(extras["settings"]), fingerprint=dict(extras["fingerprint"]),
        metrics=dict(extras["metrics"]), train_trace_indices=list(extras["train_trace_indices"]),
        val_trace_indices=list(extras["val_trace_indices"]),
        train_trace_sha256=[str(h) for h in extras["train_trace_sha256"]])


def _training_traffic(record: dict) -> dict:
    """The training traffic's ranges (extrapolation.training_ranges), checked: positive window
    and bin width, and per quantity finite, non-negative low <= high and mean."""
    from model.generation.extrapolation import QUANTITIES
    traffic = dict(record)
    for key in ("window_s", "bin_s"):
        _number(traffic.get(key), f"training_traffic {key}", positive=True)
    for name in QUANTITIES:
        entry = traffic.get(name)
        if not isinstance(entry, dict):
            raise _Unusable(f"training_traffic {name} is not a dict")
        low, high, mean = _numbers([entry.get("low"), entry.get("high"), entry.get("mean")],
                                   f"training_traffic {name} low/high/mean", 3, nonnegative=True)
        if low > high:
            raise _Unusable(f"training_traffic {name} low exceeds its high")
    return traffic
