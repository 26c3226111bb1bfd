"""The grid launcher."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, files_under, run_cli, run_main, wait_until
from model import config
from model.errors import InputError
from model.grid import BUILT_IN



@pytest.mark.slow
def test_dry_run_lists_16_commands_and_writes_nothing(tmp_path):
    proc = run_cli("run_all_training.py", "--dry_run", "--data_dir", str(tmp_path / "data"),
                   "--output_dir", str(tmp_path / "out"), "--lr", "0.001", "--num_epochs", "7")
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line) for line in proc.stdout.strip().splitlines()]
    assert len(commands) == 16
    for cmd, cfg in zip(commands, BUILT_IN.cells()):
        assert cmd[:3] == [sys.executable, "-m", "model.train_entry"]
        flags = dict(zip(cmd[3::2], cmd[4::2]))
        assert flags["--data_file"] == str(tmp_path / "data" / cfg.data_file_name)
        assert (flags["--model"], flags["--hardware_accelerator"], flags["--tp"]) == (cfg.model, cfg.hardware, str(cfg.tp))
        assert flags["--lr"] == "0.001" and flags["--num_epochs"] == "7"
    warnings = [l for l in proc.stderr.splitlines() if l.startswith("WARNING: Data file not found")]
    assert len(warnings) == 8 == len(set(warnings))        # once per missing file, not per job
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_filters_and_defaults():
    proc = run_cli("run_all_training.py", "--dry_run", "--models", "llama-3-70b", "--hardware", "h100")
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and all("--model llama-3-70b" in l and "_h100.npz" in l for l in lines)
    assert "--tp 4" in lines[0] and "--tp 8" in lines[1]
    assert "--lr 0.0001" in lines[0] and "--num_epochs 500" in lines[0]
    assert str(config.DATA_DIR) in lines[0]


@pytest.mark.slow
def test_model_name_typo_exit_2():
    proc = run_cli("run_all_training.py", "--dry_run", "--models", "llama-3-8B")
    assert proc.returncode == 2 and "llama-3-8B" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_missing_data_and_failing_job_do_not_stop_the_grid(demo_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(demo_dir / "vllm-benchmark_llama-3-8b_a100.npz", data)
    (data / "vllm-benchmark_llama-3-8b_h100.npz").write_text("not an npz")       # fails
    out = tmp_path / "out"
    proc = run_cli("run_all_training.py", "--models", "llama-3-8b", "--data_dir", str(data),
                   "--output_dir", str(out), "--num_epochs", "1", "--no_wandb")
    assert proc.returncode == 1
    summary = {r["job_name"]: r for r in json.loads((out / "jobs_summary.json").read_text())}
    assert summary["llama-3-8b_a100_tp1"]["status"] == "succeeded"
    assert summary["llama-3-8b_a100_tp2"]["status"] == "succeeded"
    # where the numbers came from: the commit in the summary, the rest in each job's record
    assert len(summary["llama-3-8b_a100_tp1"]["git_commit"].split("+")[0]) == 40
    # paths are recorded relative to the output folder, not as this machine's absolute paths
    assert summary["llama-3-8b_a100_tp1"]["provenance"] == "metrics/llama-3-8b_a100_tp1_provenance.json"
    for key in ("log", "metrics", "checkpoint", "synthetic", "provenance"):
        assert not Path(summary["llama-3-8b_a100_tp1"][key]).is_absolute(), key
    record = json.loads((out / summary["llama-3-8b_a100_tp1"]["provenance"]).read_text())
    assert record["data"] == "simulated demo data" and len(record["data_sha256"]) == 64
    assert {"torch", "numpy", "scikit-learn", "host", "cpu"} <= set(record["environment"])
    assert record["settings"]["num_epochs"] == 1 and record["started"] <= record["finished"]
    assert summary["llama-3-8b_h100_tp1"]["status"] == "failed"
    assert summary["llama-3-8b_h100_tp1"]["returncode"] == 2
    assert "not a readable .npz" in (out / "logs" / "llama-3-8b_h100_tp1.log").read_text()
    assert set(summary["llama-3-8b_a100_tp1"]) >= {"model", "hardware", "tp", "job_name", "data_file", "command",
                                                   "status", "returncode", "seconds", "log", "metrics"}
    assert "[1/4] llama-3-8b_a100_tp1: started" in proc.stdout


@pytest.mark.slow
def test_no_data_at_all_points_to_the_demo(tmp_path):
    proc = run_cli("run_all_training.py", "--data_dir", str(tmp_path / "none"), "--output_dir",
                   str(tmp_path / "out"), "--models", "llama-3-8b")
    assert proc.returncode == 1
    assert "WARNING: Data file not found" in proc.stdout and "--demo" in proc.stdout
    statuses = {r["status"] for r in json.loads((tmp_path / "out" / "jobs_summary.json").read_text())}
    assert statuses == {"missing_data"}


@pytest.mark.slow
def test_end_to_end_tiny_grid(demo_dir, tmp_path):
    # two of the four models (8 of the 16 jobs, both GPUs and both TPs each): every code path of
    # the whole grid at half its time; the README's --demo runs all 16
    out = tmp_path / "out"
    proc = run_cli("run_all_training.py", "--data_dir", str(demo_dir), "--output_dir", str(out),
                   "--models", "llama-3-8b,deepseek-r1-distill-70b", "--num_epochs", "2", "--jobs", "2",
                   "--no_wandb", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list((out / "metrics").glob("*_metrics.csv"))) == 8
    assert len(list((out / "checkpoints").glob("*.pt"))) == 8
    summary = json.loads((out / "jobs_summary.json").read_text())
    assert [r["status"] for r in summary] == ["succeeded"] * 8
    proc = run_cli("aggregate_metrics.py", "--metrics_dir", str(out / "metrics"),
                   "--out", str(out / "table_summary.tex"), "--csv_output", str(out / "model_statistics.csv"),
                   "--plots")
    assert proc.returncode == 0, proc.stderr
    assert len(list((out / "synthetic").glob("*.npz"))) == 8
    assert len(list((out / "plots").glob("*_trace.png"))) == 8 and (out / "plots" / "reliability.pdf").exists()
    rows = [l for l in (out / "table_summary.tex").read_text().splitlines() if l.startswith(r"\texttt")]
    assert len(rows) == 2 and all(r.count(r"~$\pm$~") == 4 for r in rows)
    assert not [f for f in files_under(out) if ".tmp-" in f]


@pytest.mark.slow
def test_jobs_starting_together_do_not_trip_over_each_others_write_check(tmp_path):
    """Parallel jobs share the output folders; each one's check that it can write there must not
    remove or trip over another's probe file (a shared probe name once failed a --jobs 2 grid)."""
    from concurrent.futures import ProcessPoolExecutor
    paths = {"metrics": tmp_path / "metrics" / "a.csv", "checkpoint": tmp_path / "checkpoints" / "a.pt"}
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(_check_many_times, [paths] * 8))
    assert files_under(tmp_path) == set()                # no probe left behind


def _check_many_times(paths) -> None:
    from model.job import check_writable
    for _ in range(300):
        check_writable(paths)


@pytest.mark.slow
def test_progress_line_counts_jobs_and_estimates_what_is_left():
    from model.launcher import progress_line
    assert progress_line(2, 2, 4, [30.0, 90.0], jobs=2) == "2 done, 2 running, 4 waiting, about 3 min left"
    assert progress_line(1, 0, 1, [20.0], jobs=1) == "1 done, 0 running, 1 waiting, about 20 s left"
    assert progress_line(16, 0, 0, [1.0] * 16, jobs=2) == "16 done"


@pytest.mark.slow
def test_a_symlinked_launcher_lock_is_refused_and_its_target_untouched(tmp_path):
    from model.errors import InputError
    from model.launcher import LOCK_FILE, lock_output_dir
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).symlink_to(outside)
    with pytest.raises(InputError, match="symbolic link"):
        lock_output_dir(out)
    assert outside.read_text() == "keep me\n"


@pytest.mark.slow
def test_a_symlinked_job_log_writes_in_the_output_folder_not_through_the_link(tmp_path):
    from model.launcher import start_job
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    log_path = tmp_path / "logs" / "job.log"
    log_path.parent.mkdir()
    log_path.symlink_to(outside)
    process, log = start_job([sys.executable, "-c", "print('job output')"], str(log_path), "job")
    with log:
        assert process.wait() == 0
    assert outside.read_text() == "keep me\n"
    assert not log_path.is_symlink() and "job output" in log_path.read_text()


def summary_of(out):
    return {r["job_name"]: r for r in json.loads((out / config.SUMMARY_FILE).read_text())}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_second_signal_ends_the_grid_with_a_final_summary(demo_dir, tmp_path, signum):
    out = tmp_path / "out"
    launcher = subprocess.Popen(
        [sys.executable, "run_all_training.py", "--models", "llama-3-8b", "--hardware", "a100",
         "--data_dir", str(demo_dir), "--output_dir", str(out), "--num_epochs", "500", "--no_wandb",
         "--gru_impl", "torch"],
        cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    wait_until(lambda: (out / config.SUMMARY_FILE).exists()
               and any(r["status"] == "running" for r in summary_of(out).values()))
    time.sleep(1.0)
    launcher.send_signal(signum)
    time.sleep(0.05)
    launcher.send_signal(signum)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert {r["status"] for r in summary_of(out).values()} == {"interrupted"}


def test_skip_existing_plans_around_an_unreadable_data_file(tmp_path):
    from model.grid import BUILT_IN
    from model.launcher import LaunchSettings, plan_grid
    data, out = tmp_path / "data", tmp_path / "out"
    cells = BUILT_IN.cells(["llama-3-8b"], ["a100"])
    cells[0].data_file(data).mkdir(parents=True)       # exists, but cannot be read as a file
    config.metrics_path(out, cells[0].job_name).parent.mkdir(parents=True)
    config.metrics_path(out, cells[0].job_name).write_text("metric,value\n")
    records, queue = plan_grid(cells, LaunchSettings(data_dir=data, output_dir=out, skip_existing=True),
                               echo=lambda *_: None)
    assert len(queue) == len(cells)              # every job is still run (and fails on its own)
    assert "cannot be read" in records[0].note


@pytest.mark.slow
@pytest.mark.parametrize("args", [("run_all_training.py", "--seed", "-1", "--dry_run"),
                                  ("run_all_training.py", "--seed", str(2**64), "--dry_run"),
                                  ("-m", "model.train_entry", "--device", "meta")])
def test_bad_seed_or_device_is_one_line(demo_file, tmp_path, args):
    job = () if args[0] == "run_all_training.py" else (
        "--data_file", str(demo_file), "--model", "llama-3-8b", "--tp", "1", "--hardware_accelerator", "a100",
        "--output_dir", str(tmp_path), "--num_epochs", "1")
    result = run_main(*args, *job)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "metrics").exists()


def test_non_utf8_path_in_a_command_goes_into_the_log(tmp_path):
    from model.launcher import start_job
    name = os.fsdecode(b"data-\xff.npz")                 # a name that is not UTF-8
    process, log = start_job([sys.executable, "-c", "pass", name], str(tmp_path / "job.log"), "job")
    with log:
        assert process.wait() == 0
    assert b"data-\xff.npz" in (tmp_path / "job.log").read_bytes()


def test_second_launcher_on_a_folder_is_refused_naming_the_holder(tmp_path):
    from model.launcher import _held_locks, lock_output_dir
    lock_output_dir(tmp_path)
    try:
        with pytest.raises(InputError, match=f"in use by launcher pid {os.getpid()}"):
            lock_output_dir(tmp_path)         # a second open file: flock refuses it as it would another process
    finally:
        _held_locks.pop().close()
    lock_output_dir(tmp_path)                 # free again once its holder is gone
    _held_locks.pop().close()


@pytest.mark.slow
def test_second_launcher_exits_2_without_touching_the_summary(demo_dir, tmp_path):
    from model.launcher import _held_locks, lock_output_dir
    out = tmp_path / "out"
    out.mkdir()
    (out / config.SUMMARY_FILE).write_text("[]")
    lock_output_dir(out)
    try:
        result = run_cli("run_all_training.py", "--models", "llama-3-8b", "--data_dir", str(demo_dir),
                         "--output_dir", str(out), "--num_epochs", "1", "--no_wandb")
    finally:
        _held_locks.pop().close()
    assert result.returncode == 2, result.stdout + result.stderr
    assert "in use by launcher pid" in result.stderr and "Traceback" not in result.stderr
    assert (out / config.SUMMARY_FILE).read_text() == "[]"
