"""Interruption and resume."""
from __future__ import annotations

import pytest

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from model import config

pytestmark = pytest.mark.slow   # every test here starts a process or trains

ENV = dict(os.environ, WANDB_MODE="disabled")


def start(*args):
    return subprocess.Popen([sys.executable, *args], cwd=config.PROJECT_ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    raise TimeoutError


def metrics_without_timing(path):
    frame = pd.read_csv(path).set_index("metric")["value"]
    return frame.drop("train_seconds").to_dict()


def train_args(data_file, out, *extra):
    return ["-m", "model.train_entry", "--data_file", str(data_file), "--model", "llama-3-8b", "--tp", "1",
            "--hardware_accelerator", "a100", "--num_epochs", "16", "--checkpoint_every", "4",
            "--output_dir", str(out), "--no_progress", *extra]


def test_job_killed_mid_way_resumes_to_identical_results(demo_file, tmp_path):
    job = "llama-3-8b_a100_tp1"
    full = subprocess.run([sys.executable, *train_args(demo_file, tmp_path / "full")], cwd=config.PROJECT_ROOT,
                          env=ENV, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr

    killed = start(*train_args(demo_file, tmp_path / "cut"))
    state = config.state_path(tmp_path / "cut", job)
    wait_for(state.exists)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not config.metrics_path(tmp_path / "cut", job).exists()

    resumed = subprocess.run([sys.executable, *train_args(demo_file, tmp_path / "cut", "--resume")],
                             cwd=config.PROJECT_ROOT, env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from epoch" in resumed.stdout
    assert metrics_without_timing(config.metrics_path(tmp_path / "cut", job)) == \
        metrics_without_timing(config.metrics_path(tmp_path / "full", job))
    assert config.losses_path(tmp_path / "cut", job).read_text() == \
        config.losses_path(tmp_path / "full", job).read_text()
    assert not state.exists()


def grid_args(data_dir, out, *extra):
    return ["run_all_training.py", "--models", "llama-3-8b", "--data_dir", str(data_dir),
            "--output_dir", str(out), "--num_epochs", "3", "--no_wandb", *extra]


def summary(out):
    return {r["job_name"]: r for r in json.loads((out / config.SUMMARY_FILE).read_text())}


def test_grid_killed_then_resumed_redoes_only_unfinished_jobs(demo_dir, tmp_path):
    out = tmp_path / "out"
    launcher = start(*grid_args(demo_dir, out))
    wait_for(lambda: len(list((out / "metrics").glob("*_metrics.csv"))) >= 2 if (out / "metrics").exists() else False)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    time.sleep(1.0)   # the running child gets SIGTERM from the kernel when its parent dies
    finished = {p.name for p in (out / "metrics").glob("*_metrics.csv")}
    ps = subprocess.run(["pgrep", "-f", f"--output_dir {out}"], capture_output=True, text=True)
    assert ps.stdout.strip() == "", "a training job outlived its killed launcher"

    again = subprocess.run([sys.executable, *grid_args(demo_dir, out, "--skip_existing", "--jobs", "2")],
                           cwd=config.PROJECT_ROOT, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    records = summary(out)
    skipped = {f"{j}_metrics.csv" for j, r in records.items() if r["status"] == "skipped_existing"}
    assert skipped == finished and len(skipped) >= 2
    assert all(r["status"] in ("skipped_existing", "succeeded") for r in records.values())
    assert len(list((out / "metrics").glob("*_metrics.csv"))) == 4

    # two of the four jobs are enough to show that changed settings retrain
    changed = subprocess.run([sys.executable, *grid_args(demo_dir, out, "--skip_existing", "--lr", "0.002",
                                                         "--hardware", "a100")],
                             cwd=config.PROJECT_ROOT, env=ENV, capture_output=True, text=True)
    assert changed.returncode == 0
    records = summary(out)
    assert all(r["status"] == "succeeded" and "settings changed" in r["note"] for r in records.values())
    assert "lr" in records["llama-3-8b_a100_tp1"]["note"]


def test_sigint_stops_the_grid_and_records_interrupted(demo_dir, tmp_path):
    out = tmp_path / "out"
    launcher = start(*grid_args(demo_dir, out)[:-3], "--num_epochs", "200", "--no_wandb")
    wait_for(lambda: (out / config.SUMMARY_FILE).exists() and
             any(r["status"] == "running" for r in summary(out).values()))
    time.sleep(1.0)
    launcher.send_signal(signal.SIGINT)
    launcher.wait(timeout=60)
    assert launcher.returncode == 130
    statuses = [r["status"] for r in summary(out).values()]
    assert statuses[0] == "interrupted" and set(statuses) == {"interrupted"}
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
