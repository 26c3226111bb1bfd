"""A power trace for a request stream nobody measured, from one trained configuration.

    gen = Generator(load_checkpoint("training_results/checkpoints/llama-3-8b_a100_tp1.pt"))
    trace = gen.generate(requests, n_bins=345_600, seed=0)      # trace.watts, trace.states

requests -> serving model (active requests, prefill and decode tokens per bin) -> the six
features -> the classifier's state probabilities -> sampled states -> watts from the training
states' mean and spread. Nothing here reads measured watts: the checkpoint holds all it needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import lfilter
from scipy.special import ndtr

from model import config
from model.checkpoint import Checkpoint
from model.classifiers.gru import PowerStateGRU, state_log_probabilities
from model.classifiers.synthetic import synthesize
from model.data import Workload
from model.features import raw_features
from model.generation.serving import ServingModel

SAMPLINGS = ("independent", "coherent")


@dataclass
class Requests:
    """A request stream: arrival seconds from the start (sorted), prompt and completion tokens."""
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)


@dataclass
class GeneratedTrace:
    watts: np.ndarray     # (T,) watts summed over the configuration's GPUs
    states: np.ndarray    # (T,) sampled power state of each bin


def workload_from_requests(serving: ServingModel, requests: Requests, n_bins: int, bin_s: float) -> Workload:
    """The server-side series the serving model predicts, in the data files' definitions."""
    series = serving.simulate(requests.arrival_s, requests.input_tokens, requests.output_tokens, n_bins, bin_s)
    return Workload(timestamps=np.arange(n_bins) * bin_s, prefill_tokens=series["prefill_tokens"],
                    decode_tokens=series["decode_tokens"], active_requests=series["active_requests"],
                    request_times=np.asarray(requests.arrival_s, dtype=np.float64),
                    input_tokens=np.asarray(requests.input_tokens, dtype=np.float64),
                    output_tokens=np.asarray(requests.output_tokens, dtype=np.float64))


@torch.no_grad()
def windowed_log_probabilities(model: PowerStateGRU, features: np.ndarray,
                               window: int = config.INFERENCE_WINDOW,
                               context: int = config.INFERENCE_CONTEXT) -> np.ndarray:
    """(T, 6) features -> (T, K) log state probabilities, in windows run as one batch.

    A day at 0.25 s is 345,600 steps: stepped one bin at a time it takes minutes, while cut
    into windows of `window` bins, each read with `context` real bins on both sides (whose
    outputs are dropped), the recurrence runs once over a batch. A trace no longer than one
    window plus its context is run whole, exactly as in training.
    """
    T = len(features)
    span = window + 2 * context
    if T <= span:
        return state_log_probabilities(model, features)
    starts = np.arange(0, T, window)
    chunk_starts = np.clip(starts - context, 0, T - span)
    batch = np.stack([features[s:s + span] for s in chunk_starts])
    model.eval()
    logits = model(torch.from_numpy(np.ascontiguousarray(batch)))
    log_probs = torch.log_softmax(logits.double(), dim=2).numpy()
    out = np.empty((T, log_probs.shape[2]))
    for i, (start, chunk_start) in enumerate(zip(starts, chunk_starts)):
        end = min(start + window, T)
        out[start:end] = log_probs[i, start - chunk_start:end - chunk_start]
    return out


def ar1_normal(n: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    """n standard-normal values with lag-1 correlation rho (a stationary AR(1) process)."""
    eps = rng.standard_normal(n)
    if rho == 0 or n == 0:
        return eps
    scale = np.sqrt(1.0 - rho * rho)
    eps[0] /= scale           # so that z_0 = eps_0 has unit variance, like every later z_t
    return lfilter([scale], [1.0, -rho], eps)


def sample_coherent(probabilities: np.ndarray, state_means: np.ndarray, state_stds: np.ndarray,
                    rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """States and watts whose draws are correlated in time (lag-1 correlation rho), while each
    bin's state still follows its own probabilities exactly: the uniform that picks the state
    and the within-state noise are both Gaussian AR(1) processes (a Gaussian copula)."""
    rng = np.random.default_rng(seed)
    u = ndtr(ar1_normal(len(probabilities), rho, rng))
    cumulative = np.cumsum(probabilities, axis=1)
    states = np.minimum((cumulative < (u * cumulative[:, -1])[:, None]).sum(axis=1), probabilities.shape[1] - 1)
    noise = ar1_normal(len(probabilities), rho, rng)
    return states, state_means[states] + state_stds[states] * noise


def sample_trace(probabilities: np.ndarray, ckpt: Checkpoint, seed: int, sampling: str) -> GeneratedTrace:
    if sampling == "independent":
        # one independent draw per bin, exactly as the training table's synthetic trace
        watts, states = synthesize(probabilities, ckpt.state_means, ckpt.state_stds, seed, return_states=True)
        return GeneratedTrace(watts, states)
    if sampling == "coherent":
        rho = float(ckpt.training_watts["residual_lag1"])
        states, watts = sample_coherent(probabilities, ckpt.state_means, ckpt.state_stds, rho, seed)
        return GeneratedTrace(watts, states)
    raise ValueError(f"unknown sampling {sampling!r}; choose from {', '.join(SAMPLINGS)}")


class Generator:
    """One configuration's generator, rebuilt from its checkpoint."""

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self.classifier = ckpt.classifier
        self.serving = ServingModel.from_dict(ckpt.serving_model)
        self.bin_s = float(ckpt.configuration["bin_s"])

    def workload(self, requests: Requests, n_bins: int) -> Workload:
        return workload_from_requests(self.serving, requests, n_bins, self.bin_s)

    def probabilities(self, workload: Workload) -> np.ndarray:
        features = self.ckpt.norm.apply(raw_features(workload))
        return np.exp(windowed_log_probabilities(self.classifier, features))

    def generate(self, requests: Requests, n_bins: int, seed: int,
                 sampling: str = config.GENERATION_SAMPLING) -> GeneratedTrace:
        return sample_trace(self.probabilities(self.workload(requests, n_bins)), self.ckpt, seed, sampling)
