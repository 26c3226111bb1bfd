"""Synthetic power trace from the classifier (docs/design.md, "Synthetic trace").

    watts = synthesize(probabilities, state_means, state_stds, seed=seed + trace_index)

It sees only the classifier's per-bin state probabilities and the training traces' per-state
watt statistics, never the real watts of the trace it imitates.
"""
from __future__ import annotations

import numpy as np


def sample_states(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw from Categorical(p_t) per bin, by inverting each row's cumulative distribution."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(len(probabilities)) * cumulative[:, -1]
    states = (cumulative < u[:, None]).sum(axis=1)
    return np.minimum(states, probabilities.shape[1] - 1)


def synthesize(probabilities: np.ndarray, state_means: np.ndarray, state_stds: np.ndarray,
               seed: int, return_states: bool = False):
    """(T, K) state probabilities -> (T,) synthetic watts: mu[s_t] + sigma[s_t] * e_t
    (and the sampled states s_t, with return_states)."""
    rng = np.random.default_rng(seed)
    states = sample_states(probabilities, rng)
    noise = rng.standard_normal(len(probabilities))
    watts = state_means[states] + state_stds[states] * noise
    return (watts, states) if return_states else watts
