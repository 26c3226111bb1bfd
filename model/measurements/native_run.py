"""Run folders of the measurement campaign's native layout (docs/design.md, "Raw data").

One folder per run, found anywhere under `--runs`:

    manifest.json   the run: `tp`, `server` (its limits, `active_gpu_uuids`, prefix caching),
                    `versions.vllm`, `clock` (each file's time basis and the UTC offset) and
                    `probe.window` (the run's start and end, epoch seconds)
    requests.json   per request: `input_lens`, `output_lens`, `ttfts`, `itls` (one mean
                    inter-token latency per request, or a list of them) and `request_timestamps`
                    (epoch seconds)
    power.csv       nvidia-smi log with `index` and `uuid` columns (local wall time)
    engine.csv      optional: vLLM's scheduler counters about every 0.26 s (epoch seconds)

Everything is moved onto the readers' common clock (common.py: local wall time read as UTC) with
the manifest's `clock.local_utc_offset_s`; the run pairs with its own power.csv, and its GPUs are
the log's rows whose `uuid` the manifest lists in `server.active_gpu_uuids`.
"""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from model.errors import InputError, refuse_special_file, strict_json
from model.measurements.common import (EDGE_TOLERANCE_S, BenchmarkRun, EngineCounters, PowerLog, ReadOptions,
                                       Sources)
from model.measurements.nvidia_smi import read_power_log
from model.measurements.vllm_json import _completed, _request_lists

SUFFIX = "manifest.json"
RECURSIVE = True                     # run folders are found anywhere under --runs
REQUESTS, POWER, ENGINE = "requests.json", "power.csv", "engine.csv"
RUN_FILES = (SUFFIX, REQUESTS, POWER, ENGINE)     # the files a run folder's format claims
ENGINE_COLUMNS = ("timestamp", "num_requests_running", "num_requests_waiting", "prompt_tokens_total",
                  "generation_tokens_total")
# the bases each clock may have, and how far a manifest's reference time may stray from its offset
POWER_BASES, EPOCH_BASIS = ("local_wall_time", "unix_epoch"), "unix_epoch"
REFERENCE_TOLERANCE_S = 1.0


def read(path: Path, options: ReadOptions) -> Sources:
    """The reader interface (model/measurements/__init__.py): a manifest.json and its folder ->
    one run paired with its own power log."""
    folder = path.parent
    manifest = _json(path)
    offset = _clock_offset(manifest, path)
    tp = _field(manifest, "tp", path)
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise InputError(f"{path}: tp {tp!r} is not a positive integer")
    for name in (REQUESTS, POWER):
        if not (folder / name).is_file():
            raise InputError(f"{folder}: a run folder with {SUFFIX} needs {name} beside it")
    log = _power_log(folder / POWER, manifest, path, offset, options)
    run = _run(folder, manifest, path, offset, tp)
    run.power_log = log.path
    run.gpus = _gpus(manifest, path, log, tp)
    if (folder / ENGINE).is_file():
        run.engine = read_engine(folder / ENGINE, offset + _number(manifest, "clock.engine_epoch_offset_s", path, 0.0))
    return Sources(runs=[run], logs=[log])


def claims(path: Path) -> bool:
    """Whether a manifest.json found under --runs is a run's: one with requests.json or
    power.csv beside it (a site's output folder, say, has a manifest.json of another kind)."""
    return (path.parent / REQUESTS).exists() or (path.parent / POWER).exists()


def is_run_folder_without_manifest(folder: Path) -> bool:
    """A folder that looks like a native run (requests.json and power.csv) but lacks its manifest."""
    return (folder / REQUESTS).is_file() and (folder / POWER).is_file() and not (folder / SUFFIX).exists()


def _json(path: Path) -> dict:
    refuse_special_file(path, "JSON file")
    try:
        value = strict_json(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read it ({err})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: holds a {type(value).__name__}, not a JSON object")
    return value


_MISSING = object()


def _field(manifest: dict, dotted: str, path: Path, default=_MISSING):
    """manifest["a"]["b"] for "a.b"; InputError naming the key when it is missing (and no default)."""
    value = manifest
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            if default is not _MISSING:
                return default
            raise InputError(f"{path}: key {dotted!r} is missing")
        value = value[part]
    return value


def _number(manifest: dict, dotted: str, path: Path, default=_MISSING) -> float:
    value = _field(manifest, dotted, path, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{path}: {dotted} {value!r} is not a number")
    return float(value)


def _clock_offset(manifest: dict, path: Path) -> float:
    """Seconds from epoch time to the common clock (local wall time read as UTC): the manifest's
    `clock.local_utc_offset_s`, checked against its reference time when it has one."""
    offset = _number(manifest, "clock.local_utc_offset_s", path)
    for key in ("request_timestamp_basis", "engine_timestamp_basis"):
        basis = _field(manifest, f"clock.{key}", path, EPOCH_BASIS)
        if basis != EPOCH_BASIS:
            raise InputError(f"{path}: clock.{key} {basis!r} is not {EPOCH_BASIS!r}, the only basis read")
    reference, local = (_field(manifest, f"clock.{k}", path, None) for k in ("reference_epoch_s", "reference_local_iso8601"))
    if reference is not None:
        reference = _number(manifest, "clock.reference_epoch_s", path)
    if reference is not None and local is not None:
        try:
            stamp = datetime.fromisoformat(str(local))
        except ValueError:
            raise InputError(f"{path}: clock.reference_local_iso8601 {local!r} is not an ISO 8601 time") from None
        if stamp.utcoffset() is not None and (abs(stamp.timestamp() - float(reference)) > REFERENCE_TOLERANCE_S
                                              or abs(stamp.utcoffset().total_seconds() - offset) > REFERENCE_TOLERANCE_S):
            raise InputError(f"{path}: clock.reference_local_iso8601 {local} disagrees with reference_epoch_s "
                             f"{reference} and local_utc_offset_s {offset:g}")
    return offset


def _power_log(path: Path, manifest: dict, manifest_path: Path, offset: float, options: ReadOptions) -> PowerLog:
    """power.csv on the common clock: local wall-time stamps are already on it (plus the
    manifest's `power_epoch_offset_s` correction); UTC stamps move by the UTC offset."""
    basis = _field(manifest, "clock.power_timestamp_basis", manifest_path, POWER_BASES[0])
    if basis not in POWER_BASES:
        raise InputError(f"{manifest_path}: clock.power_timestamp_basis {basis!r} is not one of "
                         f"{', '.join(POWER_BASES)}")
    log = read_power_log(path, options.num_gpus)
    shift = _number(manifest, "clock.power_epoch_offset_s", manifest_path, 0.0) + (offset if basis == EPOCH_BASIS else 0.0)
    if shift:
        log.series = {gpu: (times + shift, watts) for gpu, (times, watts) in log.series.items()}
    return log


def _gpus(manifest: dict, path: Path, log: PowerLog, tp: int) -> list[int]:
    """The log's GPU indices the run used: its rows whose uuid the manifest lists in
    server.active_gpu_uuids (without that list, every GPU of a log that holds exactly TP)."""
    uuids = _field(manifest, "server.active_gpu_uuids", path, None)
    if uuids is None:
        if len(log.gpus) != tp:
            raise InputError(f"{path}: tp {tp} but server.active_gpu_uuids is missing and {log.path.name} "
                             f"holds {len(log.gpus)} GPUs; list the run's GPU UUIDs in server.active_gpu_uuids")
        return log.gpus
    if not isinstance(uuids, list) or not all(isinstance(u, str) for u in uuids):
        raise InputError(f"{path}: server.active_gpu_uuids is not a list of GPU UUIDs")
    if len(uuids) != tp:
        raise InputError(f"{path}: tp {tp} disagrees with server.active_gpu_uuids, which lists "
                         f"{len(uuids)} GPU{'s' if len(uuids) != 1 else ''}")
    absent = [u for u in uuids if u not in log.uuids]
    if absent:
        held = f"GPUs {', '.join(log.uuids)}" if log.uuids else "no uuid column"
        raise InputError(f"{log.path}: has no GPU {absent[0]} (it holds {held}); {path.name} lists it "
                         f"in server.active_gpu_uuids for tp {tp}")
    return [log.uuids[u] for u in uuids]


def server_settings(manifest: dict, path: Path) -> dict:
    """What the manifest records of the server (the model/data.py SERVER_KEYS it has)."""
    found = {"max_num_seqs": _field(manifest, "server.max_num_seqs", path, None),
             "max_num_batched_tokens": _field(manifest, "server.max_num_batched_tokens", path, None),
             "chunked_prefill": _field(manifest, "server.enable_chunked_prefill", path, None),
             "prefix_caching": _field(manifest, "server.enable_prefix_caching", path,
                                      _field(manifest, "probe.prefix_cache", path, None)),
             "vllm_version": _field(manifest, "versions.vllm", path, None)}
    for key in ("max_num_seqs", "max_num_batched_tokens"):
        value = found[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{path}: server.{key} {value!r} is not a positive integer")
    for key, name in (("chunked_prefill", "server.enable_chunked_prefill"),
                      ("prefix_caching", "server.enable_prefix_caching")):
        if found[key] is not None and not isinstance(found[key], bool):
            raise InputError(f"{path}: {name} {found[key]!r} is not true or false")
    if found["vllm_version"] is not None:
        found["vllm_version"] = str(found["vllm_version"])
    return {k: v for k, v in found.items() if v is not None}


def _run(folder: Path, manifest: dict, path: Path, offset: float, tp: int) -> BenchmarkRun:
    """The run's requests on the common clock, from its start (`probe.window`)."""
    start = _number(manifest, "probe.window.start_epoch", path)
    end = _number(manifest, "probe.window.end_epoch", path)
    if not end > start:
        raise InputError(f"{path}: probe.window ends ({end}) before it starts ({start})")
    requests_path = folder / REQUESTS
    data = _json(requests_path)
    label = str(requests_path)
    if "request_timestamps" not in data:
        raise InputError(f"{label}: key 'request_timestamps' is missing")
    lists = _request_lists(data, label)
    kept, ttfts, latencies, inputs, outputs = _completed(lists, len(lists["input_lens"]), label)
    try:
        sent = np.array(data["request_timestamps"], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{label}: 'request_timestamps' holds something that is not a number") from None
    if sent.ndim != 1 or len(sent) not in (len(lists["input_lens"]), len(kept)) or not np.isfinite(sent).all():
        raise InputError(f"{label}: 'request_timestamps' must hold one epoch time per request")
    if len(sent) != len(kept):
        sent = sent[kept]
    duration = end - start
    arrivals = sent - start
    if np.any(arrivals < -EDGE_TOLERANCE_S) or np.any(arrivals > duration + EDGE_TOLERANCE_S):
        raise InputError(f"{label}: a request was sent outside the run's window (probe.window in {path.name}); "
                         "request_timestamps must be epoch seconds of the same run")
    rid = _field(manifest, "run_id", path, folder.name)
    return BenchmarkRun(requests_path, str(rid), start + offset, duration, tp, len(kept) / duration,
                        arrivals, ttfts, latencies, inputs, outputs, n_failed=len(lists["input_lens"]) - len(kept),
                        arrivals_source={"arrivals": "from request_timestamps",
                                         "placement": f"probe.window of {SUFFIX}, clock.local_utc_offset_s {offset:g} s"},
                        server=server_settings(manifest, path))


def read_engine(path: Path, shift: float) -> EngineCounters:
    """engine.csv: vLLM's running and waiting requests and its cumulative token counters, its
    epoch times moved by `shift` onto the common clock."""
    refuse_special_file(path, "engine CSV")
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in ENGINE_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: column {missing[0]!r} is missing")
    values = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float) for c in ENGINE_COLUMNS}
    good = np.all([np.isfinite(v) for v in values.values()], axis=0)
    if good.sum() < 2:
        raise InputError(f"{path}: fewer than 2 rows of numbers")
    if np.any(np.diff(values["timestamp"][good]) <= 0):
        raise InputError(f"{path}: 'timestamp' does not increase row by row")
    return EngineCounters(path, values["timestamp"][good] + shift, values["num_requests_running"][good],
                          values["num_requests_waiting"][good], values["prompt_tokens_total"][good],
                          values["generation_tokens_total"][good])


def engine_agreement(engine: EngineCounters, run: BenchmarkRun, period: float) -> dict:
    """How well the run's requests agree with vLLM's own counters, at the engine's samples within
    the run's window: the Pearson r of the requests in flight at each sample's time (sent and
    not yet finished, the engine's own kind of count) with its running + waiting, and the
    engine's token totals over the window (the counters at the last sample at or before its end
    minus the last before its start: counts from before, the server's warm-up, are not the
    run's) against the requests' sums. `samples_expected`: the window over the engine's median
    sample interval, so that an engine clock set wrongly shows as samples missing."""
    times = engine.times
    within = (times >= run.start) & (times <= run.end)
    sent = run.start + run.arrivals
    done = sent + run.latencies
    at = times[within]
    in_flight = ((sent[None, :] <= at[:, None]) & (at[:, None] < done[None, :])).sum(axis=1).astype(float)
    queue = (engine.running + engine.waiting)[within]
    r = (float(np.corrcoef(in_flight, queue)[0, 1]) if len(at) > 1 and np.std(in_flight) > 0 and np.std(queue) > 0
         else float("nan"))
    before = np.searchsorted(times, run.start, side="right") - 1      # last sample at or before the start
    last = np.searchsorted(times, run.end, side="right") - 1           # ... at or before the end
    step = float(np.median(np.diff(times))) if len(times) > 1 else period

    def over_window(counter: np.ndarray) -> float:
        if last < 0 or not within.any():
            return float("nan")             # no sample inside the window: nothing to compare
        return float(counter[last] - (counter[before] if before >= 0 else counter[np.argmax(within)]))
    return {
        "engine_file": engine.path.name, "samples_compared": int(within.sum()),
        "samples_expected": int(run.duration // step) if step > 0 else 0,
        "in_flight_vs_running_plus_waiting_r": r,
        "most_running": int(engine.running[within].max(initial=0)),
        "most_running_plus_waiting": int(queue.max(initial=0)),
        "most_in_flight": int(in_flight.max(initial=0)),
        "prompt_tokens_engine": over_window(engine.prompt_tokens),
        "prompt_tokens_requests": float(np.sum(run.input_tokens)),
        "generation_tokens_engine": over_window(engine.generation_tokens),
        "generation_tokens_requests": float(np.sum(run.output_tokens)),
    }
