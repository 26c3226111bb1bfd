"""Shared fixtures: demo data made once per session, helpers to write .npz files and run commands."""
from __future__ import annotations

import importlib
import io
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from model.demo_data import write_demo_files
from model.grid import BUILT_IN

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_data")
    write_demo_files(BUILT_IN, out, seed=0, scale="demo")
    return out


@pytest.fixture(scope="session")
def demo_file(demo_dir) -> Path:
    return demo_dir / "vllm-benchmark_llama-3-8b_a100.npz"


SITE_JOB = "llama-3-70b_h100_tp4"


@pytest.fixture(scope="session")
def site_results(demo_dir, tmp_path_factory) -> Path:
    """A results folder holding one briefly trained configuration (SITE_JOB) for site tests."""
    from model.job import run_job
    from model.settings import JobSettings
    out = tmp_path_factory.mktemp("site_results")
    run_job(JobSettings(data_file=str(demo_dir / "vllm-benchmark_llama-3-70b_h100.npz"), model="llama-3-70b",
                        hardware="h100", tp=4, lr=3e-3, num_epochs=3, output_dir=str(out), use_wandb=False,
                        progress=False))
    return out


@pytest.fixture
def tiny_results(tmp_path) -> Path:
    """A results folder with one made-up (untrained) checkpoint, m_h_tp1: no training needed
    (sites: tests/test_facility.py, test_scenario.py, test_output_folder.py, test_html_report.py)."""
    from model import config
    from test_checkpoint import tiny_checkpoint
    path = config.checkpoint_path(tmp_path / "results", "m_h_tp1")
    path.parent.mkdir(parents=True)
    tiny_checkpoint(path)
    return tmp_path / "results"


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def save_arrays(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run `python <args>` from the repository root (or cwd) and capture its output."""
    full_env = dict(os.environ, WANDB_MODE="disabled", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


class Ran(subprocess.CompletedProcess):
    """run_main's result: a CompletedProcess that also unpacks as (returncode, stdout, stderr)."""

    def __iter__(self):
        return iter((self.returncode, self.stdout, self.stderr))


def run_main(*args, env: dict | None = None) -> Ran:
    """run_cli's twin in this process, for the checks of a bad input's exit 2: starting Python
    and importing torch would cost seconds per case. The command is given as run_cli takes it
    ("-m", "model.x", flags... or "script.py", flags...) or as its module object then flags.
    The command's own run_cli (errors.py) turns InputError into its line and exit status; any
    other exception is a bug and fails the test with its traceback. Environment, argv, signal
    handlers are restored."""
    from model import errors
    if not isinstance(args[0], str):
        module, argv = args[0].__name__, list(args[1:])
    elif args[0] == "-m":
        module, argv = args[1], list(args[2:])
    else:
        module, argv = Path(args[0]).stem, list(args[1:])
    argv = [str(a) for a in argv]
    saved = dict(os.environ), sys.argv, {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    os.environ.update({"WANDB_MODE": "disabled", **(env or {})})
    sys.argv = [module, *argv]
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr):
            errors.run_cli(importlib.import_module(module).main, module.rsplit(".", 1)[-1])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        os.environ.clear()
        os.environ.update(saved[0])
        sys.argv = saved[1]
        for s, handler in saved[2].items():
            signal.signal(s, handler)
    return Ran([module, *argv], code, stdout.getvalue(), stderr.getvalue())


GENERATION_HEADER = "method,ks,acf_r2,nrmse,p95_error_pct,p99_error_pct,energy_error_pct\n"


def write_finished_job(metrics_dir: Path, job: str, metrics: dict, settings: dict | None = None,
                       generation: str = "ours,0.1,0.9,0.2,3,4,2\n") -> None:
    """The files a finished job leaves in a metrics folder (model/job.py save), with made-up
    values: its provenance record, its generation CSV and, last, its metrics file."""
    import json
    from model.results import write_metrics_file
    metrics_dir.mkdir(parents=True, exist_ok=True)
    (metrics_dir / f"{job}_provenance.json").write_text(json.dumps({"settings": settings or {}}))
    (metrics_dir / f"{job}_generation.csv").write_text(GENERATION_HEADER + generation)
    write_metrics_file(metrics_dir / f"{job}_metrics.csv", metrics)


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} if path.exists() else set()


@contextmanager
def fails_instead_of_hanging(seconds: int = 20):
    """Turn a call that blocks (reading a FIFO nobody writes) into a test failure after
    `seconds`, instead of a suite that never ends (SIGALRM interrupts the blocked read)."""
    def stop(signum, frame):
        raise AssertionError(f"blocked for {seconds} s")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def fifo(path: Path) -> Path:
    """A named pipe at `path` that nobody writes to."""
    os.mkfifo(path)
    return path


def wait_until(predicate, timeout=300):
    """Poll until predicate() holds; TimeoutError after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError
