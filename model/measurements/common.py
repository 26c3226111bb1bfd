"""What every raw format's reader returns, and the clock they share (docs/design.md, "Raw data").

A reader turns one source file into `Sources`: benchmark runs (the workload side: requests with
their send times, prefill and completion) and power logs (the watts side: per GPU, times and
watts). Both sides carry times on one clock, seconds read as UTC from the recording machine's
local wall-clock time, so that model/measurements/binning.py can pair them by time alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from model.errors import InputError

SMI_TIME_FORMAT = "%Y/%m/%d %H:%M:%S.%f"
EDGE_TOLERANCE_S = 2.0               # the date has 1 s resolution; samples are 0.25 s apart
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
    uuids: dict[str, int] = field(default_factory=dict)   # GPU UUID -> index, where the log has a uuid column

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
    # a native run folder (native_run.py) names its own power log and GPUs, and records the
    # server's settings and vLLM's engine counters; a benchmark JSON has none of these
    power_log: Path | None = None            # the log to pair with, instead of pairing by time
    gpus: list[int] | None = None            # the log's GPU indices the run used
    server: dict = field(default_factory=dict)   # model/data.py SERVER_KEYS that the run records
    engine: "EngineCounters | None" = None

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class EngineCounters:
    """vLLM's own scheduler counters sampled during a run (native run folders' engine.csv)."""
    path: Path
    times: np.ndarray            # (S,) seconds, same clock as the run
    running: np.ndarray          # (S,) requests running
    waiting: np.ndarray          # (S,) requests waiting
    prompt_tokens: np.ndarray    # (S,) cumulative prompt tokens counted by the engine
    generation_tokens: np.ndarray  # (S,) cumulative generated tokens


def decode_seconds(itl, output_tokens: int, label: str) -> float:
    """A request's decode time from its `itls` entry: a list holds every inter-token latency
    (vLLM's benchmark) and is summed; a number is the request's mean inter-token latency (the
    campaign's native requests.json), so its decode lasts mean x (output tokens - 1)."""
    if isinstance(itl, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in itl):
        return float(np.sum(itl)) if itl else 0.0
    if isinstance(itl, (int, float)) and not isinstance(itl, bool) and np.isfinite(itl) and itl >= 0:
        return float(itl) * max(int(output_tokens) - 1, 0)
    raise InputError(f"{label}: 'itls' holds {str(itl)[:40]!r} for a request; expected a list of "
                     "inter-token latencies or one mean inter-token latency in seconds")


@dataclass
class Sources:
    """What a reader found in one file: runs, power logs, or neither (`skipped` says why)."""
    runs: list[BenchmarkRun] = field(default_factory=list)
    logs: list[PowerLog] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (file name, why), reported as unmatched

    def __iadd__(self, other: "Sources") -> "Sources":
        self.runs += other.runs
        self.logs += other.logs
        self.skipped += other.skipped
        return self


@dataclass(frozen=True)
class ReadOptions:
    """The prepare_data flags a reader may need."""
    num_gpus: int | None = None          # nvidia-smi: GPU rows per sample without an index column
    seed: int = 0                        # vLLM JSON: for rebuilt send times
    allow_rebuilt: bool = False          # vLLM JSON: accept random rebuilt send times


def _clock(text: str, fmt: str) -> float:
    return datetime.strptime(text.strip(), fmt).replace(tzinfo=timezone.utc).timestamp()


def _wall(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime(SMI_TIME_FORMAT)[:-3]


