"""Generation from a trained checkpoint: deterministic, honest about its baselines, scored on
traffic the model never trained on, and usable from the command line."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import files_under, run_cli, run_main
from model import config
from model.checkpoint import load_checkpoint, read_record
from model.data import Trace, Workload, load_power_file
from model.demo_data import POISSON_RATES, write_demo_files
from model.errors import InputError
from model.features import raw_features
from model.generation.evaluate import score_generation, score_methods, standard_methods
from model.generation.generator import Generator, windowed_log_probabilities
from model.generation.requests_file import poisson_requests, read_requests
from model.job import run_job
from model.settings import JobSettings
from model.grid import BUILT_IN

pytestmark = pytest.mark.slow   # trains a model once for the module

HELD_OUT_RATE = 1.0      # a rate between those trained on: new traffic, not a new regime
JOB = ("llama-3-70b", "a100", 4)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Trained on every demo rate but one; the held-out file has only that rate (same seed: the
    same GPUs, other traffic)."""
    root = tmp_path_factory.mktemp("generation")
    model, hardware, tp = JOB
    train_rates = tuple(r for r in POISSON_RATES if r != HELD_OUT_RATE)
    train_file = write_demo_files(BUILT_IN, root / "train", seed=0, models=[model], hardware=[hardware], rates=train_rates)[0]
    test_file = write_demo_files(BUILT_IN, root / "test", seed=0, models=[model], hardware=[hardware],
                                 rates=(HELD_OUT_RATE,))[0]
    settings = JobSettings(data_file=str(train_file), model=model, hardware=hardware, tp=tp, lr=3e-3,
                           num_epochs=40, output_dir=str(root / "results"), use_wandb=False, progress=False)
    result = run_job(settings)
    return root, train_file, test_file, result, config.checkpoint_path(root / "results", settings.job_name)


def test_checkpoint_rebuilds_the_classifier_without_training_code(held_out):
    _, train_file, _, result, ckpt_path = held_out
    ckpt = load_checkpoint(ckpt_path)
    saved = np.load(config.synthetic_path(ckpt_path.parent.parent, ckpt.configuration["job_name"]))
    val = [t for t in load_power_file(train_file).traces if t.index in ckpt.val_trace_indices]
    gen = Generator(ckpt)
    probs = np.concatenate([gen.probabilities(t.workload) for t in val])
    np.testing.assert_allclose(probs, saved["probabilities"], atol=1e-5)
    assert ckpt.configuration == {"model": "llama-3-70b", "hardware": "a100", "tp": 4,
                                  "job_name": "llama-3-70b_a100_tp4", "bin_s": 0.25, "gpu_tdp_w": 400.0}
    assert len(ckpt.input_tokens) == len(ckpt.output_tokens) > 0


def test_a_checkpoint_from_before_generation_is_refused_naming_what_is_missing(held_out, tmp_path):
    _, _, _, _, ckpt_path = held_out
    record = read_record(ckpt_path)
    for key in ("token_pool", "serving_model", "model_args", "format"):
        del record[key]
    old = tmp_path / "old.pt"
    torch.save(record, old)
    with pytest.raises(InputError, match="'model_args'.*'token_pool'.*'serving_model'"):
        load_checkpoint(old)


@pytest.mark.parametrize("gru_impl", ["torch", "fused"])
def test_windowed_inference_stays_close_to_the_whole_sequence(held_out, gru_impl):
    """A bidirectional GRU remembers far back, so windows cannot match a whole pass exactly;
    what matters for a trace is the most likely state and the expected watts."""
    _, _, _, _, ckpt_path = held_out
    gen = Generator(load_checkpoint(ckpt_path), gru_impl=gru_impl)
    requests = poisson_requests(1.0, 12000.0, (gen.ckpt.input_tokens, gen.ckpt.output_tokens), seed=0)
    features = gen.ckpt.norm.apply(raw_features(gen.workload(requests, 48_000)))
    whole = np.exp(windowed_log_probabilities(gen.classifier, features, window=10**9, context=0))
    windowed = np.exp(windowed_log_probabilities(gen.classifier, features))     # the defaults
    assert np.mean(np.abs(whole - windowed)) < 0.01
    assert np.mean(whole.argmax(axis=1) == windowed.argmax(axis=1)) > 0.97
    expected = lambda p: float(np.sum(p @ gen.ckpt.state_means))
    assert expected(windowed) == pytest.approx(expected(whole), rel=0.005)
    # a generator runs the fused kernel wherever it builds
    from model.classifiers.fused_gru import FusedGRUUnavailable, load_extension
    try:
        load_extension()
        builds = True
    except FusedGRUUnavailable:
        builds = False
    assert Generator(gen.ckpt).classifier.gru_impl == ("fused" if builds else "torch")
    # and the windows are really used: the input is cut into several
    assert len(features) > config.INFERENCE_WINDOW[gen.classifier.gru_impl] + 2 * config.INFERENCE_CONTEXT


def test_generation_is_deterministic_per_seed(held_out):
    _, _, _, _, ckpt_path = held_out
    gen = Generator(load_checkpoint(ckpt_path))
    requests = poisson_requests(2.0, 600.0, (gen.ckpt.input_tokens, gen.ckpt.output_tokens), seed=3)
    a, b = gen.generate(requests, 2400, seed=5), gen.generate(requests, 2400, seed=5)
    np.testing.assert_array_equal(a.watts, b.watts)
    assert not np.array_equal(a.watts, gen.generate(requests, 2400, seed=6).watts)


def test_held_out_rate_beats_the_simple_baselines(held_out):
    _, _, test_file, _, ckpt_path = held_out
    ckpt = load_checkpoint(ckpt_path)
    traces = load_power_file(test_file).traces_for_tp(4)
    summary = score_generation(ckpt, traces, seeds=3).summary.set_index("method")
    ours = summary.loc["ours"]
    for baseline in ("mean", "marginal"):
        assert ours["nrmse"] < summary.loc[baseline, "nrmse"], baseline
        assert ours["acf_r2"] > summary.loc[baseline, "acf_r2"], baseline
    assert ours["energy_error_pct"] < 5.0
    assert summary.loc["tdp", "energy_error_pct"] > 50.0


def test_several_streams_at_once_give_the_traces_one_at_a_time_gives(held_out):
    _, _, _, _, ckpt_path = held_out
    gen = Generator(load_checkpoint(ckpt_path))
    pool = (gen.ckpt.input_tokens, gen.ckpt.output_tokens)
    streams = [poisson_requests(rate, 1500.0, pool, seed=i) for i, rate in enumerate((0.5, 2.0, 1.0))]
    together = gen.generate_many(streams, 6000, seeds=[4, 5, 6])
    for stream, seed, trace in zip(streams, (4, 5, 6), together):
        np.testing.assert_allclose(gen.generate(stream, 6000, seed).watts, trace.watts, rtol=0, atol=1e-6)


def test_scoring_ranks_a_shuffled_and_an_offset_generator_below_ours(held_out):
    _, _, test_file, _, ckpt_path = held_out
    ckpt = load_checkpoint(ckpt_path)
    traces = load_power_file(test_file).traces_for_tp(4)
    methods = standard_methods(ckpt, "coherent")
    ours = methods["ours"]
    methods = {"ours": ours,
               "shuffled": lambda t, seed: np.random.default_rng(seed).permutation(ours(t, seed)),
               "offset": lambda t, seed: ours(t, seed) + 0.25 * ckpt.training_watts["mean"]}
    summary = score_methods(traces, methods, seeds=2).summary.set_index("method")
    assert summary.loc["shuffled", "acf_r2"] < summary.loc["ours", "acf_r2"]
    assert summary.loc["offset", "energy_error_pct"] > summary.loc["ours", "energy_error_pct"]


def test_tdp_baseline_energy_error_is_its_definition_on_a_constant_trace(held_out):
    _, _, _, _, ckpt_path = held_out
    ckpt = load_checkpoint(ckpt_path)
    n, watts = 400, 812.5
    workload = Workload(np.arange(n) * 0.25, np.zeros(n), np.zeros(n), np.zeros(n), np.array([1.0]),
                        np.array([100.0]), np.array([10.0]))
    trace = Trace(0, 4, workload, np.full(n, watts))
    scores = score_methods([trace], {k: v for k, v in standard_methods(ckpt, "coherent").items()
                                     if k in ("tdp", "mean")}, seeds=1).summary.set_index("method")
    tdp = 4 * 400.0
    assert scores.loc["tdp", "energy_error_pct"] == pytest.approx(100 * (tdp - watts) / watts, rel=1e-12)
    mean = ckpt.training_watts["mean"]
    assert scores.loc["mean", "energy_error_pct"] == pytest.approx(100 * abs(mean - watts) / watts, rel=1e-12)
    assert scores.loc["tdp", "acf_r2"] == 0.0          # a constant has no autocorrelation


def test_the_job_scores_generation_on_its_validation_traces(held_out):
    root, _, _, result, _ = held_out
    frame = pd.read_csv(config.generation_path(root / "results", result.job))
    assert list(frame.columns) == ["method", "ks", "acf_r2", "nrmse", "p95_error_pct", "p99_error_pct",
                                   "energy_error_pct"]
    assert list(frame["method"]) == ["ours", "tdp", "mean", "marginal", "measured_features"]
    for key in ("serving_active_r", "serving_prefill_r", "serving_decode_r"):
        assert np.isfinite(result.metrics[key])


def test_generate_a_day_from_the_command_line(held_out, tmp_path):
    _, _, _, _, ckpt_path = held_out
    out = tmp_path / "day.csv"
    started = time.perf_counter()
    proc = run_cli("-m", "model.generate", "--checkpoint", str(ckpt_path), "--rate", "1",
                   "--duration", "86400", "--seed", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    elapsed = time.perf_counter() - started
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["time_s", "power_w", "state"] and len(frame) == 345_600
    summary = json.loads((tmp_path / "day.csv.json").read_text())
    assert summary["bins"] == 345_600 and summary["seed"] == 4 and summary["bin_s"] == 0.25
    assert summary["energy_wh"] == pytest.approx(frame["power_w"].sum() * 0.25 / 3600, rel=1e-4)
    assert len(summary["checkpoint_sha256"]) == 64 and summary["requests"] > 80_000
    print(f"24 h at 0.25 s generated in {summary['generation_seconds']} s ({elapsed:.1f} s with start-up)")


def test_generate_reads_the_azure_trace_and_sorts_with_a_notice(held_out, tmp_path):
    _, _, _, _, ckpt_path = held_out
    azure = tmp_path / "azure.csv"
    # the trace's header and timestamp format, made-up values (the second request logged first)
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2024-03-05 09:00:12.5000000,512,96\n"
                     "2024-03-05 09:00:10.2500000,300,40\n"
                     "2024-03-05 09:01:20.7500000,800,25\n")
    requests, notes = read_requests(azure)
    np.testing.assert_allclose(requests.arrival_s, [0.0, 2.25, 70.5])
    np.testing.assert_array_equal(requests.input_tokens, [300, 512, 800])
    assert len(notes) == 1 and "sorted" in notes[0]
    proc = run_cli("-m", "model.generate", "--checkpoint", str(ckpt_path), "--requests", str(azure),
                   "--out", str(tmp_path / "azure_power.csv"))
    assert proc.returncode == 0, proc.stderr
    assert "sorted" in proc.stderr
    assert len(pd.read_csv(tmp_path / "azure_power.csv")) == int(np.ceil((70.5 + 60) / 0.25))


@pytest.mark.parametrize("content,flags,message", [
    ("arrival_time_s,input_tokens\n1,2\n", [], "names neither"),
    ("arrival_time_s,input_tokens,output_tokens\n1,-2,3\n", [], "negative"),
    ("arrival_time_s,input_tokens,output_tokens\n1,abc,3\n", [], "non-numeric"),
    ("arrival_time_s,input_tokens,output_tokens\n", [], "no requests"),
    (None, ["--rate", "0", "--duration", "10"], "--rate"),
    (None, ["--rate", "1", "--duration", "-5"], "--duration"),
    (None, ["--rate", "1"], "--duration"),
])
def test_bad_traffic_is_one_line_exit_2_and_nothing_written(held_out, tmp_path, content, flags, message):
    _, _, _, _, ckpt_path = held_out
    if content is not None:
        (tmp_path / "r.csv").write_text(content)
        flags = ["--requests", str(tmp_path / "r.csv")]
    out = tmp_path / "out"
    proc = run_main("-m", "model.generate", "--checkpoint", str(ckpt_path), *flags, "--out", str(out / "x.csv"))
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert files_under(out) == set()


def test_an_unknown_checkpoint_is_one_line_exit_2(tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    proc = run_cli("-m", "model.generate", "--checkpoint", str(bogus), "--rate", "1", "--duration", "10",
                   "--out", str(tmp_path / "o.csv"))
    assert proc.returncode == 2 and "not a readable checkpoint" in proc.stderr
    assert not (tmp_path / "o.csv").exists()


def test_evaluate_generation_writes_one_row_per_method(held_out, tmp_path):
    _, train_file, test_file, _, ckpt_path = held_out
    out = tmp_path / "scores.csv"
    proc = run_cli("-m", "model.evaluate_generation", "--checkpoint", str(ckpt_path), "--data_file",
                   str(test_file), "--seeds", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out)
    assert list(frame["method"]) == ["ours", "tdp", "mean", "marginal", "measured_features"]
    per_trace = pd.read_csv(tmp_path / "scores_per_trace.csv")
    assert len(per_trace) == 5 * len(load_power_file(test_file).traces_for_tp(4))
    assert "acf_mae" in per_trace.columns and list(frame.columns)[-1] == "energy_error_pct"
    # on its own training file only the held-out validation traces are scored, and it says so
    proc = run_cli("-m", "model.evaluate_generation", "--checkpoint", str(ckpt_path), "--data_file",
                   str(train_file), "--seeds", "1")
    assert proc.returncode == 0 and "training traces are left out" in proc.stderr
