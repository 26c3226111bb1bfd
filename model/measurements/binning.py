"""A benchmark run and the power log that covers it -> one trace in the data file's keys."""
from __future__ import annotations

import math

import numpy as np

from model import config
from model.errors import InputError
from model.features import bin_range_sums
from model.measurements.common import EDGE_TOLERANCE_S, NUM_GPUS_HINT, BenchmarkRun, PowerLog, _wall

MIN_OVERLAP_SHARE = 0.5              # a power log pairs with a run it covers at least half of
MAX_SAMPLE_GAP_S = 2.0              # the default of prepare_data's --max_gap_s


def overlap_s(run: BenchmarkRun, log: PowerLog) -> float:
    return max(0.0, min(run.end, log.end) - max(run.start, log.start))


def pair_runs(runs: list[BenchmarkRun], logs: list[PowerLog]
              ) -> tuple[list[tuple[BenchmarkRun, PowerLog]], list[BenchmarkRun], list[PowerLog]]:
    """Each run with the power log that covers most of its span (at least half of it), by time
    alone, or with the log it names (a native run folder's own power.csv, which no other run
    takes); then the runs and logs left without a partner."""
    pairs, lonely_runs = [], []
    named = {run.power_log for run in runs if run.power_log is not None}
    by_path = {log.path: log for log in logs}
    free = [log for log in logs if log.path not in named]
    for run in sorted(runs, key=lambda r: r.start):
        if run.power_log is not None:
            pairs.append((run, by_path[run.power_log]))
            continue
        best = max(free, key=lambda log: overlap_s(run, log), default=None)
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
    return bin_range_sums(first, last, np.asarray(weights, dtype=np.float64), n_bins)


def run_watts(run: BenchmarkRun, log: PowerLog, gpus: list[int], timestamps: np.ndarray,
              max_gap_s: float = MAX_SAMPLE_GAP_S) -> tuple[np.ndarray, int]:
    """Watts summed over `gpus` at `timestamps`, and how many of their samples during the run had
    no number and were dropped (allowed while no hole in a GPU's values exceeds `max_gap_s`;
    the watts across a hole are interpolated)."""
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
        hole = float(np.diff(edges)[worst])
        if hole > max_gap_s:
            # to the millisecond: a 2.03 s hole printed as "2.0 s" reads as within a 2 s limit
            raise InputError(f"{log.path}: GPU {gpu} has no usable {log.column} value for "
                             f"{hole:.3f} s from {_wall(edges[worst])} during run {run.name}; "
                             f"at most {max_gap_s:g} s may be missing (--max_gap_s)")
        total += np.interp(timestamps, kept, watts[good])
    return total, dropped


def bin_run(run: BenchmarkRun, log: PowerLog, gpus: list[int],
            period: float = config.SAMPLE_PERIOD_S, max_gap_s: float = MAX_SAMPLE_GAP_S) -> dict[str, np.ndarray]:
    """One trace on a regular grid over the run's span: watts summed over `gpus` (nvidia-smi
    indices) and the workload; `dropped_power_samples` counts unreadable samples skipped."""
    if log.start > run.start + EDGE_TOLERANCE_S or log.end < run.end - EDGE_TOLERANCE_S:
        raise InputError(f"{log.path}: covers {max(log.start, run.start) - run.start:.1f}-"
                         f"{min(log.end, run.end) - run.start:.1f} s of the {run.duration:.1f} s run "
                         f"{run.name}; the power log must cover the whole run")
    n_bins = int(math.ceil(run.duration / period - 1e-9))
    timestamps = run.start + period * np.arange(n_bins)
    watts, dropped = run_watts(run, log, gpus, timestamps, max_gap_s)
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
