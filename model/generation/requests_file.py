"""Request streams: the CSV files the generator reads and writes, and Poisson traffic.

    requests, notes = read_requests("day.csv")     # ours, or the public Azure LLM inference trace
    write_requests("stream.csv", requests)
    requests = poisson_requests(rate=2.0, duration_s=3600, pool=(inputs, outputs), seed=0)

Two formats, told apart by the header:
- ours: `arrival_time_s,input_tokens,output_tokens`, arrivals in seconds;
- Azure LLM inference trace: `TIMESTAMP,ContextTokens,GeneratedTokens`, TIMESTAMP a date and
  time (e.g. `2024-03-05 09:00:10.2500000`); arrivals are counted from its first request.
Rows out of time order are sorted, and a note says how many were.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from model.errors import InputError, refuse_special_file
from model.generation.generator import Requests
from model.outputs import atomic_path

OURS = ("arrival_time_s", "input_tokens", "output_tokens")
AZURE = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def _arrival_seconds(path: Path, frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    if columns == AZURE:
        try:
            stamps = pd.to_datetime(frame["TIMESTAMP"], format="ISO8601")
        except (ValueError, TypeError) as err:
            raise InputError(f"{path}: column TIMESTAMP holds a value that is not a date and time "
                             f"({str(err).splitlines()[0][:120]})") from None
        if stamps.isna().any():
            raise InputError(f"{path}: column TIMESTAMP has an empty value at row {int(stamps.isna().argmax()) + 2}")
        return (stamps - stamps.min()).dt.total_seconds().to_numpy()
    return _numeric(path, frame, columns[0])


def _numeric(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if len(bad):
        raise InputError(f"{path}: column {column} has a negative, empty or non-numeric value "
                         f"{frame[column].iloc[bad[0]]!r} at row {bad[0] + 2}")
    return values


def read_requests(path: Path | str) -> tuple[Requests, list[str]]:
    """The requests of a CSV file, sorted by arrival, and notes on what was changed."""
    path = Path(path)
    refuse_special_file(path, "requests file")
    if not path.is_file():
        raise InputError(f"{path}: requests file not found" + (" (a directory)" if path.is_dir() else ""))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the requests file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable CSV ({str(err).splitlines()[0][:120]})") from None
    header = [str(c).strip() for c in frame.columns]
    frame.columns = header
    columns = next((c for c in (OURS, AZURE) if all(name in header for name in c)), None)
    if columns is None:
        raise InputError(f"{path}: header {','.join(header)!r} names neither {','.join(OURS)} "
                         f"nor the Azure trace's {','.join(AZURE)}")
    if frame.empty:
        raise InputError(f"{path}: holds no requests (only a header)")
    arrivals = _arrival_seconds(path, frame, columns)
    inputs, outputs = _numeric(path, frame, columns[1]), _numeric(path, frame, columns[2])
    notes = []
    order = np.argsort(arrivals, kind="stable")
    unsorted = int(np.sum(np.diff(arrivals) < 0))
    if unsorted:
        notes.append(f"{path}: {unsorted} request(s) out of time order; sorted by arrival")
    return Requests(arrivals[order], inputs[order], outputs[order]), notes


def write_requests(path: Path | str, requests: Requests) -> None:
    frame = pd.DataFrame({OURS[0]: requests.arrival_s, OURS[1]: requests.input_tokens.astype(np.int64),
                          OURS[2]: requests.output_tokens.astype(np.int64)})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def poisson_requests(rate: float, duration_s: float, pool: tuple[np.ndarray, np.ndarray],
                     seed: int) -> Requests:
    """Poisson arrivals at `rate` per second over [0, duration_s), each request's (input, output)
    lengths drawn together from the pool of training requests (so their pairing is kept)."""
    if not rate > 0 or not np.isfinite(rate):
        raise InputError(f"--rate must be a positive number of requests per second, got {rate}")
    if not duration_s > 0 or not np.isfinite(duration_s):
        raise InputError(f"--duration must be a positive number of seconds, got {duration_s}")
    if len(pool[0]) == 0:
        raise InputError("the checkpoint holds no training requests to draw token lengths from")
    return poisson_stream(rate, duration_s, pool, seed)


def poisson_stream(rate: float, duration_s: float, pool: tuple[np.ndarray, np.ndarray], seed,
                   diurnal: np.ndarray | None = None, start_s: float = 0.0) -> Requests:
    """Poisson arrivals at `rate` per second over [start_s, start_s + duration_s), shaped by
    hour-of-day multipliers when given (thinning: arrivals at the highest rate, each kept with
    multiplier / highest; a negative time is in the hours before midnight); each request's
    (input, output) lengths drawn together from `pool`, the training requests (so their pairing
    is kept). `seed`: anything numpy's default_rng takes. Checks nothing: the commands check
    their flags."""
    rng = np.random.default_rng(seed)
    top = rate * (float(diurnal.max()) if diurnal is not None else 1.0)
    arrivals = np.sort(rng.uniform(start_s, start_s + duration_s, rng.poisson(top * duration_s)))
    if diurnal is not None:
        keep = rng.random(len(arrivals)) < diurnal[np.floor(arrivals / 3600).astype(int) % 24] / diurnal.max()
        arrivals = arrivals[keep]
    pick = rng.integers(0, len(pool[0]), len(arrivals))
    return Requests(arrivals, np.asarray(pool[0], dtype=np.float64)[pick],
                    np.asarray(pool[1], dtype=np.float64)[pick])
