"""Synthetic power trace from the classifier (docs/design.md, "Synthetic trace").

    watts = synthesize(probabilities, state_means, state_stds, seed=seed + trace_index)

It sees only the classifier's per-bin state probabilities and the training traces' per-state
watt statistics, never the real watts of the trace it imitates.
"""
from __future__ import annotations

import numpy as np


def states_from_uniforms(probabilities: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The state of each bin whose Categorical(p_t) the uniform u_t in [0, 1) picks, by inverting
    the row's cumulative distribution (rows need not sum exactly to 1)."""
    cumulative = np.cumsum(probabilities, axis=1)
    states = (cumulative < (u * cumulative[:, -1])[:, None]).sum(axis=1)
    return np.minimum(states, probabilities.shape[1] - 1)


def sample_states(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One independent draw from Categorical(p_t) per bin."""
    return states_from_uniforms(probabilities, rng.random(len(probabilities)))


def synthesize(probabilities: np.ndarray, state_means: np.ndarray, state_stds: np.ndarray,
               seed: int, return_states: bool = False):
    """(T, K) state probabilities -> (T,) synthetic watts: mu[s_t] + sigma[s_t] * e_t
    (and the sampled states s_t, with return_states)."""
    rng = np.random.default_rng(seed)
    states = sample_states(probabilities, rng)
    noise = rng.standard_normal(len(probabilities))
    watts = state_means[states] + state_stds[states] * noise
    return (watts, states) if return_states else watts
