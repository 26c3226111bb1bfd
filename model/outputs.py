"""Output files, always written atomically: a temporary file in the same folder, then a rename.

An interrupted run never leaves a half-written file behind under the real name.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from model.errors import InputError

TEMP_MARK = ".tmp-"
_UMASK = os.umask(0)
os.umask(_UMASK)


def _write_failure(path: Path, err: OSError) -> InputError:
    """One line for an output that cannot be written (a full disk, a read-only folder, a folder
    where the file should be): the environment's problem, not the pipeline's."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on device" + (" (disk quota)" if err.errno == errno.EDQUOT else "")
    elif path.is_dir():
        reason = "is a directory, not a file"
    else:
        reason = err.strerror or str(err)
    return InputError(f"{path}: cannot write: {reason}")


def _writer_tag() -> str:
    # who writes a temporary file: stale-file cleanup removes only files whose writer is gone
    return f"{socket.gethostname().replace('-', '_')}-{os.getpid()}-"


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix); rename it into place on success.
    An OSError while writing becomes an InputError naming `path` (a full disk says so)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}{_writer_tag()}",
                                   suffix=path.suffix)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp creates 0600; give the file normal permissions
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise _write_failure(path, err) from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def json_ready(obj):
    """`obj` with every NaN or infinite float as None: JSON has no such numbers (Python would
    write a bare NaN, which strict readers refuse), and a value that does not exist is null."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def json_text(obj) -> str:
    """Strict JSON (no NaN or Infinity: json_ready), indented, as the project writes it."""
    return json.dumps(json_ready(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json(path: Path | str, obj) -> None:
    write_text(path, json_text(obj))


def write_csv(path: Path | str, header: list[str], rows: list[list]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


def write_torch(path: Path | str, obj) -> None:
    """torch.save through a Python file: a full disk is then an OSError ("no space left on
    device", one line) instead of torch's own RuntimeError about stream positions."""
    import torch        # lazily: most commands that write files never need it
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)


def write_npz(path: Path | str, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def same_file(a: Path | str, b: Path | str) -> bool:
    """Whether two paths name one file: through links or another spelling, existing or not."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_clashes(outputs: dict[str, Path | str], inputs: dict[str, Path | str]) -> None:
    """InputError (before anything is written) when an output would overwrite an input, or
    two outputs are one file (the second would replace the first). Keys say what each path is
    (a flag, or a file the flag implies); None values are skipped."""
    seen = [(what, path) for what, path in inputs.items() if path is not None]
    for what, path in outputs.items():
        if path is None:
            continue
        for other_what, other in seen:
            if same_file(path, other):
                raise InputError(f"{what} {path}: is also {other_what}; writing it would overwrite that; "
                                 "choose another file")
        seen.append((what, path))


@contextmanager
def locked_directory(path: Path | str, flag: str) -> Iterator[Path]:
    """Hold folder `path` (made if missing) while the block runs: a second process on it gets an
    InputError at once. The lock is on the folder itself (flock), so it leaves no file behind and
    ends with its holder, however that ends; where the file system has no locks, it goes on
    unlocked."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as err:
        raise _write_failure(path, err) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{flag} {path}: in use by another run; wait for it to finish or choose "
                             "another folder") from None
        except OSError:
            pass                  # no locks on this file system
        yield path
    finally:
        os.close(fd)


@contextmanager
def staged_folder(out: Path | str) -> Iterator[Path]:
    """A temporary folder inside `out` to write a run's files into; on success they are moved
    into `out` (replacing older ones), on any failure none is: all of a run's files or none."""
    out = Path(out)
    try:
        staging = Path(tempfile.mkdtemp(dir=out, prefix=f".staging{TEMP_MARK}{_writer_tag()}"))
    except OSError as err:
        raise _write_failure(out, err) from None
    try:
        yield staging
        for source in sorted(staging.rglob("*")):
            if source.is_file():
                target = out / source.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
    except OSError as err:
        raise _write_failure(out, err) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _writer_state(temp_name: str) -> str:
    """'alive' or 'gone' for the process that writes this temporary file, 'elsewhere' when it
    ran on another host (which cannot be asked)."""
    tag = temp_name.split(TEMP_MARK, 1)[1] if TEMP_MARK in temp_name else ""
    host, _, rest = tag.partition("-")
    pid = rest.partition("-")[0]
    if not pid.isdigit():
        return "gone"             # no writer recorded (an older version's file)
    if host != socket.gethostname().replace("-", "_"):
        return "elsewhere"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "gone"
    except OSError:               # alive, but another user's
        pass
    return "alive"


STALE_ELSEWHERE_S = 24 * 3600


def remove_stale_temp_files(directory: Path | str, name_prefix: str) -> None:
    """Remove temporary files a killed run left for outputs whose names start with name_prefix;
    never one whose writer is still running (another job or launcher on the same folder)."""
    for stale in glob.glob(os.path.join(glob.escape(str(directory)),
                                        f".{glob.escape(name_prefix)}*{TEMP_MARK}*")):
        writer = _writer_state(os.path.basename(stale))
        try:
            if writer == "gone" or (writer == "elsewhere"
                                    and time.time() - os.path.getmtime(stale) > STALE_ELSEWHERE_S):
                Path(stale).unlink(missing_ok=True)
        except OSError:
            continue
