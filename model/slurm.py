"""Running the grid on a Slurm cluster: one job array through submitit, one task per configuration.

Used by `run_all_training.py --launcher slurm`. Each task runs the same `python -m
model.train_entry` command as a local run, writing the same output tree (the output folder must
be on a file system the nodes share) plus submitit's own files under `slurm/`. The launcher waits
and reports as in local mode, or with `--no_wait` records the Slurm job ids in
jobs_summary.json for a later `--collect`.
"""
from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import submitit

from model import config
from model.errors import InputError
from model.grid import GridCell
from model.interrupts import interruptible, signum_of
from model.outputs import write_npz
from model.launcher import (STOPPED_BY_SIGNAL, JobRecord, LaunchSettings, job_status, load_summary, plan_grid,
                            save_summary, start_job)
from model.slurm_settings import SlurmSettings

SLURM_SUBDIR = "slurm"
JOB_NAME = "powertrace"
POLL_S = 2.0
# submitit asks sacct for states and warns when a cluster keeps no accounting; we ask squeue
logging.getLogger("submitit").setLevel(logging.ERROR)
RESULT_GRACE_S = 10.0
ACTIVE_STATES = "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED,REQUEUED"


def sbatch_parameters(slurm: SlurmSettings) -> dict:
    """submitit's SlurmExecutor parameters (Slurm's own names)."""
    threads = str(slurm.cpus_per_job)
    setup = [f"export PYTHONPATH={shlex.quote(str(config.PROJECT_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}",
             f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}", *slurm.setup]
    params = {"job_name": JOB_NAME, "time": slurm.time_min, "cpus_per_task": slurm.cpus_per_job,
              "mem": f"{int(round(slurm.mem_gb * 1024))}MB", "array_parallelism": slurm.array_parallelism,
              "setup": setup, "stderr_to_stdout": True}
    if slurm.gpus_per_job:
        params["gpus_per_node"] = slurm.gpus_per_job
    if slurm.partition:
        params["partition"] = slurm.partition
    return params


def run_task(command: list[str], log_path: str, job_name: str) -> dict:
    """What one array task runs on its node: the job's command, its output into the job's log."""
    started = time.perf_counter()
    process, log = start_job(command, log_path, job_name)
    with log:
        returncode = process.wait()
    return {"returncode": returncode, "seconds": round(time.perf_counter() - started, 2)}


# A task's return value comes back as `{job id}_result.npz` beside submitit's log, never
# through submitit's result pickle: nothing in an output folder is ever unpickled (a file
# planted there would run as code). A value is numbers, strings, None, lists, tuples, dicts
# and numpy arrays: its structure is JSON, its arrays npz members, read with allow_pickle=False.
def _encode(value, arrays: dict):
    if isinstance(value, np.ndarray):
        arrays[f"a{len(arrays)}"] = value
        return {"array": f"a{len(arrays) - 1}"}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return {"tuple" if isinstance(value, tuple) else "list": [_encode(v, arrays) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a Slurm task returned a {type(value).__name__}, which is not sent back")


def _decode(node, arrays):
    if not isinstance(node, dict):
        return node
    (kind, content), = node.items()
    if kind == "array":
        return arrays[content]
    if kind == "dict":
        return {_decode(k, arrays): _decode(v, arrays) for k, v in content}
    items = [_decode(v, arrays) for v in content]
    return tuple(items) if kind == "tuple" else items


def result_path(paths) -> Path:
    """Where a task's result file is, from submitit's JobPaths (on the node and here alike)."""
    return paths.folder / f"{paths.job_id}_{paths.task_id}_result.npz"


def write_result(path: Path, value) -> None:
    arrays: dict = {}
    structure = json.dumps(_encode(value, arrays))
    write_npz(path, {**arrays, "structure": np.array(structure)})


def read_result(path: Path):
    """A task's return value from its result file; InputError naming the file if it is damaged."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return _decode(json.loads(str(arrays.pop("structure"))), arrays)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not a readable task result ({err})") from None


def _returning_a_file(function, *arguments):
    """Run on the node: function(*arguments), its value written as this task's result file."""
    value = function(*arguments)
    write_result(result_path(submitit.JobEnvironment().paths), value)


def submission_preview(output_dir: Path, slurm: SlurmSettings, n_tasks: int) -> str:
    """The sbatch script submitit will submit for the array, without submitting it."""
    from submitit.slurm.slurm import _make_sbatch_string    # submitit's own script writer
    folder = Path(output_dir) / SLURM_SUBDIR
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=folder,
                               map_count=n_tasks, **sbatch_parameters(slurm))


def _last_line(err: Exception) -> str:
    """The last line of an exception submitit recorded for a task (its own traceback's end)."""
    text = str(err).strip()
    return text.splitlines()[-1] if text else type(err).__name__


def _task_outcome(job) -> tuple[str, int | None, float, str]:
    """(status, returncode, seconds, note) of a finished task."""
    died = (f"slurm task ended without a result (cancelled, time limit, out of memory or node "
            f"failure?); see {job.paths.stdout}")
    if not result_path(job.paths).exists():
        return "failed", None, 0.0, died
    try:
        result = read_result(result_path(job.paths))
        returncode, seconds = int(result["returncode"]), float(result["seconds"])
    except (InputError, TypeError, ValueError, KeyError) as err:
        return "failed", None, 0.0, f"{died} ({err})"
    if returncode in STOPPED_BY_SIGNAL:       # scancel, or the time limit, while the job ran
        return ("interrupted", returncode, seconds, f"the job was stopped by {STOPPED_BY_SIGNAL[returncode]} "
                f"(scancel or the task's time limit); see {job.paths.stdout}")
    return job_status(returncode), returncode, seconds, ""


def queued_tasks(job_ids: list[str]) -> dict[str, str] | None:
    """Task id -> state (PENDING, RUNNING, ...) of the tasks Slurm still lists; None when squeue
    cannot be asked."""
    array_ids = sorted({j.split("_")[0] for j in job_ids})
    try:
        output = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-t", ACTIVE_STATES, "-j", ",".join(array_ids)],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if output.returncode != 0:
        # squeue refuses ids it has already forgotten: then none of them is queued
        return {} if "Invalid job id" in output.stderr else None
    return dict(line.split(maxsplit=1) for line in output.stdout.splitlines() if line.strip())


def _finished(job, queued: dict[str, str] | None, gone_since: dict | None = None) -> bool:
    """Done when its result file is there, or when Slurm no longer lists it (then it died, or
    raised: submitit's own record of that is a pickle, which is not read).
    With `gone_since`, a task must stay unlisted for RESULT_GRACE_S first: on a shared file
    system its result file can show up on this node a little after the task ended."""
    if result_path(job.paths).exists():
        return True
    if queued is None or job.job_id in queued:
        return False
    if gone_since is None:
        return True
    first_seen = gone_since.setdefault(job.job_id, time.monotonic())
    return time.monotonic() - first_seen >= RESULT_GRACE_S


def _sinfo_cpus() -> str:
    """`sinfo`'s partitions and CPUs per node ('' when sinfo cannot be asked: then no check)."""
    try:
        output = subprocess.run(["sinfo", "-h", "-o", "%P %c"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return output.stdout if output.returncode == 0 else ""


def partition_cpu_problem(sinfo_output: str, partition: str | None, cpus_per_task: int) -> str | None:
    """Why tasks asking for `cpus_per_task` CPUs could never start in `partition` (None: the
    cluster's default, marked '*'), from `sinfo -h -o "%P %c"` lines; None when they can, or
    when the output does not say. Slurm itself keeps such tasks PENDING (PartitionConfig) forever."""
    cpus: dict[str, int] = {}
    default = None
    for line in sinfo_output.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[1].rstrip("+").isdigit():
            continue
        name = parts[0].rstrip("*")
        if parts[0].endswith("*"):
            default = name
        cpus[name] = max(cpus.get(name, 0), int(parts[1].rstrip("+")))
    wanted = partition or default
    if wanted not in cpus or cpus_per_task <= cpus[wanted]:
        return None
    return (f"partition {wanted} has nodes of at most {cpus[wanted]} CPUs, but each task asks for "
            f"{cpus_per_task} (--slurm_cpus_per_job); its tasks would wait forever; pass "
            f"--slurm_cpus_per_job {cpus[wanted]} or less")


class TasksFailed(Exception):
    """Some tasks of an array_results array ended without a result; the message names them."""


def _executor(folder: Path, slurm: SlurmSettings):
    """submitit's executor for one array, or InputError when there is no Slurm to submit to or
    its tasks could never start."""
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    except RuntimeError as err:
        raise InputError(f"--launcher slurm: {err}") from None
    executor.update_parameters(**sbatch_parameters(slurm))
    problem = partition_cpu_problem(_sinfo_cpus(), slurm.partition, slurm.cpus_per_job)
    if problem:
        raise InputError(f"--launcher slurm: {problem}")
    return executor


def _submit(executor, function, *arguments) -> list:
    try:
        return executor.map_array(function, *arguments)
    except Exception as err:       # sbatch refused: unknown partition, too many resources, ...
        raise InputError(f"--launcher slurm: submission failed: {_last_line(err)}") from None


def as_finished(pending: dict, running=None):
    """Poll Slurm until every job of `pending` (index -> submitit job) has finished, yielding
    (index, job) as each does. A finished job leaves `pending`, so on a stop what is left is what
    to cancel; `running(index, state)` hears of each job still in the queue (state: squeue's, or
    None) at every poll."""
    gone_since: dict[str, float] = {}
    while pending:
        queued = queued_tasks([job.job_id for job in pending.values()])
        for index, job in list(pending.items()):
            if _finished(job, queued, gone_since):
                del pending[index]
                yield index, job
            elif running is not None:
                running(index, (queued or {}).get(job.job_id))
        if pending:
            time.sleep(POLL_S)


def array_results(function, arguments: list[tuple], folder: Path, slurm: SlurmSettings, echo=print):
    """function(*args) for each args in `arguments` as the tasks of one Slurm array: yields
    (task index, return value) as each task ends, so the caller never holds them all. Tasks
    that fail or die raise TasksFailed once every task ended; SIGINT/SIGTERM cancel the array
    (and raise Interrupted here, model/interrupts.py)."""
    executor = _executor(Path(folder), slurm)
    jobs = _submit(executor, _returning_a_file, [function] * len(arguments), *zip(*arguments))
    echo(f"submitted {len(jobs)} tasks as Slurm job {jobs[0].job_id.split('_')[0]} (files: {folder})")
    failures = []
    pending = dict(enumerate(jobs))
    with interruptible():
        try:
            for index, job in as_finished(pending):
                if not result_path(job.paths).exists():      # the task raised, or died
                    failures.append(f"task {index} (ended without a result; see {job.paths.stdout})")
                    continue
                yield index, read_result(result_path(job.paths))
        except (KeyboardInterrupt, GeneratorExit):    # stopped, or the caller gave up on us
            for job in pending.values():
                job.cancel(check=False)
            raise
    if failures:
        raise TasksFailed(f"{len(failures)} of {len(jobs)} Slurm tasks failed: " + "; ".join(failures))


def submit_grid(configs: list[GridCell], launch: LaunchSettings, slurm: SlurmSettings, wait: bool = True,
                echo=print) -> tuple[list[JobRecord], int | None]:
    """Submit the configurations as one array; wait for them unless `wait` is False."""
    records, queue = plan_grid(configs, launch, echo)
    save_summary(launch.output_dir, records)
    if not queue:
        return records, None
    executor = _executor(launch.output_dir / SLURM_SUBDIR, slurm)
    jobs = _submit(executor, _returning_a_file, [run_task] * len(queue), [cmd for _, _, cmd in queue],
                   [records[i].log for i, _, _ in queue], [cfg.job_name for _, cfg, _ in queue])
    for (index, _, _), job in zip(queue, jobs):
        records[index].slurm_job_id, records[index].status = job.job_id, "submitted"
    save_summary(launch.output_dir, records)
    echo(f"submitted {len(jobs)} tasks as Slurm job {jobs[0].job_id.split('_')[0]} "
         f"(files: {launch.output_dir / SLURM_SUBDIR})")
    if not wait:
        echo(f"not waiting; later: run_all_training.py --collect --output_dir {launch.output_dir}")
        return records, None
    return records, _wait(records, dict(zip((i for i, _, _ in queue), jobs)), launch.output_dir, echo)


def _wait(records: list[JobRecord], jobs: dict, output_dir: Path, echo) -> int | None:
    """Poll until every task finished; on SIGINT/SIGTERM cancel the rest and return the signal."""
    n = len(records)
    pending = dict(jobs)

    def running(index: int, state: str | None) -> None:
        record = records[index]
        if record.status == "submitted" and state == "RUNNING":
            record.status = "running"
            save_summary(output_dir, records)

    with interruptible():
        try:
            for index, job in as_finished(pending, running):
                record = records[index]
                record.status, record.returncode, record.seconds, note = _task_outcome(job)
                record.note = note or record.note
                save_summary(output_dir, records)
                echo(f"[{index + 1}/{n}] {record.job_name}: {record.status} in {record.seconds:.1f} s "
                     f"(log: {record.log})")
        except KeyboardInterrupt as stop:
            for index, job in pending.items():
                job.cancel(check=False)
                records[index].status, records[index].note = "interrupted", "Slurm task cancelled"
            save_summary(output_dir, records)
            return signum_of(stop)
    return None


def collect(output_dir: Path, echo=print) -> list[JobRecord]:
    """Update jobs_summary.json of a `--no_wait` submission from the tasks that finished since."""
    summary_path = Path(output_dir) / config.SUMMARY_FILE
    records = load_summary(output_dir)
    # a task found dead is looked at again: its result file may have arrived late
    waiting = {i: r for i, r in enumerate(records) if r.slurm_job_id and
               (r.status in ("submitted", "running") or (r.status == "failed" and r.returncode is None))}
    if not any(r.slurm_job_id for r in records):
        raise InputError(f"{summary_path}: no Slurm job ids in it (was it a --launcher slurm --no_wait run?)")
    folder = Path(output_dir) / SLURM_SUBDIR
    jobs = {index: submitit.SlurmJob(folder=folder, job_id=record.slurm_job_id)
            for index, record in waiting.items()}
    queued = queued_tasks([r.slurm_job_id for r in waiting.values()]) if waiting else {}
    for index, job in jobs.items():
        record = records[index]
        if not _finished(job, queued):
            echo(f"[{index + 1}/{len(records)}] {record.job_name}: still queued or running "
                 f"(Slurm job {record.slurm_job_id})")
            continue
        record.status, record.returncode, record.seconds, note = _task_outcome(job)
        record.note = note or record.note
        echo(f"[{index + 1}/{len(records)}] {record.job_name}: {record.status} in {record.seconds:.1f} s "
             f"(log: {record.log})")
    save_summary(output_dir, records)
    return records
