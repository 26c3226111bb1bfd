"""Raw measurements -> training traces: vLLM serving-benchmark JSONs and nvidia-smi power CSVs.

    logs = [read_power_log(p) for p in csv_paths]
    runs = [run for p in json_paths for run in read_benchmarks(p, seed=0)]
    pairs, lonely_runs, lonely_logs = pair_runs(runs, logs)
    bins = bin_run(run, log, gpus=[0, 1])          # nvidia-smi GPU indices

`python -m model.prepare_data` is the command-line front end.

Clock: nvidia-smi and the benchmark's `date` both write local wall-clock time without a zone,
on the machine that ran them; both are read as if it were UTC, which keeps them on one clock.
Epoch send times (`request_timestamps`, from time.time()) are moved onto that clock by the
machine's UTC offset, which is `date` minus the epoch end of the run rounded to a quarter hour.
`date` is written when the benchmark ends, truncated to the second, so without epoch send times
a run spans [date + 0.5 - duration, date + 0.5]: the truncation error centered.
"""
from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from model import config
from model.errors import InputError, refuse_special_file, strict_json

SMI_TIME_FORMAT = "%Y/%m/%d %H:%M:%S.%f"
BENCHMARK_DATE_FORMAT = "%Y%m%d-%H%M%S"
# Power columns in order of preference: on recent GPUs `power.draw` is a 1 s average, so the
# instantaneous reading is what follows the workload bin by bin.
POWER_COLUMNS = ("power.draw.instant", "power.draw", "power.draw.average")
PER_REQUEST_KEYS = ("input_lens", "output_lens", "ttfts", "itls")
MAX_TOKENS = 10**9      # per request, far beyond any context window; sums of them stay exact in int64
MIN_OVERLAP_SHARE = 0.5              # a power log pairs with a run it covers at least half of
EDGE_TOLERANCE_S = 2.0               # the date has 1 s resolution; samples are 0.25 s apart
MAX_SAMPLE_GAP_S = 2.0
MAX_GPUS_PER_SAMPLE = 64             # rows-per-sample candidates tried when the log has no index
ZONE_STEP_S = 900.0                  # every UTC offset in use is a multiple of 15 minutes
NUM_GPUS_HINT = ("pass --num_gpus N (GPU rows per sample), or record with "
                 "nvidia-smi --query-gpu=timestamp,index,power.draw,...")


@dataclass
class PowerLog:
    """One nvidia-smi log: per GPU (by nvidia-smi index) its rows' times and watts.

    Watts are NaN where the file has no number ([N/A], [Not Supported], a cut-off line); those
    samples are dropped only for the GPUs a run uses, under the gap rule (bin_run).
    """
    path: Path
    series: dict[int, tuple[np.ndarray, np.ndarray]]   # index -> (times (S,), watts (S,))
    column: str                  # the power column read
    layout: str                  # how rows were assigned to GPUs
    dropped_rows: int = 0        # rows without a usable time, or of an incomplete last sample

    @property
    def start(self) -> float:
        return min(float(t.min()) for t, _ in self.series.values())

    @property
    def end(self) -> float:
        return max(float(t.max()) for t, _ in self.series.values())

    @property
    def gpus(self) -> list[int]:
        return sorted(self.series)


@dataclass
class BenchmarkRun:
    path: Path
    name: str                    # the file name, with `:line` for a file of appended results
    start: float                 # seconds, same clock as PowerLog times
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
    rebuilt: bool = False        # arrivals were simulated, not measured

    @property
    def end(self) -> float:
        return self.start + self.duration


def _clock(text: str, fmt: str) -> float:
    return datetime.strptime(text.strip(), fmt).replace(tzinfo=timezone.utc).timestamp()


def _column_name(header: str) -> str:
    """`power.draw [W]` -> `power.draw`: nvidia-smi keeps the unit in the header even with nounits."""
    return header.strip().split(" [")[0].strip()


def _layout_fits(times: np.ndarray, rows_per_sample: int) -> bool:
    """Whether blocks of `rows_per_sample` consecutive rows look like one sample each: the rows of
    a block lie close together (a few ms, possibly straddling a millisecond) and blocks follow
    each other about one sampling period apart. Too few rows per block leaves some steps between
    blocks near zero and others a whole period; too many puts a whole period inside a block.
    Quantiles instead of extremes let a rare stall of nvidia-smi pass."""
    samples = len(times) // rows_per_sample
    if samples < 3:
        return False
    blocks = times[: samples * rows_per_sample].reshape(samples, rows_per_sample)
    with np.errstate(all="ignore"):
        first, last = np.nanmin(blocks, axis=1), np.nanmax(blocks, axis=1)
    keep = np.isfinite(first)
    first, spread = first[keep], (last - first)[keep]
    steps = np.diff(first)
    if len(steps) < 2:
        return False
    period = float(np.median(steps))
    return bool(period > 0 and np.quantile(spread, 0.98) <= 0.25 * period
                and np.quantile(steps, 0.02) >= 0.5 * period and np.quantile(steps, 0.98) <= 2.0 * period)


def read_power_log(path: Path | str, num_gpus: int | None = None) -> PowerLog:
    """An `nvidia-smi --query-gpu=timestamp[,index],power.draw,... --format=csv[,nounits] -lms 250` file.

    Columns are found by name, in any order. With an `index` column its values name the GPUs;
    without one, a sample is a block of consecutive rows (`num_gpus` of them, trusted as given, or
    the one number that fits the sampling period) in nvidia-smi's index order, and an incomplete
    last block is dropped (nvidia-smi stopped mid-sample). A last line without its newline is
    dropped too.
    """
    path = Path(path)
    refuse_special_file(path, "power CSV")
    try:
        frame = pd.read_csv(path, skipinitialspace=True, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path}: not a readable nvidia-smi CSV ({str(err).splitlines()[0]})") from None
    headers = {_column_name(c): c for c in frame.columns}
    power = next((c for c in POWER_COLUMNS if c in headers), None)
    if "timestamp" not in headers or power is None:
        raise InputError(f"{path}: header {', '.join(map(str.strip, frame.columns))!r} lacks timestamp and "
                         f"power.draw; record with nvidia-smi --query-gpu=timestamp,index,power.draw,... --format=csv")
    if not path.read_bytes().endswith(b"\n") and len(frame):
        frame.iloc[-1, :] = ""           # nvidia-smi was stopped mid-line: the last values may be cut short
    frame = frame.fillna("")
    times = pd.to_datetime(frame[headers["timestamp"]].str.strip(), format=SMI_TIME_FORMAT, errors="coerce")
    seconds = (times.dt.tz_localize("UTC") - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()

    def numbers(column: str) -> np.ndarray:
        text = frame[headers[column]].str.strip().str.removesuffix("W").str.strip()
        return pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)

    watts = numbers(power)
    if power == "power.draw.instant" and not np.isfinite(watts).any():
        # a driver that lists the column but cannot read it: fall back to the averaged reading
        fallback = next((c for c in POWER_COLUMNS[1:] if c in headers), None)
        if fallback is not None:
            power, watts = fallback, numbers(fallback)
    readable = np.flatnonzero(np.isfinite(seconds))
    if len(readable) < 2:
        raise InputError(f"{path}: fewer than 2 rows with a time like 2025/10/17 05:06:57.115")
    dropped = len(seconds) - (readable[-1] + 1)           # a cut-off tail
    seconds, watts = seconds[: readable[-1] + 1], watts[: readable[-1] + 1]
    series: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if "index" in headers:
        index = pd.to_numeric(frame[headers["index"]].str.strip(), errors="coerce").to_numpy()[: len(seconds)]
        good = np.isfinite(index) & np.isfinite(seconds)
        dropped += int((~good).sum())
        for gpu in np.unique(index[good]).astype(int):
            rows = good & (index == gpu)
            series[int(gpu)] = (seconds[rows], watts[rows])
        layout = "index column"
    else:
        if num_gpus is None:
            fits = [n for n in range(1, MAX_GPUS_PER_SAMPLE + 1) if _layout_fits(seconds, n)]
            if len(fits) != 1:
                raise InputError(f"{path}: cannot tell how many GPU rows make one sample (no index column, "
                                 f"and {'no' if not fits else 'more than one'} row count fits the sampling "
                                 f"period); {NUM_GPUS_HINT}")
            num_gpus = fits[0]
        samples = len(seconds) // num_gpus
        used = samples * num_gpus
        dropped += len(seconds) - used
        block_times, block_watts = seconds[:used].reshape(samples, num_gpus), watts[:used].reshape(samples, num_gpus)
        for gpu in range(num_gpus):
            rows = np.isfinite(block_times[:, gpu])
            dropped += int((~rows).sum())
            series[gpu] = (block_times[rows, gpu], block_watts[rows, gpu])
        layout = f"{num_gpus} rows per sample, in index order"
    return PowerLog(path, series, power, layout, dropped_rows=int(dropped))


def _wall(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime(SMI_TIME_FORMAT)[:-3]


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
    lists = {k: _number_list(data, k, label) for k in PER_REQUEST_KEYS}
    if isinstance(data.get("errors"), list):
        lists["errors"] = data["errors"]
    n_requests = len(lists["input_lens"])
    uneven = [k for k, v in lists.items() if len(v) != n_requests]
    if uneven:
        raise InputError(f"{label}: {uneven[0]!r} has {len(lists[uneven[0]])} entries, input_lens has {n_requests}")
    rate = _count(data.get("request_rate", "inf"), "request_rate", label, math.inf)
    burstiness = _count(data.get("burstiness"), "burstiness", label, 1.0)
    limit = _count(data.get("max_concurrency"), "max_concurrency", label, None)
    if not rate > 0 or not burstiness > 0 or (limit is not None and not (limit >= 1 and limit == int(limit))):
        raise InputError(f"{label}: request_rate {rate}, burstiness {burstiness} and max_concurrency "
                         f"{limit} must be positive (max_concurrency a whole number)")
    limit = None if limit is None else int(limit)

    def ok(i: int) -> bool:
        ttft, error = lists["ttfts"][i], lists.get("errors", [""] * n_requests)[i]
        return (isinstance(ttft, (int, float)) and math.isfinite(ttft) and ttft > 0
                and not (isinstance(error, str) and error.strip()))

    kept = [i for i in range(n_requests) if ok(i)]
    if not kept:
        raise InputError(f"{label}: no request completed (every request has an error, or TTFT 0 or missing)")
    try:
        ttfts = np.array([lists["ttfts"][i] for i in kept], dtype=float)
        latencies = ttfts + np.array([float(np.sum(lists["itls"][i] or [0.0])) for i in kept])
        inputs = np.array([lists["input_lens"][i] for i in kept], dtype=np.int64)
        outputs = np.array([lists["output_lens"][i] for i in kept], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as err:
        raise InputError(f"{label}: a request's lengths or inter-token latencies are not numbers ({err})") from None
    for key, lengths in (("input_lens", inputs), ("output_lens", outputs)):
        if lengths.min() < 0 or lengths.max() > MAX_TOKENS:
            raise InputError(f"{label}: {key} holds {lengths.min() if lengths.min() < 0 else lengths.max()} "
                             f"tokens; a request's length lies in 0..{MAX_TOKENS:,}")

    def sent_times(key: str) -> np.ndarray:
        """The key's per-request times for the kept requests: it lists all requests or only the
        successful ones."""
        values = _number_list(data, key, label)
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

    # `date` is the end time truncated to whole seconds: the true end lies in [date, date + 1)
    centered_start = date_end + 0.5 - duration
    rebuilt = False
    if "request_timestamps" in data:
        sent = sent_times("request_timestamps")
        first = float(sent.min())
        # epoch seconds vs local wall-clock `date`: the difference is the machine's UTC offset,
        # a whole number of quarter hours, plus under a second of truncation
        raw = date_end - (first + duration)
        offset = round(raw / ZONE_STEP_S) * ZONE_STEP_S
        if abs(raw - offset) > 60.0:
            raise InputError(f"{label}: request_timestamps start {raw - offset:+.0f} s away from date - duration "
                             f"(after a UTC offset of {_utc_offset(offset)}); they must be epoch seconds "
                             f"(time.time()) of the same run")
        # the first successful send is the run's start unless earlier requests failed: then it lies
        # past the latest start `date` allows, and the start is placed from `date` instead
        start = first + offset if first + offset <= date_end + 1.0 - duration + 0.05 else centered_start
        arrivals = sent + offset - start
        source = {"arrivals": "from request_timestamps",
                  "placement": f"request_timestamps on local time (UTC{_utc_offset(offset)}, from date)"}
    elif "start_times" in data:
        sent = sent_times("start_times")
        every = np.array(data["start_times"], dtype=float)
        # time.perf_counter() values have an arbitrary origin; the first request goes out at the start
        origin = float(every.min()) if every.min() > duration else 0.0
        start, arrivals = centered_start, sent - origin
        source = {"arrivals": "from start_times", "placement": "date + 0.5 s - duration"}
    else:
        rng = np.random.default_rng(seed)
        busy = np.zeros(n_requests)
        busy[kept] = latencies
        schedule = _send_schedule(n_requests, rate, burstiness, rng)
        if math.isfinite(rate):
            if not allow_rebuilt:
                raise InputError(f"{label}: no per-request send times (request_timestamps or start_times) and "
                                 f"request_rate {rate:g} makes them random; record with --save-detailed and a "
                                 f"client that saves send times, or pass --allow_rebuilt_arrivals")
            sent, scale = _fit_to_span(schedule, busy, limit, duration, kept)
            how = (f"rebuilt at random: gamma gaps (rate {rate:g}/s, burstiness {burstiness:g}), "
                   f"stretched so the last request ends with the run")
            details = {"seed": seed, "time_scale": scale}
        else:
            sent, details = _with_concurrency(schedule, busy, limit), {}
            how = "rebuilt: all due at once (request_rate inf)"
        if limit is not None:
            how += f", at most {limit} in flight"
        rebuilt, arrivals, start = True, sent[kept], centered_start
        source = {"arrivals": how, "placement": "date + 0.5 s - duration", "request_rate": rate,
                  "burstiness": burstiness, "max_concurrency": limit, **details}
    if np.any(arrivals < -EDGE_TOLERANCE_S) or np.any(arrivals > duration + EDGE_TOLERANCE_S):
        raise InputError(f"{label}: a request was sent outside the run's {duration:.1f} s")
    if latencies.max() > duration + EDGE_TOLERANCE_S:
        raise InputError(f"{label}: a request took {latencies.max():.1f} s, longer than the whole "
                         f"benchmark ({duration:.1f} s)")
    return BenchmarkRun(path, name, start, duration, tp, rate, arrivals, ttfts, latencies, inputs, outputs,
                        n_failed=n_requests - len(kept), arrivals_source=source, rebuilt=rebuilt)


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


def run_watts(run: BenchmarkRun, log: PowerLog, gpus: list[int], timestamps: np.ndarray
              ) -> tuple[np.ndarray, int]:
    """Watts summed over `gpus` at `timestamps`, and how many of their samples during the run had
    no number and were dropped (allowed while no gap exceeds MAX_SAMPLE_GAP_S)."""
    absent = [g for g in gpus if g not in log.series]
    if absent:
        listed = ", ".join(map(str, log.gpus))
        raise InputError(f"{log.path}: has no GPU {absent[0]} (it lists {listed}; {log.layout}); run "
                         f"{run.name} (TP {run.tp}) needs {run.tp}: pass --gpus with the nvidia-smi indices it used")
    total, dropped = np.zeros(len(timestamps)), 0
    low, high = run.start - EDGE_TOLERANCE_S, run.end + EDGE_TOLERANCE_S
    for gpu in gpus:
        times, watts = log.series[gpu]
        back = np.flatnonzero(np.diff(times) <= 0)
        if len(back):
            raise InputError(f"{log.path}: GPU {gpu}: time does not move forward at {_wall(times[back[0] + 1])} "
                             f"({log.layout}); {NUM_GPUS_HINT}")
        window = (times >= low) & (times <= high)
        good = window & np.isfinite(watts)
        dropped += int(window.sum() - good.sum())
        kept = times[good]
        edges = np.concatenate([[run.start], kept, [run.end]])
        worst = int(np.argmax(np.diff(edges)))
        if np.diff(edges)[worst] > MAX_SAMPLE_GAP_S:
            raise InputError(f"{log.path}: GPU {gpu} has no usable {log.column} value for "
                             f"{np.diff(edges)[worst]:.1f} s from {_wall(edges[worst])} during run {run.name}; "
                             f"at most {MAX_SAMPLE_GAP_S:g} s may be missing")
        total += np.interp(timestamps, kept, watts[good])
    return total, dropped


def bin_run(run: BenchmarkRun, log: PowerLog, gpus: list[int],
            period: float = config.SAMPLE_PERIOD_S) -> dict[str, np.ndarray]:
    """One trace on a regular grid over the run's span: watts summed over `gpus` (nvidia-smi
    indices) and the workload; `dropped_power_samples` counts unreadable samples skipped."""
    if log.start > run.start + EDGE_TOLERANCE_S or log.end < run.end - EDGE_TOLERANCE_S:
        raise InputError(f"{log.path}: covers {max(log.start, run.start) - run.start:.1f}-"
                         f"{min(log.end, run.end) - run.start:.1f} s of the {run.duration:.1f} s run "
                         f"{run.name}; the power log must cover the whole run")
    n_bins = int(math.ceil(run.duration / period - 1e-9))
    timestamps = run.start + period * np.arange(n_bins)
    watts, dropped = run_watts(run, log, gpus, timestamps)
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
        "dropped_power_samples": dropped,
    }
