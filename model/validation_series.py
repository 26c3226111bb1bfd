"""The `synthetic/{job}.npz` file: a job's validation traces for the figures; writer and reader.

    write_validation_series(path, val_traces, log_probs, true_states, synthetic, means, stds,
                            sampled_states=sampled, state_centroids=centroids)
    traces = read_validation_series(path)     # one dict of arrays per validation trace

Per-bin series are concatenated in trace order; `trace_lengths` splits them again. The per-job
arrays (state_means, state_stds, state_centroids) come with every trace's dict. The file carries
its layout's version (`series_version`); a file of another version is refused with the advice to
rerun the job, as checkpoints are, rather than read with keys guessed or missing.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from model.data import Trace
from model.errors import InputError
from model.outputs import write_npz

SERIES_VERSION = 2       # 2: sampled_states and state_centroids always present, the version stamped
SERIES_KEYS = ("trace_indices", "trace_lengths", "time_s", "real_watts", "synthetic_watts",
               "true_states", "predicted_states", "probabilities", "sampled_states")
PER_TRACE_KEYS = ("trace_indices", "trace_lengths")
PER_STATE_KEYS = ("state_means", "state_stds", "state_centroids")   # one value per state


def write_validation_series(path: Path | str, val: list[Trace], probabilities: list[np.ndarray],
                            true_states: list[np.ndarray], synthetic: list[np.ndarray],
                            state_means: np.ndarray, state_stds: np.ndarray, *,
                            sampled_states: list[np.ndarray], state_centroids: np.ndarray) -> None:
    write_npz(path, {
        "series_version": np.array(SERIES_VERSION),
        "trace_indices": np.array([t.index for t in val], dtype=np.int64),
        "trace_lengths": np.array([len(t) for t in val], dtype=np.int64),
        "time_s": np.concatenate([t.timestamps - t.timestamps[0] for t in val]),
        "real_watts": np.concatenate([t.power for t in val]),
        "synthetic_watts": np.concatenate(synthetic),
        "true_states": np.concatenate(true_states).astype(np.int64),
        "predicted_states": np.concatenate([p.argmax(axis=1) for p in probabilities]).astype(np.int64),
        "probabilities": np.concatenate(probabilities),
        "state_means": np.asarray(state_means, dtype=float),
        "state_stds": np.asarray(state_stds, dtype=float),
        "sampled_states": np.concatenate(sampled_states).astype(np.int64),
        "state_centroids": np.asarray(state_centroids, dtype=float),
    })


def read_validation_series(path: Path | str) -> list[dict[str, np.ndarray]]:
    """A job's synthetic/{job}.npz split back into one dict of arrays per validation trace."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise InputError(f"{path}: not a readable .npz file ({err})") from None
    version = arrays.get("series_version")
    if version is None or version.shape != () or int(version) != SERIES_VERSION:
        raise InputError(f"{path}: validation series of another version of the pipeline (version "
                         f"{'none' if version is None else version.tolist()}; this reads {SERIES_VERSION}); "
                         "rerun the job to write it again")
    missing = [key for key in SERIES_KEYS + PER_STATE_KEYS if key not in arrays]
    if missing:
        raise InputError(f"{path}: key {missing[0]!r} is missing")
    lengths = arrays["trace_lengths"]
    n_bins = int(lengths.sum())
    per_bin = [k for k in SERIES_KEYS if k not in PER_TRACE_KEYS]
    wrong = [k for k in per_bin if len(arrays[k]) != n_bins]
    if wrong or len(arrays["trace_indices"]) != len(lengths) or arrays["probabilities"].ndim != 2:
        raise InputError(f"{path}: the arrays disagree in length ({wrong[0] if wrong else 'trace_indices'} "
                         f"against trace_lengths, which sum to {n_bins})")
    num_states = arrays["probabilities"].shape[1]
    wrong = [k for k in PER_STATE_KEYS if arrays[k].shape != (num_states,)]
    if wrong:
        raise InputError(f"{path}: {wrong[0]!r} has {arrays[wrong[0]].size} values for {num_states} states")
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [{"trace_index": int(arrays["trace_indices"][i]),
             **{k: arrays[k][bounds[i]:bounds[i + 1]] for k in per_bin},
             **{k: arrays[k] for k in PER_STATE_KEYS}}
            for i in range(len(lengths))]
