"""vLLM serving-benchmark results: `benchmark_serving.py` / `vllm bench serve` with
`--save-result --save-detailed` (one JSON object, or one per line with `--append-result`).

Clock: the benchmark's `date` is local wall-clock time without a zone, read as if it were UTC
(as nvidia-smi's times are). Epoch send times (`request_timestamps`, from time.time()) are moved
onto that clock by the machine's UTC offset, which is `date` minus the epoch end of the run
rounded to a quarter hour. `date` is written when the benchmark ends, truncated to the second,
so without epoch send times a run spans [date + 0.5 - duration, date + 0.5]: the truncation
error centered.
"""
from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model import config
from model.errors import InputError, refuse_special_file, strict_json
from model.measurements.common import EDGE_TOLERANCE_S, BenchmarkRun, ReadOptions, Sources, _clock, decode_seconds

SUFFIX = ".json"
BENCHMARK_DATE_FORMAT = "%Y%m%d-%H%M%S"
PER_REQUEST_KEYS = ("input_lens", "output_lens", "ttfts", "itls")
MAX_TOKENS = 10**9      # per request, far beyond any context window; sums of them stay exact in int64
ZONE_STEP_S = 900.0                  # every UTC offset in use is a multiple of 15 minutes


def read(path: Path, options: ReadOptions) -> Sources:
    """The reader interface (model/measurements/__init__.py): the file's runs, or a note that it
    holds none (a `.pytorch.json`, a config beside the results)."""
    runs = read_benchmarks(path, options.seed, options.allow_rebuilt)
    return Sources(runs=runs, skipped=[] if runs else [(path.name, "not a benchmark result")])


def _number_list(data: dict, key: str, name: str) -> list:
    value = data[key]
    if not isinstance(value, list):
        raise InputError(f"{name}: {key!r} is not a list")
    return value


def _count(value, key: str, name: str, default):
    """A number the JSON may hold as text: `--metadata k=v` writes strings, vLLM writes rate inf as "inf"."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: {key} {value!r} is not a number") from None


def _send_schedule(n_requests: int, rate: float, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """When the client means to send each request: the first at once, then gamma-distributed gaps
    with mean 1/rate and shape `burstiness` (1 = Poisson), as vLLM's clients draw them."""
    if not math.isfinite(rate):
        return np.zeros(n_requests)
    gaps = rng.gamma(burstiness, 1.0 / (rate * burstiness), n_requests)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])])


def _with_concurrency(schedule: np.ndarray, busy_s: np.ndarray, limit: int | None) -> np.ndarray:
    """Actual send times when at most `limit` requests may be in flight: a request waits, in order,
    for its time and for the earliest of the in-flight requests to finish."""
    if limit is None or limit >= len(schedule):
        return schedule.copy()
    sent, in_flight = np.empty_like(schedule), []
    for i, due in enumerate(schedule):
        if len(in_flight) >= limit:
            due = max(due, heapq.heappop(in_flight))
        sent[i] = due
        heapq.heappush(in_flight, due + busy_s[i])
    return sent


def _fit_to_span(schedule: np.ndarray, busy_s: np.ndarray, limit: int | None, duration: float,
                 kept: list[int]) -> tuple[np.ndarray, float]:
    """Stretch the schedule by the factor c with which the last completed request finishes when
    the benchmark ended (the random draw's total length is not the run's)."""
    def last_end(c: float) -> float:
        return float(np.max((_with_concurrency(c * schedule, busy_s, limit) + busy_s)[kept]))

    if schedule.max(initial=0.0) <= 0 or last_end(0.0) >= duration:
        return _with_concurrency(0.0 * schedule, busy_s, limit), 0.0
    low, high = 0.0, 1.0
    while last_end(high) < duration:
        high *= 2.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if last_end(mid) < duration else (low, mid)
    scale = 0.5 * (low + high)
    return _with_concurrency(scale * schedule, busy_s, limit), scale


def _results_in(path: Path) -> list[tuple[str, object]]:
    """The JSON values a file holds, named: one, or one per line (`--append-result`)."""
    refuse_special_file(path, "benchmark JSON")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read it ({err})") from None
    try:
        return [(path.name, strict_json(text))]
    except json.JSONDecodeError as err:
        if err.msg != "Extra data":
            where = "" if "twice" in err.msg else f"line {err.lineno}: "
            raise InputError(f"{path}: not valid JSON ({where}{err.msg})") from None
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                values.append((f"{path.name}:{number}", strict_json(line)))
            except json.JSONDecodeError as err:
                raise InputError(f"{path}: line {number}: not valid JSON ({err.msg}); a file of "
                                 f"appended results holds one JSON object per line") from None
    return values


def is_benchmark_result(value) -> bool:
    """vLLM's serving-benchmark results, every version, hold `duration` with `completed` and `date`;
    other JSON beside them (a `.pytorch.json`, a config) does not. One with `duration` and only
    some of the rest is still taken as a result, so that what it lacks is reported."""
    return isinstance(value, dict) and "duration" in value and any(
        k in value for k in ("completed", "date", "input_lens"))


def read_benchmarks(path: Path | str, seed: int = config.SEED, allow_rebuilt: bool = False
                    ) -> list[BenchmarkRun]:
    """The runs of a `--save-result` JSON (one object, or one per line with `--append-result`);
    [] when the file is not a benchmark result."""
    path = Path(path)
    return [_read_run(path, name, value, seed, allow_rebuilt)
            for name, value in _results_in(path) if is_benchmark_result(value)]


def _tensor_parallel_size(data: dict, name: str) -> int:
    key = next((k for k in ("tensor_parallel_size", "tp") if k in data), None)
    if key is None:
        raise InputError(f"{name}: key 'tensor_parallel_size' is missing; run the benchmark with "
                         f"--metadata tensor_parallel_size=N (or add it to the JSON)")
    tp = data[key]
    if isinstance(tp, str) and tp.strip().isdigit():       # --metadata tp=2 writes text
        tp = int(tp)
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise InputError(f"{name}: {key} {tp!r} is not a positive integer")
    return tp


def _utc_offset(seconds: float) -> str:
    sign, minutes = ("-" if seconds < 0 else "+"), round(abs(seconds) / 60)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass
class _Result:
    """One result's fields, checked: what placing its send times needs."""
    label: str
    data: dict
    date_end: float
    duration: float
    n_requests: int
    kept: list[int]              # the completed requests
    latencies: np.ndarray        # (kept,) seconds from arrival to the last token
    rate: float
    burstiness: float
    limit: int | None

    @property
    def centered_start(self) -> float:
        # `date` is the end time truncated to whole seconds: the true end lies in [date, date + 1)
        return self.date_end + 0.5 - self.duration


def _read_run(path: Path, name: str, data: dict, seed: int, allow_rebuilt: bool) -> BenchmarkRun:
    """One result. Failed requests (an error message, or TTFT 0 or missing) are dropped.

    Send times: `request_timestamps` (epoch seconds, successful requests) also place the run on
    the power log's clock; `start_times` (seconds since the run started, or any monotonic clock)
    give them relative to a start placed from `date`. Without either they are rebuilt from the
    request rate, burstiness and concurrency limit; when that is random it needs `allow_rebuilt`.
    """
    label = f"{path.parent / name}"
    missing = [k for k in ("date", "duration", *PER_REQUEST_KEYS) if k not in data]
    if missing:
        hint = (" (the benchmark saved no per-request results: rerun it with --save-result --save-detailed)"
                if missing[0] in PER_REQUEST_KEYS else "")
        raise InputError(f"{label}: key {missing[0]!r} is missing{hint}")
    try:
        date_end = _clock(str(data["date"]), BENCHMARK_DATE_FORMAT)
    except ValueError:
        raise InputError(f"{label}: date {data['date']!r} is not like 20251017-050657") from None
    duration = data["duration"]
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0:
        raise InputError(f"{label}: duration {duration!r} is not a positive number of seconds")
    duration = float(duration)
    tp = _tensor_parallel_size(data, label)
    lists = _request_lists(data, label)
    n_requests = len(lists["input_lens"])
    rate, burstiness, limit = _sending(data, label)
    kept, ttfts, latencies, inputs, outputs = _completed(lists, n_requests, label)
    result = _Result(label, data, date_end, duration, n_requests, kept, latencies, rate, burstiness, limit)
    if "request_timestamps" in data:
        start, arrivals, source = _from_request_timestamps(result)
    elif "start_times" in data:
        start, arrivals, source = _from_start_times(result)
    else:
        start, arrivals, source = _rebuilt(result, seed, allow_rebuilt)
    if np.any(arrivals < -EDGE_TOLERANCE_S) or np.any(arrivals > duration + EDGE_TOLERANCE_S):
        raise InputError(f"{label}: a request was sent outside the run's {duration:.1f} s")
    if latencies.max() > duration + EDGE_TOLERANCE_S:
        raise InputError(f"{label}: a request took {latencies.max():.1f} s, longer than the whole "
                         f"benchmark ({duration:.1f} s)")
    return BenchmarkRun(path, name, start, duration, tp, rate, arrivals, ttfts, latencies, inputs, outputs,
                        n_failed=n_requests - len(kept), arrivals_source=source,
                        rebuilt="request_timestamps" not in data and "start_times" not in data)


def _request_lists(data: dict, label: str) -> dict[str, list]:
    """The per-request lists (and `errors`, where there is one), all of one length."""
    lists = {k: _number_list(data, k, label) for k in PER_REQUEST_KEYS}
    if isinstance(data.get("errors"), list):
        lists["errors"] = data["errors"]
    n_requests = len(lists["input_lens"])
    uneven = [k for k, v in lists.items() if len(v) != n_requests]
    if uneven:
        raise InputError(f"{label}: {uneven[0]!r} has {len(lists[uneven[0]])} entries, input_lens has {n_requests}")
    return lists


def _sending(data: dict, label: str) -> tuple[float, float, int | None]:
    """How the client sent: request rate (inf: all at once), burstiness, concurrency limit."""
    rate = _count(data.get("request_rate", "inf"), "request_rate", label, math.inf)
    burstiness = _count(data.get("burstiness"), "burstiness", label, 1.0)
    limit = _count(data.get("max_concurrency"), "max_concurrency", label, None)
    if not rate > 0 or not burstiness > 0 or (limit is not None and not (limit >= 1 and limit == int(limit))):
        raise InputError(f"{label}: request_rate {rate}, burstiness {burstiness} and max_concurrency "
                         f"{limit} must be positive (max_concurrency a whole number)")
    return rate, burstiness, None if limit is None else int(limit)


def _completed(lists: dict[str, list], n_requests: int, label: str) -> tuple:
    """The completed requests' indices, TTFTs, latencies, input and output lengths."""
    def ok(i: int) -> bool:
        ttft, error = lists["ttfts"][i], lists.get("errors", [""] * n_requests)[i]
        return (isinstance(ttft, (int, float)) and math.isfinite(ttft) and ttft > 0
                and not (isinstance(error, str) and error.strip()))

    kept = [i for i in range(n_requests) if ok(i)]
    if not kept:
        raise InputError(f"{label}: no request completed (every request has an error, or TTFT 0 or missing)")
    try:
        ttfts = np.array([lists["ttfts"][i] for i in kept], dtype=float)
        inputs = np.array([lists["input_lens"][i] for i in kept], dtype=np.int64)
        outputs = np.array([lists["output_lens"][i] for i in kept], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as err:
        raise InputError(f"{label}: a request's lengths or inter-token latencies are not numbers ({err})") from None
    for key, lengths in (("input_lens", inputs), ("output_lens", outputs)):
        if lengths.min() < 0 or lengths.max() > MAX_TOKENS:
            raise InputError(f"{label}: {key} holds {lengths.min() if lengths.min() < 0 else lengths.max()} "
                             f"tokens; a request's length lies in 0..{MAX_TOKENS:,}")
    latencies = ttfts + np.array([decode_seconds(lists["itls"][i], n, label) for i, n in zip(kept, outputs)])
    return kept, ttfts, latencies, inputs, outputs


def _sent_times(result: _Result, key: str) -> np.ndarray:
    """The key's per-request times for the kept requests: it lists all requests or only the
    successful ones."""
    label, kept, n_requests = result.label, result.kept, result.n_requests
    values = _number_list(result.data, key, label)
    try:
        times = np.array(values, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{label}: {key!r} holds something that is not a number") from None
    if not np.all(np.isfinite(times)):
        raise InputError(f"{label}: {key!r} holds a value that is not a finite number")
    if len(times) == n_requests:
        return times[kept] if len(kept) < n_requests else times
    if len(times) == len(kept):
        return times
    raise InputError(f"{label}: {key!r} has {len(times)} entries; the run has {n_requests} requests, "
                     f"{len(kept)} of them successful")


def _from_request_timestamps(result: _Result) -> tuple[float, np.ndarray, dict]:
    """Start and arrivals from epoch send times, moved onto the local clock of `date`."""
    sent = _sent_times(result, "request_timestamps")
    first = float(sent.min())
    # epoch seconds vs local wall-clock `date`: the difference is the machine's UTC offset,
    # a whole number of quarter hours, plus under a second of truncation
    raw = result.date_end - (first + result.duration)
    offset = round(raw / ZONE_STEP_S) * ZONE_STEP_S
    if abs(raw - offset) > 60.0:
        raise InputError(f"{result.label}: request_timestamps start {raw - offset:+.0f} s away from date - duration "
                         f"(after a UTC offset of {_utc_offset(offset)}); they must be epoch seconds "
                         f"(time.time()) of the same run")
    # the first successful send is the run's start unless earlier requests failed: then it lies
    # past the latest start `date` allows, and the start is placed from `date` instead
    latest_start = result.date_end + 1.0 - result.duration + 0.05
    start = first + offset if first + offset <= latest_start else result.centered_start
    return start, sent + offset - start, {
        "arrivals": "from request_timestamps",
        "placement": f"request_timestamps on local time (UTC{_utc_offset(offset)}, from date)"}


def _from_start_times(result: _Result) -> tuple[float, np.ndarray, dict]:
    """Arrivals from send times relative to the run (or to any monotonic clock), placed from `date`."""
    sent = _sent_times(result, "start_times")
    every = np.array(result.data["start_times"], dtype=float)
    # time.perf_counter() values have an arbitrary origin; the first request goes out at the start
    origin = float(every.min()) if every.min() > result.duration else 0.0
    return result.centered_start, sent - origin, {"arrivals": "from start_times",
                                                  "placement": "date + 0.5 s - duration"}


def _rebuilt(result: _Result, seed: int, allow_rebuilt: bool) -> tuple[float, np.ndarray, dict]:
    """Arrivals rebuilt from the request rate, burstiness and concurrency limit, placed from `date`."""
    rate, burstiness, limit = result.rate, result.burstiness, result.limit
    busy = np.zeros(result.n_requests)
    busy[result.kept] = result.latencies
    schedule = _send_schedule(result.n_requests, rate, burstiness, np.random.default_rng(seed))
    if math.isfinite(rate):
        if not allow_rebuilt:
            raise InputError(f"{result.label}: no per-request send times (request_timestamps or start_times) and "
                             f"request_rate {rate:g} makes them random; record with --save-detailed and a "
                             f"client that saves send times, or pass --allow_rebuilt_arrivals")
        sent, scale = _fit_to_span(schedule, busy, limit, result.duration, result.kept)
        how = (f"rebuilt at random: gamma gaps (rate {rate:g}/s, burstiness {burstiness:g}), "
               f"stretched so the last request ends with the run")
        details = {"seed": seed, "time_scale": scale}
    else:
        sent, details = _with_concurrency(schedule, busy, limit), {}
        how = "rebuilt: all due at once (request_rate inf)"
    if limit is not None:
        how += f", at most {limit} in flight"
    return result.centered_start, sent[result.kept], {
        "arrivals": how, "placement": "date + 0.5 s - duration", "request_rate": rate,
        "burstiness": burstiness, "max_concurrency": limit, **details}
