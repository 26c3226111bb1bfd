"""Files we did not write, data we must not overwrite, and clean failures (one line, right exit status)."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, load_arrays, run_cli, run_main, save_arrays
from model import config
from model.classifiers.gru import PowerStateGRU
from model.classifiers.train import DISCARDED_SUFFIX, _save_state, fit, make_optimizer
from model.errors import InputError


def tiny_problem(seed=0):
    rng = np.random.default_rng(seed)
    xs = [torch.from_numpy(rng.normal(size=(1, 30, config.NUM_FEATURES)).astype(np.float32))]
    ys = [torch.from_numpy(rng.integers(0, 3, 30)).long()]
    torch.manual_seed(seed)
    return PowerStateGRU(3, hidden_size=4, num_layers=1, dropout=0.0, gru_impl="torch"), xs, ys


def tiny_fit(state_file, fingerprint, num_epochs=4, resume=True):
    model, xs, ys = tiny_problem()
    return fit(model, xs, ys, xs, ys, num_epochs=num_epochs, use_wandb=False, state_file=state_file,
               checkpoint_every=2, resume=resume, fingerprint=fingerprint, progress=False)


class Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# 1: a training state found in the output folder is data, never code

def test_planted_state_file_does_not_run_code_on_resume(tmp_path, capsys):
    marker = tmp_path / "pwned"
    state = tmp_path / "job.state.pt"
    state.write_bytes(pickle.dumps({"epoch": 2, "model": Payload(marker), "optimizer": {},
                                    "fingerprint": {"a": 1}}, protocol=2))
    result = tiny_fit(state, {"a": 1})
    assert not marker.exists()
    assert result.resumed_from_epoch == 0 and len(result.train_losses) == 4
    assert "not resuming" in capsys.readouterr().err


def test_state_saved_by_training_resumes_with_safe_loading(tmp_path):
    state = tmp_path / "job.state.pt"
    model, xs, ys = tiny_problem()
    first = fit(model, xs, ys, xs, ys, num_epochs=2, use_wandb=False, progress=False)
    _save_state(state, model, make_optimizer(model), np.random.default_rng(0), 2, first, {"a": 1})
    assert tiny_fit(state, {"a": 1}).resumed_from_epoch == 2


# 11: a state that cannot be resumed is named, and kept until the new run is done

@pytest.mark.parametrize("kind", ["damaged", "other settings"])
def test_unusable_state_is_reported_and_kept(tmp_path, capsys, kind):
    state = tmp_path / "job.state.pt"
    if kind == "damaged":
        state.write_bytes(b"not a state")
    else:
        model, xs, ys = tiny_problem()
        first = fit(model, xs, ys, xs, ys, num_epochs=2, use_wandb=False, progress=False)
        _save_state(state, model, make_optimizer(model), np.random.default_rng(0), 2, first, {"lr": 0.1})
    old = state.read_bytes()
    result = tiny_fit(state, {"lr": 0.2})
    err = capsys.readouterr().err
    assert result.resumed_from_epoch == 0
    assert ("damaged" in err) if kind == "damaged" else ("other settings" in err and "lr 0.1 -> 0.2" in err)
    assert (tmp_path / ("job.state.pt" + DISCARDED_SUFFIX)).read_bytes() == old


# 2: the demo writes only files it wrote before

@pytest.mark.slow
def test_demo_refuses_to_overwrite_a_measured_file(demo_file, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    arrays = load_arrays(demo_file)
    del arrays["simulated"]                  # as a measured file: no simulation mark
    real = save_arrays(data / demo_file.name, arrays)
    before = real.read_bytes()
    result = run_cli("run_all_training.py", "--demo", "--data_dir", str(data), "--models", "llama-3-8b",
                     "--output_dir", str(tmp_path / "out"), "--no_wandb", timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to overwrite" in result.stderr and "Traceback" not in result.stderr
    assert real.read_bytes() == before
    assert sorted(p.name for p in data.iterdir()) == [demo_file.name]


def test_demo_rewrites_its_own_files(tmp_path):
    from model.demo_data import write_demo_files
    first = write_demo_files(tmp_path, models=["llama-3-8b"], hardware=["a100"])
    assert write_demo_files(tmp_path, models=["llama-3-8b"], hardware=["a100"]) == first


# 3: the checkpoint path cannot replace an input, another output or a folder

def job_settings(data_file, out, **overrides):
    from model.settings import JobSettings
    return JobSettings(**(dict(data_file=str(data_file), model="llama-3-8b", hardware="a100", tp=1,
                               num_epochs=1, output_dir=str(out), use_wandb=False, progress=False)
                          | overrides))


@pytest.mark.parametrize("target", ["data", "metrics", "folder", "folder/"])
def test_weights_path_onto_data_output_or_folder_is_refused_before_training(demo_file, tmp_path, target):
    from model.job import run_job
    data = save_arrays(tmp_path / demo_file.name, load_arrays(demo_file))
    before = data.read_bytes()
    out = tmp_path / "out"
    folder = tmp_path / "ckpts"
    folder.mkdir()
    weights = {"data": str(data), "metrics": str(config.metrics_path(out, "llama-3-8b_a100_tp1")),
               "folder": str(folder), "folder/": str(tmp_path / "new") + "/"}[target]
    with pytest.raises(InputError):
        run_job(job_settings(data, out, weights_path=weights))
    assert data.read_bytes() == before
    assert not config.losses_path(out, "llama-3-8b_a100_tp1").exists()


# 4: an unwritable HOME does not stop the kernel

def test_kernel_cache_falls_back_when_home_cannot_be_written(tmp_path, monkeypatch, capsys):
    import tempfile
    from torch.utils import cpp_extension
    from model.classifiers import fused_gru
    not_a_folder = tmp_path / "home"
    not_a_folder.write_text("")            # mkdir under it fails, as under a read-only HOME
    monkeypatch.setenv("HOME", str(not_a_folder))
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(fused_gru, "_extension", None)
    monkeypatch.setattr(fused_gru, "_build_error", None)
    used = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: used.append(kw["build_directory"]) or "kernel")
    assert fused_gru.load_extension(verbose=False) == "kernel"
    assert used and used[0].startswith(str(tmp_path / "tmp"))
    assert capsys.readouterr().err.count("notice:") == 1


# 5: credentials without a reachable server: offline within seconds, said in one line

@pytest.mark.slow
def test_unreachable_wandb_server_goes_offline_fast(tmp_path, monkeypatch, capsys):
    import socket
    from model.tracking import Tracker
    with socket.socket() as probe:           # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    started = time.monotonic()
    tracker = Tracker("job", {"lr": 1.0}, run_dir=str(tmp_path))
    tracker.log({"train_loss": 1.0}, step=1)
    tracker.finish()
    assert time.monotonic() - started < 60
    assert tracker.mode == "offline"
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("wandb:")]
    assert len(lines) == 1 and "cannot be reached" in lines[0]


# 6: zero validation energy is an undefined relative error, not a crash

def test_energy_error_of_all_zero_watts_is_nan():
    from model.classifiers.metrics import energy_error_pct
    assert np.isnan(energy_error_pct([np.zeros(200)], [np.full(200, 5.0)]))
    assert energy_error_pct([np.full(10, 2.0)], [np.full(10, 3.0)]) == pytest.approx(50.0)


# 7: data the reader drops is counted aloud, and refused when it is most of a trace

def without_lengths(demo_file, tmp_path, change):
    arrays = load_arrays(demo_file)
    del arrays["trace_lengths"]
    change(arrays)
    return save_arrays(tmp_path / demo_file.name, arrays)


def test_backwards_timestamp_is_reported_with_the_bins_dropped(demo_file, tmp_path, capsys):
    from model.data import load_power_file
    length = int(load_arrays(demo_file)["trace_lengths"][0])

    def repeat_one(arrays):
        arrays["timestamps"][0, 200] = arrays["timestamps"][0, 199]
    data = load_power_file(without_lengths(demo_file, tmp_path, repeat_one))
    assert len(data.traces[0]) == 200
    err = capsys.readouterr().err
    assert "trace 0" in err and f"{length - 200} bins" in err


def test_backwards_timestamp_early_in_a_trace_is_refused(demo_file, tmp_path):
    from model.data import DataError, load_power_file

    def repeat_early(arrays):
        arrays["timestamps"][0, 20] = arrays["timestamps"][0, 19]
    with pytest.raises(DataError, match="trace 0: timestamps stop increasing at bin 20"):
        load_power_file(without_lengths(demo_file, tmp_path, repeat_early))


def test_requests_on_another_clock_are_refused_or_counted(demo_file, tmp_path, capsys):
    from model.data import DataError, load_power_file
    arrays = load_arrays(demo_file)
    times = arrays["request_timestamps"]
    moved = times.copy()
    moved[0][moved[0] > 0] += 1e6                 # every request of trace 0 on another clock
    with pytest.raises(DataError, match="trace 0: .* requests arrive outside"):
        load_power_file(save_arrays(tmp_path / "moved.npz", arrays | {"request_timestamps": moved}))
    one = times.copy()
    one[1][np.flatnonzero(one[1] > 0)[0]] += 1e6  # one request of trace 1
    load_power_file(save_arrays(tmp_path / demo_file.name, arrays | {"request_timestamps": one}))
    assert f"trace 1: 1 of {int(np.sum(times[1] > 0))} requests" in capsys.readouterr().err


# 8: a second signal still ends the grid cleanly

def summary_of(out):
    return {r["job_name"]: r for r in json.loads((out / config.SUMMARY_FILE).read_text())}


def wait_until(predicate, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError


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


# 9: with --skip_existing, an unreadable data file fails its own job only

def test_skip_existing_plans_around_an_unreadable_data_file(tmp_path):
    from model.grid import grid
    from model.launcher import LaunchSettings, plan_grid
    data, out = tmp_path / "data", tmp_path / "out"
    cells = grid(["llama-3-8b"], ["a100"])
    cells[0].data_file(data).mkdir(parents=True)       # exists, but cannot be read as a file
    config.metrics_path(out, cells[0].job_name).parent.mkdir(parents=True)
    config.metrics_path(out, cells[0].job_name).write_text("metric,value\n")
    records, queue = plan_grid(cells, LaunchSettings(data_dir=data, output_dir=out, skip_existing=True),
                               echo=lambda *_: None)
    assert len(queue) == len(cells)              # every job is still run (and fails on its own)
    assert "cannot be read" in records[0].note


# 10: Slurm tasks that can never start are refused at submission; --collect says what happened

SINFO = "debug* 2\ndebug* 2\nbig 64\n"


def test_tasks_asking_more_cpus_than_any_node_are_refused():
    from model.slurm import partition_cpu_problem
    problem = partition_cpu_problem(SINFO, None, 4)
    assert problem and "debug" in problem and "at most 2 CPUs" in problem
    assert partition_cpu_problem(SINFO, "big", 4) is None
    assert partition_cpu_problem(SINFO, None, 2) is None
    assert partition_cpu_problem("", None, 4) is None          # sinfo said nothing: no check


def test_collect_of_interrupted_tasks_fails_and_says_so(tmp_path, capsys):
    import run_all_training
    from dataclasses import asdict
    from model.launcher import JobRecord
    records = [JobRecord("llama-3-8b", "a100", tp, f"llama-3-8b_a100_tp{tp}", "x.npz", "cmd",
                         status="interrupted", slurm_job_id=f"7_{tp}", note="Slurm task cancelled")
               for tp in (1, 2)]
    (tmp_path / config.SUMMARY_FILE).write_text(json.dumps([asdict(r) for r in records]))
    assert run_all_training.collect_submitted(tmp_path) == 1
    assert "2 of 2 jobs did not finish: 2 interrupted" in capsys.readouterr().err


# 12: a diverged job is no result: its own exit status and summary status, out of the table

@pytest.mark.slow
def test_diverged_training_exits_with_its_own_status(demo_file, tmp_path):
    from model.errors import EXIT_DIVERGED
    from model.launcher import job_status
    result = run_cli("-m", "model.train_entry", "--data_file", str(demo_file), "--model", "llama-3-8b",
                     "--tp", "1", "--hardware_accelerator", "a100", "--num_epochs", "2", "--lr", "1e38",
                     "--output_dir", str(tmp_path), "--no_progress", "--no_wandb", "--gru_impl", "torch")
    assert result.returncode == EXIT_DIVERGED, result.stdout + result.stderr
    assert "training diverged" in result.stderr and "Traceback" not in result.stderr
    assert not config.metrics_path(tmp_path, "llama-3-8b_a100_tp1").exists()
    assert job_status(EXIT_DIVERGED) == "diverged" and job_status(1) == "failed"


def test_aggregator_leaves_out_diverged_jobs_with_a_note(tmp_path):
    from model.aggregate import collect
    folder = tmp_path / "metrics"
    folder.mkdir()
    for job, loss in (("llama-3-8b_a100_tp1", "0.5"), ("llama-3-8b_a100_tp2", "nan"),
                      ("llama-3-8b_h100_tp1", "0.4")):
        rows = {m: "0.5" for m in config.METRIC_ORDER} | {"final_train_loss": loss}
        (folder / f"{job}_metrics.csv").write_text(
            "metric,value\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))
    (tmp_path / config.SUMMARY_FILE).write_text(json.dumps([{"job_name": "llama-3-8b_h100_tp1",
                                                             "status": "diverged"}]))
    results, notes = collect(folder)
    assert list(results["job"]) == ["llama-3-8b_a100_tp1"]
    assert sum("left out" in n and "diverged" in n for n in notes) == 2


# 13: one line, not a traceback

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


def test_model_too_big_for_memory_is_bad_input(demo_file, tmp_path):
    from model.job import run_job
    with pytest.raises(InputError, match="not enough cpu memory"):
        run_job(job_settings(demo_file, tmp_path, hidden_size=10**6, gru_impl="torch"))


def test_full_disk_says_no_space_left(tmp_path, monkeypatch):
    import errno
    from model.outputs import write_text

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(InputError, match="no space left on device"):
        write_text(tmp_path / "table.tex", "x")
    assert list(tmp_path.iterdir()) == []


def test_aggregator_output_onto_a_folder_is_one_line(tmp_path):
    from model.aggregate import aggregate
    folder = tmp_path / "metrics"
    folder.mkdir()
    rows = {m: "0.5" for m in config.METRIC_ORDER}
    (folder / "llama-3-8b_a100_tp1_metrics.csv").write_text(
        "metric,value\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))
    (tmp_path / "table.tex").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        aggregate(folder, tmp_path / "table.tex", tmp_path / "stats.csv")


def test_non_utf8_path_in_a_command_goes_into_the_log(tmp_path):
    from model.launcher import start_job
    name = os.fsdecode(b"data-\xff.npz")                 # a name that is not UTF-8
    process, log = start_job([sys.executable, "-c", "pass", name], str(tmp_path / "job.log"), "job")
    with log:
        assert process.wait() == 0
    assert b"data-\xff.npz" in (tmp_path / "job.log").read_bytes()


def test_npz_declaring_more_data_than_it_holds_is_refused_before_allocating(demo_file, tmp_path):
    import zipfile
    from model.data import DataError, load_power_file
    arrays = load_arrays(demo_file)
    path = save_arrays(tmp_path / demo_file.name, arrays)
    crafted = tmp_path / "crafted.npz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(crafted, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "power_traces.npy":    # same bytes, a header claiming 596 GiB
                header = np.lib.format.header_data_from_array_1_0(np.zeros(0))
                header["shape"] = (80_000_000, 1000)
                buffer = __import__("io").BytesIO()
                np.lib.format.write_array_header_1_0(buffer, header)
                data = buffer.getvalue() + data[128:]
            target.writestr(info.filename, data)
    with pytest.raises(DataError, match="'power_traces' declares 640,000,000,000 bytes"):
        load_power_file(crafted)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0, -1])
def test_prepare_data_refuses_a_request_rate_that_is_not_positive(tmp_path, rate):
    from test_prepare_data import DAY, prepare, write_benchmark, write_power_csv
    from datetime import timedelta
    runs = tmp_path / "runs"
    runs.mkdir()
    write_benchmark(runs / "b.json", DAY + timedelta(seconds=30), 30.0, 1, [200] * 5, [10] * 5,
                    [0.1] * 5, [[0.02] * 9] * 5, request_rate=rate)
    write_power_csv(runs / "p.csv", DAY - timedelta(seconds=1), 32.0, n_gpus=1)
    result = prepare(runs, tmp_path / "a.npz", "--allow_rebuilt_arrivals")
    assert result.returncode == 2 and "request_rate" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "a.npz").exists()


# 14: messages and exit statuses that say what happened

def test_unreadable_data_file_is_not_called_a_broken_zip(demo_file, tmp_path, monkeypatch):
    from model import data as data_module
    path = save_arrays(tmp_path / demo_file.name, load_arrays(demo_file))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(data_module, "open", denied, raising=False)
    with pytest.raises(data_module.DataError, match="cannot be read: Permission denied"):
        data_module.load_power_file(path)


def test_symlink_loop_is_not_called_missing(tmp_path):
    from model.data import DataError, load_power_file
    (tmp_path / "a.npz").symlink_to(tmp_path / "b.npz")
    (tmp_path / "b.npz").symlink_to(tmp_path / "a.npz")
    with pytest.raises(DataError, match="symbolic link"):
        load_power_file(tmp_path / "a.npz")


@pytest.mark.slow
def test_train_entry_exits_143_on_sigterm(demo_file, tmp_path):
    job = subprocess.Popen(
        [sys.executable, "-m", "model.train_entry", "--data_file", str(demo_file), "--model", "llama-3-8b",
         "--tp", "1", "--hardware_accelerator", "a100", "--num_epochs", "500", "--checkpoint_every", "1",
         "--output_dir", str(tmp_path), "--no_progress", "--no_wandb", "--gru_impl", "torch"],
        cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    wait_until(config.state_path(tmp_path, "llama-3-8b_a100_tp1").exists)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_every_tp_is_checked_before_any_is_trained(demo_file, tmp_path):
    arrays = load_arrays(demo_file)
    keep = np.flatnonzero(arrays["tensor_parallelism"] == 1)
    lone = np.flatnonzero(arrays["tensor_parallelism"] == 2)[:1]        # TP 2 with one trace only
    rows = np.concatenate([keep, lone])
    subset = {k: (v[rows] if v.ndim and len(v) == len(arrays["tensor_parallelism"]) else v)
              for k, v in arrays.items()}
    path = save_arrays(tmp_path / demo_file.name, subset)
    result = run_cli("-m", "model.train_entry", "--data_file", str(path), "--model", "llama-3-8b", "--tp", "-1",
                     "--hardware_accelerator", "a100", "--num_epochs", "1", "--output_dir", str(tmp_path / "out"),
                     "--no_progress", "--gru_impl", "torch")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TP 2 has 1 trace" in result.stderr
    assert not (tmp_path / "out" / "metrics").exists()


# 15: one launcher per output folder; a running writer's temporary file is left alone

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


def test_stale_temp_cleanup_spares_files_of_running_writers(tmp_path):
    from model.outputs import _writer_tag, atomic_path, remove_stale_temp_files
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    live = tmp_path / f".job_metrics.csv.tmp-{_writer_tag()}abc.csv"
    gone = tmp_path / f".job_metrics.csv.tmp-{_writer_tag().split('-')[0]}-{dead}-abc.csv"
    legacy = tmp_path / ".job_metrics.csv.tmp-xyz.csv"
    for path in (live, gone, legacy):
        path.write_text("partial")
    remove_stale_temp_files(tmp_path, "job")
    assert live.exists() and not gone.exists() and not legacy.exists()
    with atomic_path(tmp_path / "job_losses.csv") as tmp:   # one being written now
        tmp.write_text("x")
        remove_stale_temp_files(tmp_path, "job")
        assert tmp.exists()
