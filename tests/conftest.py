"""Shared fixtures: demo data made once per session, helpers to write .npz files and run commands."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from model.demo_data import write_demo_files

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_data")
    write_demo_files(out, seed=0, scale="demo")
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


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} if path.exists() else set()


def run_main(module, *argv) -> tuple[int, str, str]:
    """A CLI module's main() in this process, as if run as `python -m module argv...` (through
    errors.run_cli): (exit status, stdout, stderr). Much faster than run_cli's subprocess."""
    import contextlib
    import io
    from model.errors import run_cli as run_main_cli
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = [module.__name__, *map(str, argv)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run_main_cli(module.main, module.__name__.rsplit(".", 1)[-1])
    except SystemExit as stop:
        return stop.code, out.getvalue(), err.getvalue()
    finally:
        sys.argv = saved
    raise AssertionError("run_cli always exits")


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
