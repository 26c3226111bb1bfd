"""Power states (docs/design.md, "Power states"): k-means on watts, numbered by ascending power.

    states = fit_power_states([t.power for t in train], num_states=6)
    labels = states.label(trace.power)              # 0 = lowest-power state, any trace
    means, stds = state_watts([t.power for t in train], [states.label(t.power) for t in train], states)
    lows, highs = state_ranges([t.power for t in train], [states.label(t.power) for t in train], states)

Only training watts fit the states; validation traces are labelled by the nearest centroid,
so their watts shape nothing.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from model import config
from model.errors import InputError


@dataclass
class PowerStates:
    centroids: np.ndarray   # (K,) watts, ascending

    @property
    def num_states(self) -> int:
        return len(self.centroids)

    def label(self, power: np.ndarray) -> np.ndarray:
        """State of each bin: the nearest centroid (centroids are sorted, so 0 is the lowest)."""
        distances = np.abs(np.asarray(power, dtype=np.float64)[:, None] - self.centroids[None, :])
        return distances.argmin(axis=1)


def fit_power_states(power: list[np.ndarray], num_states: int = config.NUM_STATES) -> PowerStates:
    """k-means over the bins of the given (training) traces' watts."""
    watts = np.concatenate(power)
    distinct = len(np.unique(watts))
    if distinct < num_states:
        raise InputError(f"only {distinct} distinct power values for {num_states} states; "
                         "lower --num_states")
    # imported here: sklearn.cluster takes seconds to import, and only fitting needs it (every
    # command that merely reads a checkpoint imports this module)
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        kmeans = KMeans(n_clusters=num_states, n_init=config.KMEANS_N_INIT,
                        random_state=config.KMEANS_RANDOM_STATE).fit(watts.reshape(-1, 1))
    return PowerStates(np.sort(kmeans.cluster_centers_.ravel()))


def state_watts(power: list[np.ndarray], labels: list[np.ndarray],
                states: PowerStates) -> tuple[np.ndarray, np.ndarray]:
    """Per-state mean and standard deviation of the watts of the given (training) bins.

    A state with no bins gets its centroid and the pooled within-state std.
    """
    watts = np.concatenate(power)
    state = np.concatenate(labels)
    k = states.num_states
    counts = np.bincount(state, minlength=k)
    means = states.centroids.astype(np.float64).copy()
    stds = np.zeros(k)
    for s in np.flatnonzero(counts):
        means[s] = watts[state == s].mean()
        stds[s] = watts[state == s].std()
    pooled = np.sqrt(np.sum(counts * stds**2) / counts.sum())
    stds[counts == 0] = pooled
    return means, stds


def state_ranges(power: list[np.ndarray], labels: list[np.ndarray],
                 states: PowerStates) -> tuple[np.ndarray, np.ndarray]:
    """Per-state lowest and highest watts of the given (training) bins: the watts each state was
    seen to draw, which bound what generation may draw in it (docs/design.md, "Generation").

    A state with no bins gets the whole range of the bins, so that no bound is made up.
    """
    watts = np.concatenate(power)
    state = np.concatenate(labels)
    lows = np.full(states.num_states, watts.min())
    highs = np.full(states.num_states, watts.max())
    for s in np.unique(state):
        lows[s] = watts[state == s].min()
        highs[s] = watts[state == s].max()
    return lows, highs
