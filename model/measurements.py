"""Raw measurements -> training traces: vLLM serving-benchmark JSONs and nvidia-smi power CSVs.

    logs = [read_power_log(p) for p in csv_paths]
    runs = [read_benchmark(p, seed=0) for p in json_paths]
    pairs, lonely_runs, lonely_logs = pair_runs(runs, logs)
    bins = bin_run(run, log, gpus=[0, 1])

`python -m model.prepare_data` is the command-line front end. Clock: both tools write local
wall-clock time without a zone; both are read as if it were UTC, which keeps them on one clock.
The benchmark JSON's `date` is written when the benchmark ends (to the second), so a run spans
[date - duration, date].
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from model import config
from model.errors import InputError

SMI_TIME_FORMAT = "%Y/%m/%d %H:%M:%S.%f"
BENCHMARK_DATE_FORMAT = "%Y%m%d-%H%M%S"
SMI_COLUMNS = ("timestamp", "power.draw [W]")
REQUIRED_BENCHMARK_KEYS = ("date", "duration", "tensor_parallel_size", "input_lens", "output_lens",
                           "ttfts", "itls")
START_TIMES_KEY = "start_times"      # per-request send times, seconds since the benchmark started
MIN_OVERLAP_SHARE = 0.5              # a power log pairs with a run it covers at least half of
EDGE_TOLERANCE_S = 2.0               # the date has 1 s resolution; samples are 0.25 s apart
MAX_SAMPLE_GAP_S = 2.0


@dataclass
class PowerLog:
    path: Path
    times: np.ndarray            # (S,) seconds, one per sample
    watts: np.ndarray            # (S, G) per GPU, in the file's GPU row order
    dropped_rows: int = 0        # rows of an incomplete last sample

    @property
    def start(self) -> float:
        return float(self.times[0])

    @property
    def end(self) -> float:
        return float(self.times[-1])


@dataclass
class BenchmarkRun:
    path: Path
    start: float                 # seconds, same clock as PowerLog.times
    duration: float
    tp: int
    request_rate: float          # requests per second; inf when all were sent at once
    arrivals: np.ndarray         # (R,) seconds since start, completed requests only
    ttfts: np.ndarray            # (R,) seconds
    latencies: np.ndarray        # (R,) seconds from arrival to the last token
    input_tokens: np.ndarray     # (R,)
    output_tokens: np.ndarray    # (R,)
    n_failed: int = 0
    arrivals_source: dict = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.start + self.duration


def _clock(text: str, fmt: str) -> float:
    return datetime.strptime(text.strip(), fmt).replace(tzinfo=timezone.utc).timestamp()


def read_power_log(path: Path | str, num_gpus: int | None = None) -> PowerLog:
    """An `nvidia-smi --query-gpu=timestamp,power.draw,... --format=csv -lms 250` file.

    One row per GPU per sample; a sample is a block of `num_gpus` consecutive rows (default: the
    most common number of consecutive rows sharing a timestamp). An incomplete last block is
    dropped (nvidia-smi stopped mid-sample).
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, skipinitialspace=True, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path}: not a readable nvidia-smi CSV ({str(err).splitlines()[0]})") from None
    frame.columns = [c.strip() for c in frame.columns]
    if tuple(frame.columns[:2]) != SMI_COLUMNS:
        raise InputError(f"{path}: header starts {', '.join(frame.columns[:2])!r}, expected "
                         f"'timestamp, power.draw [W]' (nvidia-smi --query-gpu=timestamp,power.draw,... --format=csv)")
    if frame.empty:
        raise InputError(f"{path}: no samples")
    times = pd.to_datetime(frame["timestamp"].str.strip(), format=SMI_TIME_FORMAT, errors="coerce")
    watts = pd.to_numeric(frame["power.draw [W]"].str.strip().str.removesuffix("W").str.strip(),
                          errors="coerce")
    bad_time, bad_watts = times.isna().to_numpy(), ~np.isfinite(watts.to_numpy(dtype=float))
    for bad, column, expected in ((bad_time, "timestamp", "a time like 2025/10/17 05:06:57.115"),
                                  (bad_watts, "power.draw [W]", "a number of watts")):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"{path}: line {row + 2}: {column} {frame[column].iloc[row]!r} is not {expected}")
    seconds = (times.dt.tz_localize("UTC") - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    if num_gpus is None:
        run_starts = np.flatnonzero(np.r_[True, seconds[1:] != seconds[:-1]])
        run_lengths = np.diff(np.r_[run_starts, len(seconds)])
        num_gpus = int(np.bincount(run_lengths).argmax())
    samples = len(seconds) // num_gpus
    if samples < 2:
        raise InputError(f"{path}: fewer than 2 samples of {num_gpus} GPU rows")
    used = samples * num_gpus
    block_times = seconds[:used].reshape(samples, num_gpus)
    if np.any(np.diff(block_times[:, 0]) <= 0):
        row = int(np.flatnonzero(np.diff(block_times[:, 0]) <= 0)[0] + 1) * num_gpus
        raise InputError(f"{path}: line {row + 2}: time does not move forward from the previous sample "
                         f"(rows per sample: {num_gpus})")
    return PowerLog(path, block_times[:, 0], watts.to_numpy(dtype=float)[:used].reshape(samples, num_gpus),
                    dropped_rows=len(seconds) - used)


def _number_list(data: dict, key: str, path: Path) -> list:
    value = data[key]
    if not isinstance(value, list):
        raise InputError(f"{path}: {key!r} is not a list")
    return value


def _reconstruct_arrivals(n_requests: int, rate: float, seed: int) -> np.ndarray:
    """Send times of a Poisson process at `rate` (first request at 0), as vLLM's benchmark sends them."""
    if not math.isfinite(rate):
        return np.zeros(n_requests)
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n_requests)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])])


def _scale_to_span(arrivals: np.ndarray, latencies: np.ndarray, duration: float) -> float:
    """The factor c with max(c * arrival + latency) = duration: the last request finishes when
    the benchmark ended."""
    if arrivals.max(initial=0.0) <= 0 or latencies.max() >= duration:
        return 0.0
    low, high = 0.0, duration / arrivals.max()
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if np.max(mid * arrivals + latencies) < duration else (low, mid)
    return 0.5 * (low + high)


def read_benchmark(path: Path | str, seed: int = config.SEED) -> BenchmarkRun:
    """A `benchmark_serving.py --save-result` JSON. Failed requests (TTFT 0 or missing) are dropped.

    Without per-request `start_times` the send times are rebuilt as a Poisson process at
    `request_rate` (seed `seed`), scaled so the last request finishes when the benchmark ended;
    `arrivals_source` says which was done.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read it ({err})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a benchmark result (expected a JSON object)")
    missing = [k for k in REQUIRED_BENCHMARK_KEYS if k not in data]
    if missing:
        hint = " (add the run's TP to the JSON)" if missing[0] == "tensor_parallel_size" else ""
        raise InputError(f"{path}: key {missing[0]!r} is missing{hint}")
    try:
        end = _clock(str(data["date"]), BENCHMARK_DATE_FORMAT)
    except ValueError:
        raise InputError(f"{path}: date {data['date']!r} is not like 20251017-050657") from None
    duration, tp = data["duration"], data["tensor_parallel_size"]
    if not isinstance(duration, (int, float)) or not duration > 0:
        raise InputError(f"{path}: duration {duration!r} is not a positive number of seconds")
    if isinstance(tp, str) and tp.strip().isdigit():       # --metadata tensor_parallel_size=2 writes text
        tp = int(tp)
    if not isinstance(tp, int) or tp < 1:
        raise InputError(f"{path}: tensor_parallel_size {tp!r} is not a positive integer")
    lists = {k: _number_list(data, k, path) for k in ("input_lens", "output_lens", "ttfts", "itls")}
    if START_TIMES_KEY in data:
        lists[START_TIMES_KEY] = _number_list(data, START_TIMES_KEY, path)
    n_requests = len(lists["input_lens"])
    uneven = [k for k, v in lists.items() if len(v) != n_requests]
    if uneven:
        raise InputError(f"{path}: {uneven[0]!r} has {len(lists[uneven[0]])} entries, input_lens has {n_requests}")
    rate = data.get("request_rate", "inf")
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise InputError(f"{path}: request_rate {rate!r} is not a number or 'inf'") from None

    def ok(ttft) -> bool:
        return isinstance(ttft, (int, float)) and math.isfinite(ttft) and ttft > 0

    kept = [i for i, ttft in enumerate(lists["ttfts"]) if ok(ttft)]
    try:
        ttfts = np.array([lists["ttfts"][i] for i in kept], dtype=float)
        latencies = ttfts + np.array([float(np.sum(lists["itls"][i] or [0.0])) for i in kept])
        inputs = np.array([lists["input_lens"][i] for i in kept], dtype=np.int64)
        outputs = np.array([lists["output_lens"][i] for i in kept], dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: a request's lengths or inter-token latencies are not numbers ({err})") from None
    if not kept:
        raise InputError(f"{path}: no request completed (every TTFT is 0 or missing)")
    if START_TIMES_KEY in data:
        sent = np.array(lists[START_TIMES_KEY], dtype=float)
        sent = sent - sent.min() if sent.min() > duration else sent      # absolute clock: make relative
        arrivals, source = sent[kept], {"arrivals": f"from {START_TIMES_KEY}"}
    else:
        rebuilt = _reconstruct_arrivals(n_requests, rate, seed)[kept]
        scale = _scale_to_span(rebuilt, latencies, float(duration))
        arrivals = rebuilt * scale
        source = {"arrivals": "reconstructed as a Poisson process" if math.isfinite(rate)
                  else "all sent at 0 (request_rate inf)",
                  "request_rate": rate, "seed": seed, "time_scale": scale}
    if latencies.max() > duration + EDGE_TOLERANCE_S:
        raise InputError(f"{path}: a request took {latencies.max():.1f} s, longer than the whole "
                         f"benchmark ({duration:.1f} s)")
    return BenchmarkRun(path, end - float(duration), float(duration), tp, rate, arrivals, ttfts, latencies,
                        inputs, outputs, n_failed=n_requests - len(kept), arrivals_source=source)


def overlap_s(run: BenchmarkRun, log: PowerLog) -> float:
    return max(0.0, min(run.end, log.end) - max(run.start, log.start))


def pair_runs(runs: list[BenchmarkRun], logs: list[PowerLog]
              ) -> tuple[list[tuple[BenchmarkRun, PowerLog]], list[BenchmarkRun], list[PowerLog]]:
    """Each run with the power log that covers most of its span (at least half of it), by time
    alone; then the runs and logs left without a partner."""
    pairs, lonely_runs = [], []
    for run in sorted(runs, key=lambda r: r.start):
        best = max(logs, key=lambda log: overlap_s(run, log), default=None)
        if best is not None and overlap_s(run, best) >= MIN_OVERLAP_SHARE * run.duration:
            pairs.append((run, best))
        else:
            lonely_runs.append(run)
    used = {id(log) for _, log in pairs}
    return pairs, lonely_runs, [log for log in logs if id(log) not in used]


def _interval_sums(starts: np.ndarray, ends: np.ndarray, weights: np.ndarray, n_bins: int,
                   period: float) -> np.ndarray:
    """Per bin [k p, (k+1) p): sum of the weights of the intervals [start, end) that overlap it."""
    first = np.clip(np.floor(starts / period).astype(np.int64), 0, n_bins)
    last = np.clip(np.ceil(ends / period).astype(np.int64), 0, n_bins)      # exclusive
    last = np.maximum(last, np.minimum(first + 1, n_bins))                  # an instant still counts
    change = np.zeros(n_bins + 1)
    np.add.at(change, first, weights)
    np.add.at(change, last, -weights)
    return np.cumsum(change[:-1])


def bin_run(run: BenchmarkRun, log: PowerLog, gpus: list[int],
            period: float = config.SAMPLE_PERIOD_S) -> dict[str, np.ndarray]:
    """One trace on a regular grid over the run's span: watts summed over `gpus` and the workload."""
    if max(gpus) >= log.watts.shape[1]:
        raise InputError(f"{log.path}: has {log.watts.shape[1]} GPU rows per sample; GPU {max(gpus)} "
                         f"was asked for (run {run.path.name}, TP {run.tp})")
    if log.start > run.start + EDGE_TOLERANCE_S or log.end < run.end - EDGE_TOLERANCE_S:
        raise InputError(f"{log.path}: covers {max(log.start, run.start) - run.start:.1f}-"
                         f"{min(log.end, run.end) - run.start:.1f} s of the {run.duration:.1f} s run "
                         f"{run.path.name}; the power log must cover the whole run")
    inside = (log.times >= run.start - EDGE_TOLERANCE_S) & (log.times <= run.end + EDGE_TOLERANCE_S)
    gaps = np.diff(log.times[inside])
    if len(gaps) and gaps.max() > MAX_SAMPLE_GAP_S:
        raise InputError(f"{log.path}: a {gaps.max():.1f} s gap between samples during run {run.path.name}")
    n_bins = int(math.ceil(run.duration / period - 1e-9))
    timestamps = run.start + period * np.arange(n_bins)
    watts = np.interp(timestamps, log.times, log.watts[:, gpus].sum(axis=1))
    prefill_end = run.arrivals + run.ttfts
    done = run.arrivals + run.latencies
    return {
        "timestamps": timestamps,
        "power_traces": watts,
        "prefill_tokens": _interval_sums(run.arrivals, prefill_end, run.input_tokens, n_bins, period),
        "decode_tokens": _interval_sums(prefill_end, done, run.output_tokens, n_bins, period),
        "active_requests": _interval_sums(run.arrivals, done, np.ones(len(done)), n_bins, period),
        "request_timestamps": run.start + run.arrivals,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
    }
