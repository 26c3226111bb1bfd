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

from model.classifiers.gru import PowerStateGRU
from model.errors import InputError
from model.features import FeatureNorm
from model.outputs import atomic_path
from model.states import PowerStates

FORMAT = "powertrace-classifier"
VERSION = 3      # 3: configuration records the GPU nameplate watts
# What a reader needs; a checkpoint missing any of them was written before the format had it.
REQUIRED = ("format", "version", "model_args", "model_state", "feature_norm", "states",
            "configuration", "training_watts", "token_pool", "serving_model")


@dataclass
class Checkpoint:
    model_args: dict              # PowerStateGRU(**model_args) rebuilds the classifier
    model_state: dict             # its state_dict (gru.* loads into a plain nn.GRU)
    norm: FeatureNorm
    states: PowerStates
    state_means: np.ndarray       # (K,) watts of each state on the training bins
    state_stds: np.ndarray        # (K,)
    configuration: dict           # model, hardware, tp, job_name, bin_s
    training_watts: dict          # min, max, mean of the training traces' watts
    input_tokens: np.ndarray      # (R,) the training requests' prompt lengths ...
    output_tokens: np.ndarray     # (R,) ... and completion lengths, pairwise
    serving_model: dict           # ServingModel.to_dict()
    settings: dict = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    train_trace_indices: list = field(default_factory=list)
    val_trace_indices: list = field(default_factory=list)

    @property
    def classifier(self) -> PowerStateGRU:
        """The trained classifier in eval mode, on the CPU with torch's nn.GRU."""
        model = PowerStateGRU(**self.model_args, gru_impl="torch")
        model.load_state_dict(self.model_state)
        return model.eval()


def save_checkpoint(path: Path | str, ckpt: Checkpoint) -> None:
    record = {
        "format": FORMAT, "version": VERSION, "model_args": dict(ckpt.model_args),
        "model_state": {k: v.detach().cpu() for k, v in ckpt.model_state.items()},
        "feature_norm": ckpt.norm.to_dict(),
        "states": {"centroids": ckpt.states.centroids.tolist(), "means": np.asarray(ckpt.state_means).tolist(),
                   "stds": np.asarray(ckpt.state_stds).tolist()},
        "configuration": dict(ckpt.configuration), "training_watts": dict(ckpt.training_watts),
        "token_pool": {"input_tokens": torch.as_tensor(np.asarray(ckpt.input_tokens, dtype=np.int64)),
                       "output_tokens": torch.as_tensor(np.asarray(ckpt.output_tokens, dtype=np.int64))},
        "serving_model": dict(ckpt.serving_model), "settings": dict(ckpt.settings),
        "fingerprint": dict(ckpt.fingerprint), "metrics": {k: float(v) for k, v in ckpt.metrics.items()},
        "train_trace_indices": list(ckpt.train_trace_indices),
        "val_trace_indices": list(ckpt.val_trace_indices),
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)


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
    """Rebuild everything a checkpoint holds; InputError naming what is missing when it is from
    an older version of the pipeline or is not a checkpoint at all."""
    record = read_record(path)
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise InputError(f"{path}: checkpoint lacks {', '.join(repr(k) for k in missing)} (written "
                         "by an older version of the pipeline, or not a classifier checkpoint); "
                         "retrain the job to get one that generation can use")
    if record["format"] != FORMAT or record["version"] != VERSION:
        raise InputError(f"{path}: checkpoint format {record['format']!r} version {record['version']!r}; "
                         f"this version reads {FORMAT!r} version {VERSION}")
    states = record["states"]
    pool = record["token_pool"]
    return Checkpoint(
        model_args=dict(record["model_args"]), model_state=record["model_state"],
        norm=FeatureNorm.from_dict(record["feature_norm"]),
        states=PowerStates(np.asarray(states["centroids"], dtype=np.float64)),
        state_means=np.asarray(states["means"], dtype=np.float64),
        state_stds=np.asarray(states["stds"], dtype=np.float64),
        configuration=dict(record["configuration"]), training_watts=dict(record["training_watts"]),
        input_tokens=pool["input_tokens"].numpy(), output_tokens=pool["output_tokens"].numpy(),
        serving_model=dict(record["serving_model"]), settings=dict(record.get("settings", {})),
        fingerprint=dict(record.get("fingerprint", {})), metrics=dict(record.get("metrics", {})),
        train_trace_indices=list(record.get("train_trace_indices", [])),
        val_trace_indices=list(record.get("val_trace_indices", [])))
