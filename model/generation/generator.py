"""A power trace for a request stream nobody measured, from one trained configuration.

    gen = Generator(load_checkpoint("training_results/checkpoints/llama-3-8b_a100_tp1.pt"))
    trace = gen.generate(requests, n_bins=345_600, seed=0)      # trace.watts, trace.states

requests -> serving model (active requests, prefill and decode tokens per bin) -> the six
features -> the classifier's state probabilities -> sampled states -> watts from the training
states' mean and spread, held to the range each state drew in training. Nothing here reads
measured watts: the checkpoint holds all it needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr

from model import config
from model.checkpoint import Checkpoint
from model.classifiers.gru import PowerStateGRU, resolve_gru_impl
from model.classifiers.synthetic import states_from_uniforms, synthesize
from model.data import Trace, Workload
from model.features import raw_features
from model.generation.extrapolation import traffic_check
from model.generation.serving import ServingModel, trace_requests


@dataclass
class Requests:
    """A request stream: arrival seconds from the start (sorted), prompt and completion tokens."""
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)


def requests_of(trace: Trace) -> Requests:
    """A measured trace's recorded requests (serving.trace_requests), sorted by arrival."""
    arrival_s, input_tokens, output_tokens = trace_requests(trace)
    order = np.argsort(arrival_s, kind="stable")
    return Requests(arrival_s[order], input_tokens[order], output_tokens[order])


@dataclass
class GeneratedTrace:
    watts: np.ndarray     # (T,) watts summed over the configuration's GPUs
    states: np.ndarray    # (T,) sampled power state of each bin
    traffic: dict | None = None   # its traffic against the training traffic (extrapolation.traffic_check)


def served_workload(serving: ServingModel, requests: Requests, n_bins: int, bin_s: float,
                    count_from_bin: int = 0) -> tuple[Workload, int, int]:
    """The server-side series the serving model predicts, in the data files' definitions, with
    the number of requests arriving within the n_bins and of those unfinished at the end (both
    from bin `count_from_bin` on: a warm-up's requests are not the period's)."""
    series, n_requests, unfinished = serving.serve(requests.arrival_s, requests.input_tokens,
                                                   requests.output_tokens, n_bins, bin_s, count_from_bin)
    workload = Workload(timestamps=np.arange(n_bins) * bin_s, prefill_tokens=series["prefill_tokens"],
                        decode_tokens=series["decode_tokens"], active_requests=series["active_requests"],
                        request_times=np.asarray(requests.arrival_s, dtype=np.float64),
                        input_tokens=np.asarray(requests.input_tokens, dtype=np.float64),
                        output_tokens=np.asarray(requests.output_tokens, dtype=np.float64))
    return workload, n_requests, unfinished


def workload_from_requests(serving: ServingModel, requests: Requests, n_bins: int, bin_s: float) -> Workload:
    """The server-side series the serving model predicts, in the data files' definitions."""
    return served_workload(serving, requests, n_bins, bin_s)[0]


def _windows(T: int, window: int, context: int) -> list[tuple[int, int, int]]:
    """(core start, core end, chunk start) of each window of a T-bin trace; every chunk is
    window + 2 x context bins of real input, shifted inwards at the ends of the trace."""
    span = window + 2 * context
    return [(start, min(start + window, T), int(np.clip(start - context, 0, T - span)))
            for start in range(0, T, window)]


@torch.no_grad()
def windowed_log_probabilities_many(model: PowerStateGRU, traces: list[np.ndarray],
                                    window: int | None = None,
                                    context: int = config.INFERENCE_CONTEXT,
                                    batch: int | None = None) -> list[np.ndarray]:
    """(T_i, 6) features of several traces -> their (T_i, K) log state probabilities.

    A day at 0.25 s is 345,600 steps: stock nn.GRU stepping it as one sequence takes minutes,
    while cut into windows of `window` bins, each read with `context` real bins on both sides
    (whose outputs are dropped), its recurrence runs over a batch of windows at once; windows of
    several traces (a rack's servers) share batches of at most `batch` windows, which bounds
    memory (the defaults depend on model.gru_impl). A trace no longer than one window plus its
    context is run whole, exactly as in training, in batches with the traces of its length.
    """
    window = window or config.INFERENCE_WINDOW[model.gru_impl]
    batch = batch or config.INFERENCE_BATCH[model.gru_impl]
    span = window + 2 * context
    out = [np.empty((len(features), model.head.out_features)) for features in traces]
    by_span: dict[int, list] = {}               # span -> [(trace, core start, core end, chunk start)]
    for i, features in enumerate(traces):
        if len(features) <= span:
            by_span.setdefault(len(features), []).append((i, 0, len(features), 0))
        else:
            by_span.setdefault(span, []).extend((i, *w) for w in _windows(len(features), window, context))
    model.eval()
    for length, jobs in by_span.items():
        for first in range(0, len(jobs), batch):
            part = jobs[first:first + batch]
            chunk = np.stack([traces[i][c:c + length] for i, _, _, c in part])
            logits = model(torch.from_numpy(np.ascontiguousarray(chunk)))
            log_probs = torch.log_softmax(logits.double(), dim=2).numpy()
            for k, (i, start, end, c) in enumerate(part):
                out[i][start:end] = log_probs[k, start - c:end - c]
    return out


def windowed_log_probabilities(model: PowerStateGRU, features: np.ndarray,
                               window: int | None = None,
                               context: int = config.INFERENCE_CONTEXT) -> np.ndarray:
    """One trace's log state probabilities (see windowed_log_probabilities_many)."""
    return windowed_log_probabilities_many(model, [features], window, context)[0]


def ar1_normal(n: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    """n standard-normal values with lag-1 correlation rho (a stationary AR(1) process)."""
    from scipy.signal import lfilter      # here: scipy.signal takes a second to import
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
    states = states_from_uniforms(probabilities, ndtr(ar1_normal(len(probabilities), rho, rng)))
    noise = ar1_normal(len(probabilities), rho, rng)
    return states, state_means[states] + state_stds[states] * noise


def within_state_ranges(watts: np.ndarray, states: np.ndarray, ckpt: Checkpoint) -> np.ndarray:
    """Each bin's watts held to the range its state drew in training: a Gaussian draw has no
    bounds, and a bin below the idle floor or above the measured peak never happened."""
    return np.clip(watts, ckpt.state_lows[states], ckpt.state_highs[states])


def sample_trace(probabilities: np.ndarray, ckpt: Checkpoint, seed: int, sampling: str) -> GeneratedTrace:
    if sampling == "independent":
        # one independent draw per bin, as the training table's synthetic trace, then bounded
        watts, states = synthesize(probabilities, ckpt.state_means, ckpt.state_stds, seed, return_states=True)
    elif sampling == "coherent":
        rho = float(ckpt.training_watts["residual_lag1"])
        states, watts = sample_coherent(probabilities, ckpt.state_means, ckpt.state_stds, rho, seed)
    else:
        raise ValueError(f"unknown sampling {sampling!r}; choose from {', '.join(config.SAMPLINGS)}")
    return GeneratedTrace(within_state_ranges(watts, states, ckpt), states)


class Generator:
    """One configuration's generator, rebuilt from its checkpoint. The classifier runs on the CPU,
    with the fused GRU kernel where it builds (`gru_impl`, as a job's --gru_impl)."""

    def __init__(self, ckpt: Checkpoint, gru_impl: str = "auto"):
        self.ckpt = ckpt
        self.classifier = ckpt.classifier
        self.classifier.gru_impl = resolve_gru_impl(gru_impl, torch.device("cpu"))
        self.serving = ServingModel.from_dict(ckpt.serving_model)
        self.bin_s = float(ckpt.configuration["bin_s"])

    def workload(self, requests: Requests, n_bins: int) -> Workload:
        return workload_from_requests(self.serving, requests, n_bins, self.bin_s)

    def traffic(self, requests: Requests, n_bins: int) -> dict:
        """The traffic of `requests` over n_bins against what the checkpoint trained on
        (extrapolation.traffic_check), without generating watts."""
        workload, n_requests, unfinished = served_workload(self.serving, requests, n_bins, self.bin_s)
        return self._traffic(raw_features(workload), n_requests, unfinished)

    def _traffic(self, raw: np.ndarray, n_requests: int, unfinished: int) -> dict:
        return traffic_check(raw, self.bin_s, self.ckpt.training_traffic, n_requests, unfinished,
                             self.serving.max_batch)

    def probabilities(self, workload: Workload) -> np.ndarray:
        return self.probabilities_many([workload])[0]

    def probabilities_many(self, workloads: list[Workload]) -> list[np.ndarray]:
        """Several traces through the classifier in shared batches (a rack's nodes at once)."""
        return self._probabilities_of([raw_features(w) for w in workloads])

    def _probabilities_of(self, raw: list[np.ndarray]) -> list[np.ndarray]:
        features = [self.ckpt.norm.apply(r) for r in raw]
        return [np.exp(lp) for lp in windowed_log_probabilities_many(self.classifier, features)]

    def generate(self, requests: Requests, n_bins: int, seed: int,
                 sampling: str = config.GENERATION_SAMPLING) -> GeneratedTrace:
        return self.generate_many([requests], n_bins, [seed], sampling)[0]

    def generate_many(self, streams: list[Requests], n_bins: int, seeds: list[int],
                      sampling: str = config.GENERATION_SAMPLING, warmup_bins: int = 0) -> list[GeneratedTrace]:
        """One trace per request stream, each with its own seed; the same traces as generate()
        one by one, faster. Each carries its traffic check (`traffic`). The first `warmup_bins`
        of the n_bins are a warm-up (model/sites/site.py): generated, so that the queue and the
        classifier's context are full when the period starts, then dropped from the watts, the
        states and the traffic check alike (its requests are not the period's)."""
        served = [served_workload(self.serving, r, n_bins, self.bin_s, warmup_bins) for r in streams]
        raw = [raw_features(workload) for workload, _, _ in served]      # once, for the classifier and the check
        probabilities = self._probabilities_of(raw)
        traces = []
        for p, seed, r, (_, n, unfinished) in zip(probabilities, seeds, raw, served):
            trace = sample_trace(p, self.ckpt, seed, sampling)
            traces.append(GeneratedTrace(trace.watts[warmup_bins:], trace.states[warmup_bins:],
                                         self._traffic(r[warmup_bins:], n, unfinished)))
        return traces
