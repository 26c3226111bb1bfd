"""The `.npz` power-trace file format (docs/design.md, "Data files"): reader and writer.

    from model.data import load_power_file, write_power_file
    data = load_power_file("model/training_data/vllm-benchmark_llama-3-8b_a100.npz")
    traces = data.traces_for_tp(2)
    write_power_file(path, runs, tensor_parallelism=[...])   # runs: one dict of arrays each

Every defect raises DataError naming the file and what is wrong.
"""
from __future__ import annotations

import hashlib
import sys
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from model.errors import InputError, refuse_special_file
from model.outputs import write_npz

BIN_KEYS = ("timestamps", "power_traces", "prefill_tokens", "decode_tokens", "active_requests")
REQUEST_KEYS = ("request_timestamps", "input_tokens", "output_tokens")
REQUIRED_KEYS = BIN_KEYS + REQUEST_KEYS + ("tensor_parallelism",)
# plausible watts of one trace (a server's TP GPUs summed): beyond them the numbers are not
# watts, and the statistics would overflow or underflow into NaN metrics
MAX_TRACE_W, MIN_PEAK_W = 1e6, 1e-3
# Optional (N,) arrays of what each run's server was set to, as prepare_data reads it from a
# native run folder's manifest (docs/design.md, "Data files"), each with the value that means
# "not recorded": whole numbers, -1/0/1 for a switch, text for the vLLM version.
SERVER_KEYS = {"max_num_seqs": 0, "max_num_batched_tokens": 0, "chunked_prefill": -1, "prefix_caching": -1,
               "vllm_version": ""}
OPTIONAL_KEYS = ("trace_lengths", "simulated", *SERVER_KEYS)


class DataError(InputError):
    """A data file is missing, unreadable or inconsistent."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass
class Workload:
    """What the server did in one run, L bins and R requests: everything but the watts.

    Code that must never see measured power (features, the serving model, generation) takes
    a Workload, so it cannot.
    """
    timestamps: np.ndarray       # (L,) seconds
    prefill_tokens: np.ndarray   # (L,)
    decode_tokens: np.ndarray    # (L,)
    active_requests: np.ndarray  # (L,)
    request_times: np.ndarray    # (R,) arrival times, same clock as timestamps
    input_tokens: np.ndarray     # (R,)
    output_tokens: np.ndarray    # (R,)

    def __len__(self) -> int:
        return len(self.timestamps)


@dataclass
class Trace:
    """One measured run, cut to its true length L: its workload and its watts (the target)."""
    index: int                   # row in the file
    tp: int
    workload: Workload
    power: np.ndarray            # (L,) watts summed over the TP GPUs
    server: dict = field(default_factory=dict)   # the SERVER_KEYS the file records for this run

    def __len__(self) -> int:
        return len(self.power)

    # read-only shortcuts for code that may see both
    timestamps = property(lambda self: self.workload.timestamps)
    prefill_tokens = property(lambda self: self.workload.prefill_tokens)
    decode_tokens = property(lambda self: self.workload.decode_tokens)
    active_requests = property(lambda self: self.workload.active_requests)
    request_times = property(lambda self: self.workload.request_times)
    input_tokens = property(lambda self: self.workload.input_tokens)
    output_tokens = property(lambda self: self.workload.output_tokens)


def trace_sha256(trace: Trace) -> str:
    """A trace's content (TP, watts and workload, as float64), whatever file or row holds it:
    the same trace saved again, or in another file, has the same hash."""
    digest = hashlib.sha256(f"tp{trace.tp}".encode())
    for values in (trace.power, *(getattr(trace.workload, f.name) for f in fields(trace.workload))):
        digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


@dataclass
class PowerData:
    path: Path
    traces: list[Trace]
    simulated: bool = False      # written by model/demo_data.py, not measured

    @property
    def tp_values(self) -> list[int]:
        return sorted({t.tp for t in self.traces})

    def traces_for_tp(self, tp: int, min_traces: int = 2) -> list[Trace]:
        selected = [t for t in self.traces if t.tp == tp]
        if not selected:
            raise DataError(self.path, f"no traces with TP {tp}; the file holds TP "
                                       f"{', '.join(map(str, self.tp_values))}")
        if len(selected) < min_traces:
            raise DataError(self.path, f"TP {tp} has {len(selected)} trace; at least "
                                       f"{min_traces} are needed to train and validate")
        return selected


def true_length(timestamps: np.ndarray) -> int:
    """Longest prefix that is positive and strictly increasing.

    Handles both padding conventions of real files: a ramp falling to 0, and zeros.
    A first timestamp of exactly 0 (relative clock) is accepted.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if len(ts) == 0 or not np.isfinite(ts[0]) or ts[0] < 0:
        return 0
    steps_ok = np.isfinite(ts[1:]) & (np.diff(ts) > 0)
    bad = np.flatnonzero(~steps_ok)
    return int(bad[0] + 1) if len(bad) else len(ts)


def _bins_after_cut(timestamps: np.ndarray, length: int) -> int:
    """How many bins of data a cut at `length` drops: none when the rest is padding (zeros or a
    ramp falling to 0), else the bins up to the last one that still increases."""
    rest = np.asarray(timestamps[length:], dtype=np.float64)
    increasing = np.flatnonzero(np.diff(rest) > 0)
    return int(increasing[-1] + 2) if len(increasing) else 0


def _check_declared_sizes(path: Path, archive: zipfile.ZipFile) -> None:
    """Refuse a member whose header declares more data than the member holds, before numpy
    allocates what the header says (a few bytes can declare hundreds of GiB)."""
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            continue
        key = info.filename[:-4]
        try:
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
                header_bytes = member.tell()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(path, f"key {key!r} has a damaged array header: {err}") from None
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if declared > info.file_size - header_bytes:
            raise DataError(path, f"key {key!r} declares {declared:,} bytes of data (shape {shape}) but "
                                  f"holds {info.file_size - header_bytes:,}; damaged or crafted file")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        if path.is_symlink():
            raise DataError(path, "is a symbolic link that leads nowhere (a loop, or its target is gone)")
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a directory, not an .npz file")
    try:
        refuse_special_file(path, "data file")
    except InputError as err:
        raise DataError(path, str(err).removeprefix(f"{path}: ")) from None
    try:
        # is_zipfile() answers False for a file it cannot open, which would read as "not a zip"
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise DataError(path, f"cannot be read: {err.strerror or err}") from None
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty")
    if not zipfile.is_zipfile(path):
        raise DataError(path, "not a readable .npz file (not a zip archive: truncated, or another format)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise DataError(path, "is a single .npy array, not an .npz archive")
            keys = list(npz.files)
            _check_declared_sizes(path, npz.zip)
            missing = [k for k in REQUIRED_KEYS if k not in keys]
            if missing:
                raise DataError(path, f"missing key {missing[0]!r}; keys found: {', '.join(keys) or 'none'}")
            wanted = REQUIRED_KEYS + tuple(k for k in OPTIONAL_KEYS if k in keys)
            arrays = {}
            for key in wanted:
                try:
                    arrays[key] = npz[key]
                except ValueError as err:
                    if "pickle" in str(err).lower():
                        raise DataError(path, f"key {key!r} holds pickled Python objects, which are "
                                              "never loaded (allow_pickle=False)") from None
                    raise DataError(path, f"key {key!r} cannot be read: {err}") from None
                except (zipfile.BadZipFile, EOFError, OSError, KeyError) as err:
                    raise DataError(path, f"key {key!r} is damaged (truncated file?): {err}") from None
            return arrays
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError) as err:
        raise DataError(path, f"not a readable .npz file (truncated or damaged?): {err}") from None
    except (ValueError, OSError) as err:
        if "pickle" in str(err).lower():
            raise DataError(path, "holds pickled Python objects, which are never loaded "
                                  "(allow_pickle=False)") from None
        raise DataError(path, f"not a readable .npz file: {err}") from None


def _check_numeric(path: Path, key: str, array: np.ndarray) -> None:
    if key == "vllm_version":
        if array.dtype.kind != "U":
            raise DataError(path, f"key {key!r} has dtype {array.dtype}, expected text")
        return
    if array.dtype.kind not in "biuf":
        raise DataError(path, f"key {key!r} has dtype {array.dtype}, expected numbers")


def _check_shapes(path: Path, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    """The file's arrays agree on N traces, T bins and R requests, TP sizes are positive
    integers; returns `trace_lengths` (None when absent), checked against T."""
    tp = arrays["tensor_parallelism"]
    if tp.ndim != 1:
        raise DataError(path, f"'tensor_parallelism' has shape {tp.shape}, expected (N,)")
    n = len(tp)
    if n == 0:
        raise DataError(path, "holds no traces (tensor_parallelism is empty)")
    for keys, axis in ((BIN_KEYS, "T"), (REQUEST_KEYS, "R")):
        first = keys[0]
        shape = arrays[first].shape
        if len(shape) != 2 or shape[0] != n:
            raise DataError(path, f"{first!r} has shape {shape}, expected (N={n}, {axis})")
        for key in keys:
            if arrays[key].shape != shape:
                raise DataError(path, f"{key!r} has shape {arrays[key].shape}, but {first!r} has {shape}")
    bin_shape = arrays["timestamps"].shape
    if not np.all(np.isfinite(tp)) or np.any(tp < 1) or np.any(tp != np.round(tp)):
        raise DataError(path, "'tensor_parallelism' holds a value that is not a positive integer")
    lengths = arrays.get("trace_lengths")
    if lengths is not None:
        if lengths.shape != (n,):
            raise DataError(path, f"'trace_lengths' has shape {lengths.shape}, expected ({n},)")
        if np.any(lengths < 1) or np.any(lengths > bin_shape[1]) or np.any(lengths != np.round(lengths)):
            raise DataError(path, f"'trace_lengths' must be integers in 1..{bin_shape[1]}")
    for key, unknown in SERVER_KEYS.items():
        if key in arrays:
            values = arrays[key]
            if values.shape != (n,):
                raise DataError(path, f"{key!r} has shape {values.shape}, expected ({n},)")
            if key != "vllm_version" and (not np.all(np.isfinite(values)) or np.any(values != np.round(values))
                                          or np.any(values < unknown) or (unknown < 0 and np.any(values > 1))):
                allowed = "-1 (not recorded), 0 or 1" if unknown < 0 else "whole numbers, 0 when not recorded"
                raise DataError(path, f"{key!r} must hold {allowed}")
    _check_one_prefix_caching(path, arrays.get("prefix_caching"))
    return lengths


def _check_one_prefix_caching(path: Path, prefix_caching: np.ndarray | None) -> None:
    """Cache-on and cache-off runs are two configurations (docs/design.md, "Raw data"): the same
    requests drew half the energy with vLLM's prefix cache on, with identical features."""
    if prefix_caching is not None and {0, 1} <= set(np.asarray(prefix_caching).astype(int).tolist()):
        on = np.flatnonzero(prefix_caching == 1).tolist()
        off = np.flatnonzero(prefix_caching == 0).tolist()
        raise DataError(path, f"mixes runs with vLLM's prefix cache on (traces {on}) and off (traces {off}); "
                              "they are two configurations: put them in separate data files")


def server_of(arrays: dict[str, np.ndarray], i: int) -> dict:
    """Trace i's recorded server settings (SERVER_KEYS present and not "not recorded")."""
    found = {}
    for key, unknown in SERVER_KEYS.items():
        if key in arrays and arrays[key][i] != unknown:
            value = arrays[key][i]
            found[key] = str(value) if key == "vllm_version" else (
                bool(value) if unknown < 0 else int(value))
    return found


def _trace_length(path: Path, arrays: dict[str, np.ndarray], i: int, lengths: np.ndarray | None,
                  notes: list[str]) -> int:
    """Trace i's true length: `trace_lengths`, else where its timestamps stop increasing."""
    length = int(lengths[i]) if lengths is not None else true_length(arrays["timestamps"][i])
    if length < 2:
        raise DataError(path, f"trace {i} has {length} valid bins (timestamps must be "
                              "positive and increasing)")
    if lengths is None:
        dropped = _bins_after_cut(arrays["timestamps"][i], length)
        if dropped > length:
            raise DataError(path, f"trace {i}: timestamps stop increasing at bin {length}, but "
                                  f"{dropped} more bins of data follow; fix the timestamps or give "
                                  "'trace_lengths'")
        if dropped:
            notes.append(f"trace {i}: timestamps stop increasing at bin {length}; the {dropped} "
                         "bins after it are dropped")
    return length


def _check_bins(path: Path, arrays: dict[str, np.ndarray], i: int, length: int) -> np.ndarray:
    """Trace i's timestamps (returned), workload and watts are finite, ordered and plausible."""
    ts = arrays["timestamps"][i, :length].astype(np.float64)
    if not np.all(np.isfinite(ts)) or np.any(np.diff(ts) <= 0):
        raise DataError(path, f"trace {i}: timestamps are not finite and strictly increasing "
                              f"within its {length} bins")
    for key in BIN_KEYS[1:]:
        values = arrays[key][i, :length]
        what = "watts" if key == "power_traces" else "values"
        bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
        if len(bad):
            raise DataError(path, f"trace {i}: {key!r} has non-finite or negative {what} at bin "
                                  f"{bad[0]} ({values[bad[0]]!r})")
    peak = float(arrays["power_traces"][i, :length].max())
    if peak > MAX_TRACE_W or 0 < peak < MIN_PEAK_W:
        raise DataError(path, f"trace {i}: 'power_traces' peaks at {peak:.3g} W; a server's GPUs draw "
                              f"between {MIN_PEAK_W:g} and {MAX_TRACE_W:g} W (another unit, or scaled?)")
    return ts


def _request_mask(path: Path, arrays: dict[str, np.ndarray], i: int, ts: np.ndarray,
                  notes: list[str]) -> np.ndarray:
    """Which of trace i's request slots hold requests (padding is 0); broken or misplaced
    requests are noted, or refused when they are most of them."""
    raw_times = arrays["request_timestamps"][i]
    request_mask = raw_times > 0
    # padding is 0; a negative or NaN arrival is a broken request, dropped only with a note
    broken = int(np.sum(~request_mask & (raw_times != 0)))
    if broken and broken * 2 > broken + int(request_mask.sum()):
        raise DataError(path, f"trace {i}: {broken} of {broken + int(request_mask.sum())} requests "
                              "have a negative or NaN arrival time ('request_timestamps')")
    if broken:
        notes.append(f"trace {i}: {broken} request(s) with a negative or NaN arrival time are dropped")
    times = raw_times[request_mask]
    # the last bin is one median step wide; requests after a cut were counted with its bins
    span_end = max(ts[-1], float(np.nanmax(arrays["timestamps"][i]))) + float(np.median(np.diff(ts)))
    outside = int(np.sum((times < ts[0]) | (times >= span_end)))
    if outside and outside * 2 > len(times):
        raise DataError(path, f"trace {i}: {outside} of {len(times)} requests arrive outside the "
                              f"trace's time span [{ts[0]:.6g}, {span_end:.6g}) s; are "
                              "'request_timestamps' on the same clock as 'timestamps'?")
    if outside:
        notes.append(f"trace {i}: {outside} of {len(times)} requests arrive outside the trace's "
                     "time span and count as no arrivals")
    for key in REQUEST_KEYS:
        values = arrays[key][i][request_mask]
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise DataError(path, f"trace {i}: {key!r} has non-finite or negative values")
    return request_mask


def load_power_file(path: Path | str) -> PowerData:
    """Load and validate one data file; raise DataError on any defect."""
    path = Path(path)
    arrays = _read_arrays(path)
    for key, array in arrays.items():
        _check_numeric(path, key, array)
    lengths = _check_shapes(path, arrays)
    tp = arrays["tensor_parallelism"]
    traces, notes = [], []
    for i in range(len(tp)):
        length = _trace_length(path, arrays, i, lengths, notes)
        ts = _check_bins(path, arrays, i, length)
        request_mask = _request_mask(path, arrays, i, ts, notes)
        workload = Workload(
            timestamps=ts,
            prefill_tokens=arrays["prefill_tokens"][i, :length].astype(np.float64),
            decode_tokens=arrays["decode_tokens"][i, :length].astype(np.float64),
            active_requests=arrays["active_requests"][i, :length].astype(np.float64),
            request_times=arrays["request_timestamps"][i][request_mask].astype(np.float64),
            input_tokens=arrays["input_tokens"][i][request_mask].astype(np.float64),
            output_tokens=arrays["output_tokens"][i][request_mask].astype(np.float64))
        traces.append(Trace(index=i, tp=int(tp[i]), workload=workload,
                            power=arrays["power_traces"][i, :length].astype(np.float64),
                            server=server_of(arrays, i)))
    for note in notes:
        print(f"note: {path}: {note}", file=sys.stderr)
    return PowerData(path=path, traces=traces, simulated="simulated" in arrays)


FLOAT_KEYS = ("timestamps", "power_traces", "request_timestamps")


def pad_runs(runs: list[dict[str, np.ndarray]], pad_timestamps: str = "zeros") -> dict[str, np.ndarray]:
    """Stack runs (each a dict of the BIN_KEYS and REQUEST_KEYS as 1-D arrays) into the file's
    (N, T) and (N, R) arrays, plus `trace_lengths`.

    Padding: requests and counts with 0; power with the run's last value; timestamps with zeros
    or, with pad_timestamps="ramp", a ramp falling to 0 (the two styles real files use; both
    end a trace for a reader without `trace_lengths`).
    """
    n = len(runs)
    arrays: dict[str, np.ndarray] = {}
    for keys in (BIN_KEYS, REQUEST_KEYS):
        width = max(1, max(len(run[keys[0]]) for run in runs))
        for key in keys:
            arrays[key] = np.zeros((n, width), dtype=np.float64 if key in FLOAT_KEYS else np.int64)
            for row, run in enumerate(runs):
                values = np.asarray(run[key])
                arrays[key][row, : len(values)] = values if key in FLOAT_KEYS else np.round(values)
                if key == "power_traces" and len(values):
                    arrays[key][row, len(values):] = values[-1]
                if key == "timestamps" and pad_timestamps == "ramp" and len(values) < width:
                    arrays[key][row, len(values):] = np.linspace(values[-1] / 2, 0.0, width - len(values))
    arrays["trace_lengths"] = np.array([len(run["timestamps"]) for run in runs], dtype=np.int64)
    return arrays


def server_arrays(settings: list[dict]) -> dict[str, np.ndarray]:
    """The SERVER_KEYS arrays for runs' recorded settings (one dict each, as Trace.server), only
    the keys some run records; the others' entries hold the "not recorded" value."""
    arrays = {}
    for key, unknown in SERVER_KEYS.items():
        if any(key in s for s in settings):
            values = [s.get(key, unknown) for s in settings]
            arrays[key] = (np.array([str(v) for v in values]) if key == "vllm_version"
                           else np.array([int(v) for v in values], dtype=np.int64))
    return arrays


def write_power_file(path: Path | str, runs: list[dict[str, np.ndarray]], tensor_parallelism: list[int],
                     extra: dict[str, np.ndarray] | None = None, pad_timestamps: str = "zeros") -> Path:
    """Write runs as one `.npz` file atomically; `extra` holds other keys (readers ignore them)."""
    arrays = pad_runs(runs, pad_timestamps) | {
        "tensor_parallelism": np.asarray(tensor_parallelism, dtype=np.int64)} | (extra or {})
    write_npz(path, arrays)
    return Path(path)
