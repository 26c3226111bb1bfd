"""Running the grid: one `python -m model.train_entry` subprocess per configuration.

Used by run_all_training.py. Jobs run N at a time (`--jobs`), each with max(1, cores // N)
torch threads and its own log; jobs_summary.json is rewritten atomically after every change,
so a killed launcher leaves an honest record of what finished.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from model import config
from model.checkpoint import read_record
from model.classifiers.gru import intended_gru_impl
from model.errors import EXIT_DIVERGED, InputError
from model.grid import GridCell
from model.interrupts import interruptible, signum_of
from model.outputs import file_sha256, write_json
from model.provenance import git_state
from model.results import read_metrics_file
from model.settings import RESULT_KEYS, JobSettings, fingerprint, job_argv


def job_template(**grid_settings) -> JobSettings:
    """The settings every job of a grid shares (the `grid` fields of JobSettings); the cell's
    own fields are placeholders that job_settings() fills in."""
    return JobSettings(data_file="", model="llama-3-8b", hardware="a100", tp=1, **grid_settings)


@dataclass
class LaunchSettings:
    data_dir: Path
    output_dir: Path
    job: JobSettings = field(default_factory=job_template)
    jobs: int = 1
    skip_existing: bool = False


@dataclass
class JobRecord:
    model: str
    hardware: str
    tp: int
    job_name: str
    data_file: str
    command: str
    status: str = "pending"
    returncode: int | None = None
    seconds: float = 0.0
    log: str = ""
    metrics: str = ""
    checkpoint: str = ""
    synthetic: str = ""
    slurm_job_id: str = ""
    note: str = ""
    provenance: str = ""           # the job's provenance file: settings, commit, versions, machine, times
    git_commit: str = ""           # the launcher's checkout (with "+dirty" for uncommitted changes)


# exit statuses of a job stopped by SIGINT or SIGTERM: 128 + the signal as train_entry exits, or
# minus the signal when it was killed before it could handle it
STOPPED_BY_SIGNAL = {130: "SIGINT", 143: "SIGTERM", -2: "SIGINT", -15: "SIGTERM"}


def job_status(returncode: int | None) -> str:
    """A finished job's status from its exit status: train_entry exits EXIT_DIVERGED when the
    loss stopped being finite, which is no result at all rather than a bad one; a job stopped by
    SIGINT or SIGTERM was interrupted, not failed."""
    if returncode in STOPPED_BY_SIGNAL:
        return "interrupted"
    return {0: "succeeded", EXIT_DIVERGED: "diverged"}.get(returncode, "failed")


def job_settings(cfg: GridCell, launch: LaunchSettings, resume: bool = False) -> JobSettings:
    return replace(launch.job, data_file=str(cfg.data_file(launch.data_dir)), model=cfg.model,
                   hardware=cfg.hardware, tp=cfg.tp, output_dir=str(launch.output_dir),
                   progress=False, resume=resume)


def train_command(cfg: GridCell, launch: LaunchSettings, resume: bool = False) -> list[str]:
    """The train_entry command line of one job, run by the launcher's own interpreter."""
    return [sys.executable, "-m", "model.train_entry", *job_argv(job_settings(cfg, launch, resume))]


def _expected_impl(settings: JobSettings) -> str:
    device = settings.device if settings.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    return intended_gru_impl(settings.gru_impl, torch.device(device).type)


def reuse_decision(cfg: GridCell, launch: LaunchSettings) -> tuple[str, str]:
    """For --skip_existing: ('skip', why), ('resume', why) or ('run', why)."""
    settings = job_settings(cfg, launch)
    metrics_file = config.metrics_path(launch.output_dir, cfg.job_name)
    checkpoint = config.checkpoint_path(launch.output_dir, cfg.job_name)
    if metrics_file.exists():
        try:
            data_sha256 = file_sha256(settings.data_file)
        except OSError as err:     # the job itself then fails with one line; the grid goes on
            return "run", f"the data file cannot be read ({err.strerror or err})"
        expected = fingerprint(settings, data_sha256, _expected_impl(settings))
        try:
            read_metrics_file(metrics_file)
            for path in (config.synthetic_path(launch.output_dir, cfg.job_name),
                         config.generation_path(launch.output_dir, cfg.job_name)):
                if not path.exists():
                    raise FileNotFoundError(f"no {path.parent.name}/{path.name}")
            saved = read_record(checkpoint)["fingerprint"]
        except Exception as err:   # InputError included: a damaged checkpoint is rerun
            return "run", f"existing results are incomplete ({err}); rerunning"
        changed = [k for k in (*RESULT_KEYS, "data_sha256") if saved.get(k) != expected.get(k)]
        if not changed:
            return "skip", "finished earlier with the same settings"
        what = ", ".join(f"{k} {saved.get(k)!r} -> {expected.get(k)!r}" for k in changed)
        return "run", f"settings changed ({what}); rerunning"
    if config.state_path(launch.output_dir, cfg.job_name).exists():
        return "resume", "resuming a partial run from its saved training state"
    return "run", ""


# every job this launcher starts shares one W&B group, named after when the grid started
GRID_RUN_GROUP = os.environ.get("WANDB_RUN_GROUP") or time.strftime("grid-%Y%m%d-%H%M%S")


def _log_fd(log_path) -> int:
    """The job's log opened for writing, never through a symbolic link (one planted in the output
    folder would make the log overwrite any file): such a link is removed and a file made."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    try:
        return os.open(log_path, flags, 0o666)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
    os.unlink(log_path)                     # the link itself, not what it points to
    return os.open(log_path, flags | os.O_EXCL, 0o666)


def start_job(cmd: list[str], log_path: str, job_name: str, env: dict | None = None, **popen_kwargs):
    """Start one job's command from the project root, its output (after the command line) into
    its log; return the process and the open log file."""
    # paths are bytes to the OS: a name that is not UTF-8 goes into the log as it is
    log = open(_log_fd(log_path), "w", errors="surrogateescape")
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=config.PROJECT_ROOT,
                               env=(env or dict(os.environ)) | {"WANDB_NAME": job_name,
                                                                "WANDB_RUN_GROUP": GRID_RUN_GROUP},
                               **popen_kwargs)
    return process, log


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the launcher dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass


Queue = list[tuple[int, GridCell, list[str]]]


def plan_grid(configs: list[GridCell], launch: LaunchSettings, echo=print) -> tuple[list[JobRecord], Queue]:
    """One record per configuration, and the (record index, config, command) of those to run:
    not the ones without data, nor (with --skip_existing) the ones finished earlier."""
    out = launch.output_dir
    records: list[JobRecord] = []
    queue: Queue = []
    git = git_state()
    commit = (git["commit"] or "") + ("+dirty" if git["dirty"] else "")
    for cfg in configs:
        data_file = cfg.data_file(launch.data_dir)
        record = JobRecord(cfg.model, cfg.hardware, cfg.tp, cfg.job_name, str(data_file), "",
                           log=str(config.log_path(out, cfg.job_name)),
                           metrics=str(config.metrics_path(out, cfg.job_name)),
                           checkpoint=str(config.checkpoint_path(out, cfg.job_name)),
                           synthetic=str(config.synthetic_path(out, cfg.job_name)),
                           provenance=str(config.provenance_path(out, cfg.job_name)), git_commit=commit)
        records.append(record)
        if not data_file.exists():
            echo(f"WARNING: Data file not found: {data_file}")
            record.status, record.note = "missing_data", "data file not found"
            continue
        decision, why = reuse_decision(cfg, launch) if launch.skip_existing else ("run", "")
        cmd = train_command(cfg, launch, resume=decision == "resume")
        record.command, record.note = shlex.join(cmd), why
        if decision == "skip":
            record.status = "skipped_existing"
        else:
            queue.append((len(records) - 1, cfg, cmd))
    config.log_path(out, "x").parent.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(records):
        if r.status == "skipped_existing":
            echo(f"[{i + 1}/{len(records)}] {r.job_name}: skipped_existing ({r.note})")
    return records, queue


LOCK_FILE = ".launcher.lock"
_held_locks: list = []     # open lock files: the OS releases them when this process ends


def lock_output_dir(output_dir: Path) -> None:
    """Hold the output folder for this launcher's lifetime: two launchers on one folder would
    run the same jobs twice and overwrite each other's summary. InputError naming the holder
    when another launcher has it."""
    path = Path(output_dir) / LOCK_FILE
    try:
        # never through a symbolic link: the lock is truncated and written below
        handle = open(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666), "r+")
    except OSError as err:
        reason = "a symbolic link (not followed); remove it" if err.errno == errno.ELOOP else err.strerror or err
        raise InputError(f"{path}: cannot create the output folder's lock: {reason}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another launcher"
        handle.close()
        raise InputError(f"{output_dir}: in use by {holder}; wait for it to finish or choose another "
                         "--output_dir") from None
    except OSError:
        return      # a file system without locks: go on unlocked, as before
    handle.seek(0)
    handle.truncate()
    handle.write(f"launcher pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    _held_locks.append(handle)


RECORD_PATHS = ("log", "metrics", "checkpoint", "synthetic", "provenance")


def save_summary(output_dir: Path, records: list[JobRecord]) -> None:
    """jobs_summary.json, its paths relative to the output folder (or the project root)."""
    rows = []
    for record in records:
        row = asdict(record)
        for key in ("data_file", *RECORD_PATHS):
            row[key] = config.recorded_path(row[key], output_dir) if row[key] else row[key]
        rows.append(row)
    write_json(Path(output_dir) / config.SUMMARY_FILE, rows)


def load_summary(output_dir: Path) -> list[JobRecord]:
    """The records save_summary wrote, their output paths made absolute again."""
    summary_path = Path(output_dir) / config.SUMMARY_FILE
    try:
        records = [JobRecord(**r) for r in json.loads(summary_path.read_text())]
    except FileNotFoundError:
        raise InputError(f"{summary_path}: not found; --collect reads the summary a --launcher slurm "
                         f"--no_wait run wrote") from None
    except (ValueError, TypeError) as err:
        raise InputError(f"{summary_path}: not a jobs summary ({err})") from None
    for record in records:
        for key in RECORD_PATHS:
            value = getattr(record, key)
            if value and not Path(value).is_absolute():
                setattr(record, key, str(Path(output_dir).absolute() / value))
    return records


def progress_line(done: int, running: int, waiting: int, seconds: list[float], jobs: int) -> str:
    """'3 done, 2 running, 11 waiting, about 4 min left': the mean finished job's time for every
    job not yet done, `jobs` at a time."""
    left = running + waiting
    if not left:
        return f"{done} done"
    eta = sum(seconds) / len(seconds) * left / max(1, jobs) if seconds else float("nan")
    when = f"about {eta / 60:.0f} min left" if eta >= 60 else f"about {eta:.0f} s left"
    return f"{done} done, {running} running, {waiting} waiting, {when}"


def run_grid(configs: list[GridCell], launch: LaunchSettings, echo=print) -> tuple[list[JobRecord], int | None]:
    """Run the configurations here; return their records and the signal that stopped the grid, if any."""
    threads = max(1, (os.cpu_count() or 1) // launch.jobs)
    records, queue = plan_grid(configs, launch, echo)
    n = len(records)

    def save():
        save_summary(launch.output_dir, records)

    save()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    running: dict[int, tuple[subprocess.Popen, float, object]] = {}
    finished: list[float] = []

    def kill_now(signum):
        # a second signal hurries the stop along instead of breaking it: the summary must still be written
        for process, _, _ in running.values():
            if process.poll() is None:
                process.kill()

    stopped_by = None
    with interruptible(on_repeat=kill_now):
        try:
            while queue or running:
                while queue and len(running) < launch.jobs:
                    index, cfg, cmd = queue.pop(0)
                    record = records[index]
                    process, log = start_job(cmd, record.log, cfg.job_name, env, preexec_fn=_die_with_parent)
                    running[index] = (process, time.perf_counter(), log)
                    record.status = "running"
                    save()
                    extra = f" ({record.note})" if record.note else ""
                    echo(f"[{index + 1}/{n}] {record.job_name}: started{extra}")
                time.sleep(0.1)
                for index, (process, started, log) in list(running.items()):
                    if process.poll() is None:
                        continue
                    log.close()
                    del running[index]
                    record = records[index]
                    record.returncode = process.returncode
                    record.seconds = round(time.perf_counter() - started, 2)
                    record.status = job_status(process.returncode)
                    save()
                    echo(f"[{index + 1}/{n}] {record.job_name}: {record.status} in {record.seconds:.1f} s "
                         f"(log: {record.log})")
                    finished.append(record.seconds)
                    echo("       " + progress_line(len(finished), len(running), len(queue), finished, launch.jobs))
        except KeyboardInterrupt as stop:
            stopped_by = signum_of(stop)
            for process, _, _ in running.values():
                if process.poll() is None:
                    process.terminate()
            for index, (process, started, log) in running.items():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                log.close()
                records[index].status, records[index].returncode = "interrupted", process.returncode
                records[index].seconds = round(time.perf_counter() - started, 2)
            for index, _, _ in queue:
                records[index].status, records[index].note = "interrupted", "not started"
            save()
    return records, stopped_by
