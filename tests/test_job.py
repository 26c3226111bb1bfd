"""One training job end to end."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import ROOT, load_arrays, run_cli, save_arrays, wait_until
from model import config
from model.checkpoint import load_checkpoint, read_record
from model.classifiers.gru import state_log_probabilities
from model.data import load_power_file
from model.errors import InputError
from model.features import raw_features
from model.job import run_job
from model.settings import JobSettings



def settings(data_file, out, **overrides) -> JobSettings:
    base = dict(data_file=str(data_file), model="llama-3-70b", hardware="h100", tp=8,
                lr=3e-3, num_epochs=30, output_dir=str(out), use_wandb=False, progress=False)
    return JobSettings(**(base | overrides))


def decoupled(path, out_path):
    """The same file with each trace's watts taken from a trace of another arrival rate,
    so the watts no longer follow the workload."""
    arrays = load_arrays(path)
    tp, lengths, rate = arrays["tensor_parallelism"], arrays["trace_lengths"].copy(), arrays["poisson_rate"]
    power = arrays["power_traces"].copy()
    for value in np.unique(tp):
        rows = np.flatnonzero(tp == value)
        order = rows[np.argsort(rate[rows], kind="stable")]
        donors = np.roll(order, len(order) // 2)           # quiet runs get busy runs' watts
        for row, donor in zip(order, donors):
            n = min(lengths[row], lengths[donor])
            power[row, :n] = arrays["power_traces"][donor, :n]
            lengths[row] = n
    arrays["power_traces"], arrays["trace_lengths"] = power, lengths
    return save_arrays(out_path, arrays)


@pytest.fixture(scope="module")
def trained(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("job")
    data_file = demo_dir / "vllm-benchmark_llama-3-70b_h100.npz"
    result = run_job(settings(data_file, out))
    return data_file, out, result


@pytest.mark.slow
def test_learns_states_when_watts_follow_the_workload(trained):
    _, out, result = trained
    assert result.metrics["val_f1"] >= 0.8
    assert result.metrics["autocorr_r2"] > 0.5
    assert result.metrics["final_train_loss"] < 1.0


@pytest.mark.slow
def test_no_skill_when_watts_ignore_the_workload(trained, tmp_path):
    data_file, _, result = trained
    noise_file = decoupled(data_file, tmp_path / "decoupled.npz")
    blind = run_job(settings(noise_file, tmp_path / "out")).metrics
    # (states come from the training traces alone, so the blind model keeps the majority state's share)
    assert blind["val_f1"] < 0.6 and blind["val_f1"] < result.metrics["val_f1"] - 0.25
    assert blind["transition_mae"] > 1.3 * result.metrics["transition_mae"]


@pytest.mark.slow
def test_output_files(trained):
    _, out, result = trained
    job = "llama-3-70b_h100_tp8"
    metrics = pd.read_csv(config.metrics_path(out, job))
    assert list(metrics.columns) == ["metric", "value"]
    assert tuple(metrics["metric"][:9]) == config.METRIC_ORDER
    assert list(metrics["metric"][9:]) == ["energy_error_pct", "acf_mae", "ece_uncalibrated", "temperature",
                                            "train_seconds", "num_epochs",
                                            "n_train_traces", "n_val_traces",
                                            "serving_active_r", "serving_active_mean_err_pct",
                                            "serving_prefill_r", "serving_prefill_mean_err_pct",
                                            "serving_decode_r", "serving_decode_mean_err_pct",
                                            "results_version"]      # the layout's version, last (model/results.py)
    losses = pd.read_csv(config.losses_path(out, job))
    assert list(losses.columns) == ["epoch", "train_loss"]
    assert list(losses["epoch"]) == list(range(1, 31))
    assert losses["train_loss"].iloc[-1] == pytest.approx(result.metrics["final_train_loss"])
    assert losses["train_loss"].iloc[-1] < losses["train_loss"].iloc[0]
    assert not config.state_path(out, job).exists()
    assert config.synthetic_path(out, job).stat().st_size > 0
    assert not [p for p in out.rglob(".*tmp-*")]


@pytest.mark.slow
def test_a_jobs_time_is_split_into_its_stages_for_its_closing_line(trained):
    from model.train_entry import stage_line
    _, _, result = trained
    assert list(result.seconds) == ["data", "training", "scores", "serving fit", "generation", "files"]
    assert all(seconds >= 0 for seconds in result.seconds.values())
    assert re.fullmatch(r"[\d.]+ s: data [\d.]+, training [\d.]+, scores [\d.]+, serving fit [\d.]+, "
                        r"generation [\d.]+, files [\d.]+", stage_line(result.seconds))


@pytest.mark.slow
def test_checkpoint_loads_into_plain_nn_gru(trained):
    data_file, out, _ = trained
    checkpoint = read_record(config.checkpoint_path(out, "llama-3-70b_h100_tp8"))   # weights_only=True
    gru = nn.GRU(6, 64, num_layers=2, bidirectional=True, batch_first=True, dropout=0.2)
    gru.load_state_dict({k[len("gru."):]: v for k, v in checkpoint["model_state"].items()
                         if k.startswith("gru.")})
    head = nn.Linear(128, 6)
    head.load_state_dict({k[len("head."):]: v for k, v in checkpoint["model_state"].items()
                          if k.startswith("head.")})
    assert checkpoint["model_args"] == {"num_states": 6, "hidden_size": 64, "num_layers": 2, "dropout": 0.2}
    assert len(checkpoint["states"]["means"]) == 6 and len(checkpoint["feature_norm"]["mean"]) == 6
    assert checkpoint["settings"]["lr"] == 3e-3 and checkpoint["fingerprint"]["data_sha256"]


@pytest.mark.slow
def test_load_checkpoint_rebuilds_the_validation_probabilities(trained):
    data_file, out, _ = trained
    ckpt = load_checkpoint(config.checkpoint_path(out, "llama-3-70b_h100_tp8"))
    saved = load_arrays(config.synthetic_path(out, "llama-3-70b_h100_tp8"))
    val = [t for t in load_power_file(data_file).traces if t.index in ckpt.val_trace_indices]
    model = ckpt.classifier          # nn.GRU on the CPU; the job trained with the fused kernel
    probs = np.concatenate([np.exp(state_log_probabilities(model, ckpt.norm.apply(raw_features(t.workload))))
                            for t in val])
    np.testing.assert_allclose(probs, saved["probabilities"], atol=1e-5)
    np.testing.assert_array_equal(ckpt.state_means, saved["state_means"])
    # the bounds generation draws within are the training bins' own, state by state
    train_watts = np.concatenate([t.power for t in load_power_file(data_file).traces
                                  if t.index in ckpt.train_trace_indices])
    assert ckpt.state_lows.min() == train_watts.min() == ckpt.training_watts["min"]
    assert ckpt.state_highs.max() == train_watts.max() == ckpt.training_watts["max"]
    assert np.all(ckpt.state_lows <= ckpt.state_means) and np.all(ckpt.state_means <= ckpt.state_highs)
    # how far the training watts go past nameplate (8 x 700 W), in the checkpoint and the provenance
    nameplate = ckpt.training_watts["nameplate"]
    assert nameplate["nameplate_w"] == 8 * 700.0 and nameplate["peak_0.25s_w"] == train_watts.max()
    assert nameplate["share_above_nameplate"] == pytest.approx((train_watts > 8 * 700.0).mean())
    record = json.loads(config.provenance_path(out, "llama-3-70b_h100_tp8").read_text())
    assert record["training_nameplate"] == nameplate


@pytest.mark.slow
def test_a_temperature_job_records_its_temperature_and_its_probabilities_use_it(demo_dir, tmp_path):
    data_file = demo_dir / "vllm-benchmark_llama-3-70b_h100.npz"
    result = run_job(settings(data_file, tmp_path, num_epochs=5, calibration="temperature"))
    job = "llama-3-70b_h100_tp8"
    ckpt = load_checkpoint(config.checkpoint_path(tmp_path, job))
    temperature = ckpt.calibration["temperature"]
    assert ckpt.calibration["method"] == "temperature" and temperature == result.metrics["temperature"] != 1.0
    assert ckpt.calibration["nll_after"] <= ckpt.calibration["nll_before"]
    assert ckpt.fingerprint["calibration"] == "temperature"
    # the saved validation probabilities are the rebuilt classifier's, over its temperature
    saved = load_arrays(config.synthetic_path(tmp_path, job))
    val = [t for t in load_power_file(data_file).traces if t.index in ckpt.val_trace_indices]
    model = ckpt.classifier
    features = [ckpt.norm.apply(raw_features(t.workload)) for t in val]
    probs = np.concatenate([np.exp(state_log_probabilities(model, x)) for x in features])
    np.testing.assert_allclose(probs, saved["probabilities"], atol=1e-5)
    model.temperature = 1.0
    plain = np.concatenate([np.exp(state_log_probabilities(model, x)) for x in features])
    assert not np.allclose(plain, probs, atol=1e-3)
    assert (plain.argmax(1) == probs.argmax(1)).all()


@pytest.mark.slow
def test_a_checkpoint_without_its_model_config_is_refused_in_one_line(trained, tmp_path):
    _, out, _ = trained
    record = read_record(config.checkpoint_path(out, "llama-3-70b_h100_tp8"))
    del record["model_args"]
    torch.save(record, tmp_path / "old.pt")
    with pytest.raises(InputError, match="lacks 'model_args'"):
        load_checkpoint(tmp_path / "old.pt")


@pytest.mark.slow
def test_same_seed_same_metrics_and_losses(demo_dir, tmp_path):
    data_file = demo_dir / "vllm-benchmark_llama-3-8b_a100.npz"
    runs = []
    for name in ("a", "b"):
        result = run_job(settings(data_file, tmp_path / name, model="llama-3-8b", hardware="a100", tp=1,
                                  num_epochs=3))
        losses = (tmp_path / name / "metrics" / "llama-3-8b_a100_tp1_losses.csv").read_text()
        runs.append(({k: v for k, v in result.metrics.items() if k != "train_seconds"}, losses))
    assert runs[0] == runs[1]
    other = run_job(settings(data_file, tmp_path / "c", model="llama-3-8b", hardware="a100", tp=1,
                             num_epochs=3, seed=1))
    assert other.metrics["final_train_loss"] != runs[0][0]["final_train_loss"]


@pytest.mark.slow
def test_train_entry_cli_with_real_offline_wandb(demo_file, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env |= {"HOME": str(tmp_path), "WANDB_DIR": str(tmp_path / "wb"), "NETRC": str(tmp_path / "none"),
            "WANDB_RUN_GROUP": "grid-20261125-test",        # what the launcher sets for a grid
            # a fresh HOME must not mean a fresh kernel build (a minute on 2 cores): the usual cache
            "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR")
            or str(Path.home() / ".cache" / "torch_extensions")}
    proc = subprocess.run([sys.executable, "-m", "model.train_entry", "--data_file", str(demo_file),
                           "--model", "llama-3-8b", "--tp", "1", "--hardware_accelerator", "a100",
                           "--num_epochs", "5", "--output_dir", str(tmp_path / "out")],
                          cwd=config.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "logging offline" in proc.stderr and "wandb sync" in proc.stderr
    for kind in ("metrics", "losses", "checkpoint"):
        assert kind in proc.stdout
    assert (tmp_path / "out" / "metrics" / "llama-3-8b_a100_tp1_metrics.csv").exists()
    runs = list((tmp_path / "wb").rglob("run-*.wandb"))
    assert len(runs) == 1
    blob = runs[0].read_bytes()
    assert b"final_metrics/val_f1" in blob and b"train_loss" in blob and b"llama-3-8b_a100_tp1" in blob
    assert b"grid-20261125-test" in blob        # runs of one grid share a group, so grids compare


@pytest.mark.slow
def test_wandb_disabled_writes_no_run(demo_file, tmp_path):
    proc = run_cli("-m", "model.train_entry", "--data_file", str(demo_file), "--model", "llama-3-8b",
                   "--tp", "1", "--hardware_accelerator", "a100", "--num_epochs", "1", "--no_wandb",
                   "--output_dir", str(tmp_path / "out"), env={"WANDB_DIR": str(tmp_path / "wb")})
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "wb").exists() and not (tmp_path / "out" / "wandb").exists()


@pytest.mark.slow
def test_tp_minus_one_trains_every_tp(demo_file, tmp_path):
    proc = run_cli("-m", "model.train_entry", "--data_file", str(demo_file), "--model", "llama-3-8b",
                   "--tp", "-1", "--hardware_accelerator", "a100", "--num_epochs", "1",
                   "--output_dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "metrics").glob("*_metrics.csv")) == [
        "llama-3-8b_a100_tp1_metrics.csv", "llama-3-8b_a100_tp2_metrics.csv"]


@pytest.mark.slow
def test_a_loss_far_above_its_first_epoch_is_divergence_not_success(demo_file, tmp_path):
    from model.errors import TrainingDiverged
    from model.job import divergence
    assert divergence([1.8, 1.2, 0.9], 6) is None and divergence([1.8, 3.0, 1.7], 6) is None
    assert "5.8e+31" in divergence([1.8, 5.8e31], 6) and "nan" in divergence([1.8, float("nan")], 6)
    assert divergence([4e31, 5.8e31], 6)              # exploded within the first epoch already
    with pytest.raises(TrainingDiverged, match="training diverged"):        # --lr 1e30: finite, exploding
        run_job(JobSettings(data_file=str(demo_file), model="llama-3-8b", hardware="a100", tp=1, lr=1e30,
                            num_epochs=3, output_dir=str(tmp_path), use_wandb=False, progress=False,
                            gru_impl="torch"))
    assert not config.metrics_path(tmp_path, "llama-3-8b_a100_tp1").exists()


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


def test_model_too_big_for_memory_is_bad_input(demo_file, tmp_path):
    from model.job import run_job
    with pytest.raises(InputError, match="not enough cpu memory"):
        run_job(job_settings(demo_file, tmp_path, hidden_size=10**6, gru_impl="torch"))


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


@pytest.mark.slow
def test_the_servers_recorded_max_num_seqs_is_the_checkpoints_batch_cap(demo_dir, tmp_path):
    """A data file that records max_num_seqs and the prefix-cache setting (model/data.py
    SERVER_KEYS): the serving model's cap is the server's, recorded with the settings."""
    arrays = load_arrays(demo_dir / "vllm-benchmark_llama-3-70b_h100.npz")
    n = len(arrays["tensor_parallelism"])
    arrays["max_num_seqs"] = np.full(n, 512)
    arrays["prefix_caching"] = np.ones(n, dtype=np.int64)
    data_file = save_arrays(tmp_path / "vllm-benchmark_llama-3-70b_h100.npz", arrays)
    run_job(settings(data_file, tmp_path / "out", num_epochs=2))
    ckpt = load_checkpoint(tmp_path / "out" / "checkpoints" / "llama-3-70b_h100_tp8.pt")
    assert ckpt.serving_model["max_batch"] == 512
    assert ckpt.server["settings"] == {"max_num_seqs": 512, "prefix_caching": True}
    assert ckpt.server["batch_cap"]["source"] == "the server's max_num_seqs"
    provenance = json.loads((tmp_path / "out" / "metrics" / "llama-3-70b_h100_tp8_provenance.json").read_text())
    assert provenance["server"]["batch_cap"]["max_batch"] == 512


def test_the_checkpoint_records_the_traffic_its_training_traces_carried(trained):
    from model.generation.extrapolation import training_ranges
    data_file, out, _ = trained
    ckpt = load_checkpoint(config.checkpoint_path(out, "llama-3-70b_h100_tp8"))
    train = [t for t in load_power_file(data_file).traces_for_tp(8) if t.index in ckpt.train_trace_indices]
    assert ckpt.training_traffic == training_ranges([raw_features(t.workload) for t in train], 0.25)
    assert ckpt.training_traffic["arrival_rate_per_s"]["high"] > 0
