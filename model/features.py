"""The six per-bin features and the seeded train/validation split (docs/design.md, "Features").

    train, val = split_traces(traces, val_split=0.2, seed=0)
    norm = FeatureNorm.fit([raw_features(t.workload) for t in train])
    x = norm.apply(raw_features(trace.workload))     # (L, 6) float32

Features are computed from a Workload, which holds no watts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model import config
from model.data import Workload
from model.errors import InputError

STD_FLOOR = 1e-6


def bin_edges(timestamps: np.ndarray) -> np.ndarray:
    """Bin i covers [t_i, t_{i+1}); the last bin is one median step wide."""
    step = np.median(np.diff(timestamps))
    return np.append(timestamps, timestamps[-1] + step)


def bin_range_sums(first: np.ndarray, stop: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Per bin k of n_bins, the summed weights of the ranges [first, stop) that hold k (bin indices,
    first and stop within 0..n_bins): how the server-side series count what spans several bins."""
    change = np.bincount(first, weights, minlength=n_bins + 1) - np.bincount(stop, weights, minlength=n_bins + 1)
    return np.cumsum(change[:n_bins])


def raw_features(trace: Workload) -> np.ndarray:
    """(L, 6) counts before log1p: arrivals, their input and output tokens, active requests,
    prefill tokens, decode tokens. Requests outside the trace's bins count nowhere."""
    edges = bin_edges(trace.timestamps)
    n_bins = len(trace.timestamps)
    which_bin = np.searchsorted(edges, trace.request_times, side="right") - 1
    inside = (which_bin >= 0) & (which_bin < n_bins)
    which_bin = which_bin[inside]
    arrivals = np.bincount(which_bin, minlength=n_bins)
    arrival_in = np.bincount(which_bin, weights=trace.input_tokens[inside], minlength=n_bins)
    arrival_out = np.bincount(which_bin, weights=trace.output_tokens[inside], minlength=n_bins)
    return np.stack([arrivals, arrival_in, arrival_out, trace.active_requests,
                     trace.prefill_tokens, trace.decode_tokens], axis=1).astype(np.float64)


@dataclass
class FeatureNorm:
    """log1p, then z-score with statistics of the training bins (saved with the checkpoint)."""
    mean: np.ndarray  # (6,)
    std: np.ndarray   # (6,)

    @classmethod
    def fit(cls, train_features: list[np.ndarray]) -> "FeatureNorm":
        logged = np.log1p(np.concatenate(train_features))
        return cls(logged.mean(axis=0), np.maximum(logged.std(axis=0), STD_FLOOR))

    def apply(self, features: np.ndarray) -> np.ndarray:
        return ((np.log1p(features) - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(),
                "names": list(config.FEATURE_NAMES)}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureNorm":
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


def split_named(traces: list, rows: tuple[int, ...], where: str, elsewhere: frozenset = frozenset()) -> tuple[list, list]:
    """Validation = the traces at the named rows of the file (Trace.index), training = the rest:
    a split the researcher sets (leave one kind of traffic out). Rows in `elsewhere` (the file's
    other TPs, with --tp -1) are skipped; `where` names the file and TP for the one-line errors:
    a row the file does not hold, no named row of this TP, or no training trace left."""
    held = sorted(t.index for t in traces)
    listed = ", ".join(map(str, held[:20])) + (f", ... ({len(held)} rows)" if len(held) > 20 else "")
    unknown = [r for r in rows if r not in held and r not in elsewhere]
    if unknown:
        raise InputError(f"--val_traces: {where} has no row {', '.join(map(str, unknown))} "
                         f"(its rows: {listed})")
    val = [t for t in traces if t.index in rows]
    if not val:
        raise InputError(f"--val_traces {','.join(map(str, rows))} names no trace of {where} "
                         f"(its rows: {listed})")
    train = [t for t in traces if t.index not in rows]
    if not train:
        raise InputError(f"--val_traces names every trace of {where}; none is left to train on")
    return train, val


def split_traces(traces: list, val_split: float, seed: int) -> tuple[list, list]:
    """Permute with default_rng(seed); the first max(1, round(val_split*n)) are validation."""
    n = len(traces)
    if n < 2:
        raise InputError(f"{n} trace(s): at least 2 are needed to train and validate")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(val_split * n))
    if n_val >= n:
        raise InputError(f"--val_split {val_split} leaves no training trace out of {n}")
    return [traces[i] for i in order[n_val:]], [traces[i] for i in order[:n_val]]


def window_means(watts: np.ndarray, factor: int) -> np.ndarray:
    """Means over consecutive windows of `factor` values along the last axis; the length must be
    a multiple of factor (the period is padded to whole 15-minute windows)."""
    watts = np.asarray(watts, dtype=np.float64)
    if watts.shape[-1] % factor:
        raise ValueError(f"{watts.shape[-1]} values do not split into windows of {factor}")
    return watts.reshape(*watts.shape[:-1], watts.shape[-1] // factor, factor).mean(axis=-1)
