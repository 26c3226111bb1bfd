"""nvidia-smi power logs: `nvidia-smi --query-gpu=timestamp[,index],power.draw,... --format=csv -lms 250`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from model.errors import InputError, refuse_special_file
from model.measurements.common import NUM_GPUS_HINT, SMI_TIME_FORMAT, PowerLog, ReadOptions, Sources

SUFFIX = ".csv"
# Power columns in order of preference: on recent GPUs `power.draw` is a 1 s average, so the
# instantaneous reading is what follows the workload bin by bin.
POWER_COLUMNS = ("power.draw.instant", "power.draw", "power.draw.average")
MAX_GPUS_PER_SAMPLE = 64             # rows-per-sample candidates tried when the log has no index


def read(path: Path, options: ReadOptions) -> Sources:
    """The reader interface (model/measurements/__init__.py): one power log per CSV."""
    return Sources(logs=[read_power_log(path, options.num_gpus)])


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
    uuids: dict[str, int] = {}
    uuid = frame[headers["uuid"]].str.strip().to_numpy()[: len(seconds)] if "uuid" in headers else None
    if "index" in headers or uuid is not None:
        if "index" in headers:
            index = pd.to_numeric(frame[headers["index"]].str.strip(), errors="coerce").to_numpy()[: len(seconds)]
            layout = "index column"
        else:     # GPUs named by UUID alone: numbered in the order they first appear
            names = list(dict.fromkeys(u for u in uuid if u))
            index = np.array([names.index(u) if u else np.nan for u in uuid], dtype=float)
            layout = "uuid column"
        good = np.isfinite(index) & np.isfinite(seconds)
        dropped += int((~good).sum())
        for gpu in np.unique(index[good]).astype(int):
            rows = good & (index == gpu)
            series[int(gpu)] = (seconds[rows], watts[rows])
            if uuid is not None:
                uuids |= {u: int(gpu) for u in dict.fromkeys(uuid[rows]) if u}
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
    return PowerLog(path, series, power, layout, dropped_rows=int(dropped), uuids=uuids)


