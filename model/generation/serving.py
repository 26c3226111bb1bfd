"""A fitted continuous-batching server: request stream -> per-bin active requests, prefill and
decode tokens, in the data files' definitions.

    serving = fit_serving_model(train_traces, bin_s=0.25)
    series = serving.simulate(arrival_s, input_tokens, output_tokens, n_bins=345_600)
    scores = serving_fidelity(serving, val_traces)      # serving_active_r, ...

The server, one bin of `bin_s` seconds at a time:
- Requests queue first come first served. Prefill processes prompt tokens at `prefill_tok_s`;
  a prompt may span bins. With `max_batch` > 0 at most that many requests are in progress
  (prefilling or decoding): the rest wait until one finishes.
- A prefilled request decodes from the bin its prefill completes in. Every decoding request
  gains the same number of tokens per bin: the bin's time left over from prefill divided by
  the step time `step_s * (1 + step_growth * batch)`. A request finishes in the bin in which it
  has produced all its completion tokens.

Series, per bin, as the data files count them:
- active_requests: requests that arrived by the end of the bin and had not finished before it.
- decode_tokens: the summed completion lengths of the requests decoding in the bin.
- prefill_tokens: with `prefill_counting="processed"` the prompt tokens processed in the bin
  (the demo files; they sum to the prompts prefilled); with "pending" the summed prompt lengths
  of the requests that arrived and had not yet finished prefill in the bin (files built from
  request timings, where each prompt counts in every bin from arrival to its first token).

Every decoding request advances at the same rate, so decoding is kept as one shared token clock
and a heap of the clock values at which requests finish: one pass over the bins and one heap
operation per request, so a day at 0.25 s (345,600 bins) stays fast, with memory linear in bins
and requests (`python -m model.generate` prints how long a trace took).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import differential_evolution

from model import config
from model.data import Trace
from model.features import bin_range_sums

SERVING_SERIES = ("active_requests", "prefill_tokens", "decode_tokens")
PREFILL_COUNTINGS = ("processed", "pending")
FIDELITY_KEYS = ("serving_active_r", "serving_active_mean_err_pct", "serving_prefill_r",
                 "serving_prefill_mean_err_pct", "serving_decode_r", "serving_decode_mean_err_pct")
_SHORT = {"active_requests": "active", "prefill_tokens": "prefill", "decode_tokens": "decode"}

# Generic search space of the fit, searched in log space and wide enough for any LLM and GPU:
# prompt tokens per second, seconds per decode step at batch 1, step growth per batched request.
_FIT_BOUNDS = ((1e2, 1e7), (1e-4, 2.0), (1e-5, 1.0))
_FIT_POPSIZE = 6      # differential evolution: population of 6 x 4 parameters
_FIT_MAXITER = 30     # generations: the demo files settle well within them
# A fitted batch cap is kept only when it lowers the training loss by more than this share:
# with data that never fills a batch every large cap fits alike, and "no cap" is the simpler answer.
_CAP_MIN_GAIN = 0.01


@dataclass
class ServingModel:
    """Parameters of the simulated server (see the module docstring for their meaning)."""
    prefill_tok_s: float          # prompt tokens prefilled per second
    step_s: float                 # decode step time with one request decoding, seconds
    step_growth: float            # relative step time growth per request in the batch
    max_batch: int = 0            # most requests in progress at once; 0: no limit
    prefill_counting: str = "processed"

    def __post_init__(self):
        for name in ("prefill_tok_s", "step_s", "step_growth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ValueError(f"serving model {name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value) or value < 0 or (value == 0 and name != "step_growth"):
                raise ValueError(f"serving model {name} must be a finite positive number, got {value!r}")
            setattr(self, name, value)
        if (isinstance(self.max_batch, bool) or not isinstance(self.max_batch, (int, np.integer))
                or self.max_batch < 0):
            raise ValueError(f"serving model max_batch must be a whole number >= 0, got {self.max_batch!r}")
        self.max_batch = int(self.max_batch)
        if self.prefill_counting not in PREFILL_COUNTINGS:
            raise ValueError(f"serving model prefill_counting must be one of "
                             f"{', '.join(PREFILL_COUNTINGS)}, got {self.prefill_counting!r}")

    def to_dict(self) -> dict:
        """Plain str/int/float values only, so a weights-only torch.load reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ServingModel":
        """KeyError when a parameter is missing; ValueError for unknown keys or bad values."""
        if not isinstance(d, dict):
            raise ValueError(f"serving model must be a dict, got {type(d).__name__}")
        names = list(cls.__dataclass_fields__)
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"serving model has unknown key(s) {', '.join(map(repr, unknown))}")
        missing = [n for n in names if n not in d]
        if missing:
            raise KeyError(f"serving model lacks {', '.join(map(repr, missing))}")
        return cls(**{n: d[n] for n in names})

    def simulate(self, arrival_s: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray,
                 n_bins: int, bin_s: float = config.SAMPLE_PERIOD_S) -> dict[str, np.ndarray]:
        """The three SERVING_SERIES, each float64 (n_bins,), for requests arriving at `arrival_s`
        seconds from the start of bin 0.

        Requests are served in arrival order (the input need not be sorted; ties keep their
        order). Requests arriving at or after n_bins * bin_s are ignored; those arriving before 0
        count as arriving at 0. Requests still queued or decoding at the end count to the last
        bin. Raises ValueError for arrays of different lengths, non-finite arrivals, negative or
        non-finite token counts, a negative n_bins or a non-positive bin_s.
        """
        return self.serve(arrival_s, input_tokens, output_tokens, n_bins, bin_s)[0]

    def serve(self, arrival_s: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray,
              n_bins: int, bin_s: float = config.SAMPLE_PERIOD_S,
              count_from_bin: int = 0) -> tuple[dict[str, np.ndarray], int, int]:
        """simulate's series, the number of requests arriving within the window and how many of
        them are still unfinished (queued, prefilling or decoding) when it ends: generation
        reports these (model/generation/extrapolation.py). Both counts leave out requests that
        arrive before bin `count_from_bin` (a warm-up's). Same inputs and errors as simulate."""
        stream = _stream(arrival_s, input_tokens, output_tokens, n_bins, bin_s)
        join_bin, finish_bin, processed = self._serve(stream)
        counted = stream.arrival_bin >= count_from_bin
        return (self._series(stream, join_bin, finish_bin, processed), int(np.count_nonzero(counted)),
                int(np.count_nonzero(counted & (finish_bin >= stream.n_bins))))

    def _simulate(self, stream: "_Stream") -> dict[str, np.ndarray]:
        return self._series(stream, *self._serve(stream))

    def _series(self, stream: "_Stream", join_bin: np.ndarray, finish_bin: np.ndarray,
                processed: np.ndarray) -> dict[str, np.ndarray]:
        n_bins = stream.n_bins
        if self.prefill_counting == "processed":
            prefill = processed
        else:
            prefill = _interval_sums(stream.arrival_bin, join_bin, stream.input_tokens, n_bins)
        return {"active_requests": _interval_sums(stream.arrival_bin, finish_bin, stream.ones, n_bins),
                "prefill_tokens": prefill,
                "decode_tokens": _interval_sums(join_bin, finish_bin, stream.output_tokens, n_bins)}

    def _serve(self, stream: "_Stream") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per request the bin its prefill completes in and the bin it finishes in (n_bins: not
        within the window), and per bin the prompt tokens processed."""
        n_bins, bin_s = stream.n_bins, stream.bin_s
        n_requests = len(stream.arrival_bin)
        join_bin = np.full(n_requests, n_bins, dtype=np.int64)
        finish_bin = np.full(n_requests, n_bins, dtype=np.int64)
        processed = np.zeros(n_bins)
        if n_requests == 0 or n_bins == 0:
            return join_bin, finish_bin, processed
        arrived_by, cum_input, outputs = stream.arrived_by, stream.cum_input, stream.outputs
        joins: list[tuple[int, int]] = []       # (request, bin), turned into arrays at the end
        finishes: list[tuple[int, int]] = []
        budget = self.prefill_tok_s * bin_s
        step_s, growth = self.step_s, self.step_growth
        cap = self.max_batch if self.max_batch > 0 else n_requests
        heap: list[tuple[float, int]] = []     # (token clock at which the request is done, request)
        clock = 0.0        # tokens each decoding request has gained since the start
        prefilled = 0.0    # prompt tokens processed since the start
        head = 0           # first request whose prefill is not complete
        n_finished = 0
        push, pop = heapq.heappush, heapq.heappop
        for b in range(n_bins):
            # all finished requests precede `head`, so this admits at most `cap` unfinished ones
            limit = arrived_by[b]
            if limit > n_finished + cap:
                limit = n_finished + cap
            target = cum_input[limit]
            done = target - prefilled
            if done > 0.0:
                if done > budget:
                    done = budget
                    prefilled += done
                else:
                    prefilled = target     # exactly, so the comparison below cannot miss by an ulp
                processed[b] = done
            else:
                done = 0.0
            while head < limit and cum_input[head + 1] <= prefilled:
                push(heap, (clock + outputs[head], head))
                joins.append((head, b))
                head += 1
            if heap:
                clock += (1.0 - done / budget) * bin_s / (step_s * (1.0 + growth * len(heap)))
                while heap and heap[0][0] <= clock:
                    finishes.append((pop(heap)[1], b))
                    n_finished += 1
        for out, pairs in ((join_bin, joins), (finish_bin, finishes)):
            if pairs:
                index = np.array(pairs, dtype=np.int64)
                out[index[:, 0]] = index[:, 1]
        return join_bin, finish_bin, processed


@dataclass
class _Stream:
    """Requests checked, sorted by arrival and binned, with what the bin loop reads as Python
    lists (indexing a list one element at a time is much faster than indexing numpy)."""
    n_bins: int
    bin_s: float
    arrival_bin: np.ndarray     # (R,) int64, sorted
    input_tokens: np.ndarray    # (R,)
    output_tokens: np.ndarray   # (R,)
    ones: np.ndarray            # (R,)
    arrived_by: list            # (n_bins,) requests arrived by the end of each bin
    cum_input: list             # (R + 1,) prompt tokens of the first r requests
    outputs: list               # (R,)


def _stream(arrival_s, input_tokens, output_tokens, n_bins: int, bin_s: float) -> _Stream:
    """Edge cases and errors as ServingModel.simulate."""
    arrival_s, input_tokens, output_tokens = _checked_requests(arrival_s, input_tokens, output_tokens)
    if isinstance(n_bins, bool) or int(n_bins) != n_bins or n_bins < 0:
        raise ValueError(f"n_bins must be a whole number >= 0, got {n_bins!r}")
    n_bins = int(n_bins)
    if not (math.isfinite(bin_s) and bin_s > 0):
        raise ValueError(f"bin_s must be a positive number of seconds, got {bin_s!r}")
    inside = arrival_s < n_bins * bin_s
    order = np.argsort(arrival_s[inside], kind="stable")
    arrival_s, input_tokens, output_tokens = (a[inside][order] for a in (arrival_s, input_tokens, output_tokens))
    # clipped: a request just below the end may round into bin n_bins
    arrival_bin = np.clip(np.floor(arrival_s / bin_s), 0, max(n_bins - 1, 0)).astype(np.int64)
    return _Stream(n_bins, float(bin_s), arrival_bin, input_tokens, output_tokens, np.ones(len(arrival_bin)),
                   np.searchsorted(arrival_bin, np.arange(n_bins), side="right").tolist(),
                   np.concatenate([[0.0], np.cumsum(input_tokens)]).tolist(), output_tokens.tolist())


def _checked_requests(arrival_s, input_tokens, output_tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = []
    for name, values in (("arrival times", arrival_s), ("input tokens", input_tokens),
                         ("output tokens", output_tokens)):
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"request {name} must be numbers") from None
        if array.ndim != 1:
            raise ValueError(f"request {name} must be a 1-D array, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"request {name} must be finite numbers (found NaN or infinity)")
        if name != "arrival times" and np.any(array < 0):
            raise ValueError(f"request {name} must not be negative (found {array.min():g})")
        arrays.append(array)
    if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]):
        raise ValueError(f"requests need one arrival time, input and output token count each; got "
                         f"{len(arrays[0])}, {len(arrays[1])} and {len(arrays[2])}")
    return arrays[0], arrays[1], arrays[2]


def _interval_sums(first: np.ndarray, last: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Per bin, the summed weights of the inclusive bin ranges [first, last]; ranges starting at
    n_bins or later count nowhere, and a last bin past the end counts to the end."""
    keep = first < n_bins
    return bin_range_sums(first[keep], np.minimum(last[keep], n_bins - 1) + 1, weights[keep], n_bins)


def trace_bin_s(trace: Trace, default: float = config.SAMPLE_PERIOD_S) -> float:
    """The trace's bin width: its median timestamp step (`default` for a single bin)."""
    if len(trace.timestamps) < 2:
        return default
    return float(np.median(np.diff(trace.timestamps)))


def trace_requests(trace: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trace's requests with arrivals in seconds from its first bin."""
    return (np.asarray(trace.request_times, dtype=np.float64) - float(trace.timestamps[0]),
            np.asarray(trace.input_tokens, dtype=np.float64), np.asarray(trace.output_tokens, dtype=np.float64))


def simulate_trace(model: ServingModel, trace: Trace) -> dict[str, np.ndarray]:
    """The model's series for a trace's recorded requests, on the trace's bins."""
    return model.simulate(*trace_requests(trace), len(trace), trace_bin_s(trace))


def measured_series(trace: Trace) -> dict[str, np.ndarray]:
    return {name: np.asarray(getattr(trace, name), dtype=np.float64) for name in SERVING_SERIES}


def prefill_counting_of(traces: list[Trace]) -> str:
    """How the traces count prefill tokens, read from the data. Processed tokens never sum to more
    than the prompts that arrived in the window, give or take the rounding of each bin to whole
    tokens (at most half a token per nonzero bin); pending counts hold every such prompt at least
    once and again in every further bin it waits or prefills in. Sums within the rounding
    allowance (no prompt spans bins, or no requests) read as "processed"."""
    excess = allowance = 0.0
    for trace in traces:
        arrival, inputs, _ = trace_requests(trace)
        prefill = np.asarray(trace.prefill_tokens, dtype=np.float64)
        excess += float(prefill.sum()) - float(inputs[arrival < len(trace) * trace_bin_s(trace)].sum())
        allowance += 0.5 * np.count_nonzero(prefill)
    return "pending" if excess > allowance + 1e-6 else "processed"


def _series_loss(simulated: list[dict], logged_measured: list[dict], scales: dict[str, float]) -> float:
    """Sum over the three series of the squared log1p error, each divided by the measured series'
    summed squared log1p deviation from its mean (`scales`): compressing the counts keeps the
    busiest bins of the highest rates from swamping the quiet ones, and the division weighs the
    three series alike. `logged_measured` holds log1p of the measured series."""
    total = 0.0
    for name in SERVING_SERIES:
        err = sum(float(np.sum(np.square(np.log1p(s[name]) - m[name]))) for s, m in zip(simulated, logged_measured))
        total += err / scales[name]
    return total


def recorded_max_num_seqs(traces: list[Trace]) -> int:
    """The server's `max_num_seqs` the traces record (data file, "Data files"): the largest when
    they differ, so the cap is below none of them; 0 when no trace records one."""
    return max((int(t.server.get("max_num_seqs", 0)) for t in traces), default=0)


def most_active(traces: list[Trace]) -> float:
    """The most requests measured active in any bin of the traces."""
    return max((float(np.max(t.active_requests)) for t in traces if len(t.active_requests)), default=0.0)


def fit_serving_model(traces: list[Trace], bin_s: float = config.SAMPLE_PERIOD_S) -> ServingModel:
    """The ServingModel whose series come closest to the traces' measured ones (_series_loss).

    Seeded differential evolution searches, in log space, the three rates within _FIT_BOUNDS and
    a batch cap from 1 to twice the most requests ever measured active (a cap above that many
    means none); a cap is kept only if it lowers the loss by more than _CAP_MIN_GAIN. Where the
    traces record the server's `max_num_seqs`, that is the cap and only the rates are searched:
    vLLM never runs more requests at once, and a cap fitted to traffic that never reached it
    (the most requests the training runs had active) would hold generated heavier traffic far
    below what the server allowed. The prefill counting is read from the data
    (prefill_counting_of). Deterministic: the same traces give the same parameters. Traces
    without requests fit every value equally, and some value within the bounds is returned.
    `bin_s` is the bin width of single-bin traces; longer traces use their own timestamp step.
    Raises ValueError when `traces` is empty.
    """
    if not traces:
        raise ValueError("fitting the serving model needs at least one trace")
    counting = prefill_counting_of(traces)
    streams = [_stream(*trace_requests(t), len(t), trace_bin_s(t, bin_s)) for t in traces]
    measured = [measured_series(t) for t in traces]
    logged = [{name: np.log1p(series) for name, series in m.items()} for m in measured]
    scales = {}
    for name in SERVING_SERIES:
        pooled = np.concatenate([m[name] for m in logged])
        scales[name] = max(float(np.sum((pooled - pooled.mean()) ** 2)), 1.0)

    busiest = most_active(traces)
    server_cap = recorded_max_num_seqs(traces)

    def model_at(x: np.ndarray) -> ServingModel:
        """x: log prefill_tok_s, log step_s, log step_growth[, log batch cap]; a cap above the
        most requests ever measured active could never bind there, so it means no cap."""
        p = np.exp(x)
        if server_cap:
            return ServingModel(float(p[0]), float(p[1]), float(p[2]), server_cap, counting)
        cap = int(round(p[3]))
        return ServingModel(float(p[0]), float(p[1]), float(p[2]), 0 if cap > busiest else cap, counting)

    def loss_of(model: ServingModel) -> float:
        return _series_loss([model._simulate(s) for s in streams], logged, scales)

    # The loss is stepped at fine scales (a request finishes in one bin or the next) and flat
    # where a parameter barely matters (a prefill so fast that every prompt fits its arrival
    # bin, a cap never reached): a population search copes with both where a simplex stalls.
    bounds = np.log(_FIT_BOUNDS + (() if server_cap else ((1.0, 2.0 * busiest + 2.0),)))
    result = differential_evolution(lambda x: loss_of(model_at(x)), bounds, seed=0,
                                     popsize=_FIT_POPSIZE, maxiter=_FIT_MAXITER, tol=0.0, polish=False)
    best = model_at(result.x)
    if best.max_batch and not server_cap:
        # keep a cap only if it clearly explains the data better than none
        uncapped = ServingModel(best.prefill_tok_s, best.step_s, best.step_growth, 0, counting)
        if loss_of(uncapped) <= loss_of(best) * (1 + _CAP_MIN_GAIN):
            best = uncapped
    return best


def prefix_caching_clash(trained: dict, traces: list[Trace]) -> str | None:
    """Why `traces` are not the configuration a checkpoint trained on by the prefix-cache
    setting (docs/design.md, "Raw data": the same requests draw about twice the energy with it
    off), or None: both record it and differ. `trained`: the checkpoint's server settings
    (server_record's `settings`); a side that does not record it cannot clash."""
    was = trained.get("prefix_caching")
    if not isinstance(was, bool):       # not recorded, or several values (a file that mixed them)
        return None
    other = [t for t in traces if "prefix_caching" in t.server and t.server["prefix_caching"] != was]
    if not other:
        return None
    return (f"trace {other[0].index} ran with vLLM's prefix cache {'on' if other[0].server['prefix_caching'] else 'off'}, "
            f"the checkpoint trained on runs with it {'on' if was else 'off'}: a different configuration")


def server_record(traces: list[Trace], model: ServingModel) -> dict:
    """What a checkpoint records of the training runs' server (docs/design.md, "Checkpoint"):
    each setting the traces record (one value, or the sorted distinct values when they differ)
    and where the serving model's batch cap comes from, with its evidence."""
    settings: dict = {}
    for trace in traces:
        for key, value in trace.server.items():
            settings.setdefault(key, set()).add(value)
    settings = {k: next(iter(v)) if len(v) == 1 else sorted(v) for k, v in sorted(settings.items())}
    server_cap, busiest = recorded_max_num_seqs(traces), most_active(traces)
    if server_cap:
        source = "the server's max_num_seqs"
    elif model.max_batch:
        source = (f"fitted: no max_num_seqs recorded; a cap of {model.max_batch} explains the training "
                  f"traces, which had at most {busiest:g} requests active")
    else:
        source = (f"none: no max_num_seqs recorded, and no cap explains the training traces (at most "
                  f"{busiest:g} requests active) better than none")
    return {"settings": settings,
            "batch_cap": {"max_batch": model.max_batch, "source": source, "max_num_seqs": server_cap,
                          "most_active_measured": busiest}}


def no_queue_series(arrival_s: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray,
                    n_bins: int, decode_s: float, bin_s: float = config.SAMPLE_PERIOD_S) -> dict[str, np.ndarray]:
    """A baseline server without queue or capacity limit: each request is prefilled in its arrival
    bin and decodes for `decode_s` seconds from its arrival. Same inputs and edge cases as
    ServingModel.simulate; decode_s must be >= 0."""
    arrival_s, input_tokens, output_tokens = _checked_requests(arrival_s, input_tokens, output_tokens)
    if not (math.isfinite(decode_s) and decode_s >= 0):
        raise ValueError(f"decode_s must be a number of seconds >= 0, got {decode_s!r}")
    inside = arrival_s < n_bins * bin_s
    arrival_s, input_tokens, output_tokens = arrival_s[inside], input_tokens[inside], output_tokens[inside]
    first = np.clip(np.floor(arrival_s / bin_s), 0, max(n_bins - 1, 0)).astype(np.int64)
    last = np.floor((np.maximum(arrival_s, 0.0) + decode_s) / bin_s).astype(np.int64)
    return {"active_requests": _interval_sums(first, last, np.ones(len(first)), n_bins),
            "prefill_tokens": np.bincount(first, input_tokens, minlength=n_bins)[:n_bins].astype(np.float64),
            "decode_tokens": _interval_sums(first, last, output_tokens, n_bins)}


def fit_no_queue_decode_s(traces: list[Trace]) -> float:
    """The baseline's decode time from Little's law on the training traces: the mean time a
    request counts as active (one bin per bin it touches, less the bin it arrives in)."""
    bins = sum(float(np.sum(t.active_requests)) for t in traces)
    n_requests = sum(int(np.sum(trace_requests(t)[0] < len(t) * trace_bin_s(t))) for t in traces)
    if n_requests == 0:
        return 0.0
    return max(bins / n_requests - 1.0, 0.0) * trace_bin_s(traces[0])


def series_fidelity(simulated: list[dict], measured: list[dict]) -> dict[str, float]:
    """Per series: Pearson r of the concatenated bins (NaN if either side is constant or empty)
    and 100 * (mean simulated - mean measured) / mean measured (NaN if the measured mean is 0)."""
    scores = {}
    for name in SERVING_SERIES:
        sim = np.concatenate([s[name] for s in simulated]) if simulated else np.zeros(0)
        meas = np.concatenate([m[name] for m in measured]) if measured else np.zeros(0)
        if len(sim) < 2 or np.std(sim) == 0 or np.std(meas) == 0:
            r = float("nan")
        else:
            r = float(np.corrcoef(sim, meas)[0, 1])
        mean_meas = float(np.mean(meas)) if len(meas) else 0.0
        err = 100.0 * (float(np.mean(sim)) - mean_meas) / mean_meas if mean_meas != 0 else float("nan")
        scores[f"serving_{_SHORT[name]}_r"] = r
        scores[f"serving_{_SHORT[name]}_mean_err_pct"] = err
    return scores


def serving_fidelity(model: ServingModel, traces: list[Trace]) -> dict[str, float]:
    """How closely the model's series follow the traces' measured ones (FIDELITY_KEYS); every
    value NaN when there are no traces."""
    return series_fidelity([simulate_trace(model, t) for t in traces], [measured_series(t) for t in traces])
