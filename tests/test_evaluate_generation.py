"""model.evaluate_generation against clumsy input, in-process (a made-up checkpoint)."""
from __future__ import annotations

import shutil

from conftest import files_under, run_main
from model import evaluate_generation
from test_checkpoint import tiny_checkpoint


def test_out_onto_the_data_file_is_refused_and_the_data_kept(tmp_path, demo_file):
    ckpt = tiny_checkpoint(tmp_path / "c.pt")
    data = tmp_path / demo_file.name
    shutil.copy(demo_file, data)
    before = data.read_bytes()
    code, _, err = run_main(evaluate_generation, "--checkpoint", ckpt, "--data_file", data, "--out", data,
                            "--seeds", "1", "--tp", "1")
    assert code == 2 and "--data_file" in err and len(err.strip().splitlines()) == 1
    assert data.read_bytes() == before and files_under(tmp_path) == {"c.pt", data.name}


def test_a_negative_seed_is_one_line_exit_2(tmp_path, demo_file):
    ckpt = tiny_checkpoint(tmp_path / "c.pt")
    code, _, err = run_main(evaluate_generation, "--checkpoint", ckpt, "--data_file", demo_file, "--seed", "-1",
                            "--seeds", "1", "--tp", "1")
    assert code == 2 and "--seed" in err and len(err.strip().splitlines()) == 1


def test_the_training_file_saved_again_is_not_scored_as_held_out(tmp_path, demo_file):
    from conftest import load_arrays, save_arrays
    from model.data import load_power_file, trace_sha256
    traces = load_power_file(demo_file).traces_for_tp(1)
    trained = [trace_sha256(t) for t in traces[:-1]]          # all but the last trained it
    ckpt = tiny_checkpoint(tmp_path / "c.pt", train_trace_sha256=trained,
                           fingerprint={"data_sha256": "of the file as first saved"})
    again = save_arrays(tmp_path / demo_file.name, load_arrays(demo_file))     # same traces, other bytes
    code, out, err = run_main(evaluate_generation, "--checkpoint", ckpt, "--data_file", again, "--seeds", "1",
                              "--tp", "1")
    assert code == 0, err
    assert f"{len(traces) - 1} TP 1 trace(s)" in err and "trained the checkpoint" in err
    assert "on 1 TP 1 trace(s)" in out


def test_traces_of_another_bin_width_are_not_scored_against_the_checkpoint(tmp_path, demo_file):
    ckpt = tiny_checkpoint(tmp_path / "c.pt", configuration={"model": "m", "hardware": "h", "tp": 1,
                                                            "job_name": "m_h_tp1", "bin_s": 1.0, "gpu_tdp_w": 400.0})
    code, _, err = run_main(evaluate_generation, "--checkpoint", ckpt, "--data_file", demo_file, "--seeds", "1",
                            "--tp", "1")
    assert code == 2 and "binned at 0.25 s" in err and "1 s" in err


# a server that finishes every demo request within its trace (the made-up one's 1,000 prompt
# tokens/s leaves half of them unfinished, which is a notice of its own)
FAST_SERVER = {"prefill_tok_s": 1e7, "step_s": 1e-4, "step_growth": 0.0, "max_batch": 0,
               "prefill_counting": "processed"}


def test_replayed_traffic_outside_the_training_range_is_noticed_and_recorded(tmp_path, demo_file):
    import json
    from test_generate import _ranges
    ckpt = tiny_checkpoint(tmp_path / "c.pt", training_traffic=_ranges(1e-3), serving_model=FAST_SERVER)
    out = tmp_path / "scores.csv"
    code, _, err = run_main(evaluate_generation, "--checkpoint", ckpt, "--data_file", demo_file, "--seeds", "1",
                            "--tp", "1", "--out", out)
    assert code == 0, err
    notices = [line for line in err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "outside what the checkpoint trained on" in notices[0]
    record = json.loads((tmp_path / "scores.csv.json").read_text())
    assert record["warnings"] == [notices[0].removeprefix("notice: ")]
    assert record["extrapolation"]["share_outside"] > 0.9
    assert [t["trace"] for t in record["per_trace"]] == record["traces"] and len(record["traces"]) >= 1
    assert all(0 <= t["share_unfinished"] <= 1 for t in record["per_trace"])


def test_strict_evaluation_of_traffic_outside_the_training_range_exits_2_with_nothing_written(tmp_path, demo_file):
    from test_generate import _ranges
    ckpt = tiny_checkpoint(tmp_path / "c.pt", training_traffic=_ranges(1e-3))
    code, _, err = run_main(evaluate_generation, "--checkpoint", ckpt, "--data_file", demo_file, "--seeds", "1",
                            "--tp", "1", "--out", tmp_path / "scores.csv", "--strict")
    assert code == 2 and "--strict: the traffic lies outside" in err and len(err.strip().splitlines()) == 1
    assert files_under(tmp_path) == {"c.pt"}


def test_replayed_traffic_the_checkpoint_trained_on_gives_no_notice(tmp_path, demo_file):
    from test_generate import _ranges
    ckpt = tiny_checkpoint(tmp_path / "c.pt", training_traffic=_ranges(1e9), serving_model=FAST_SERVER)
    code, _, err = run_main(evaluate_generation, "--checkpoint", ckpt, "--data_file", demo_file, "--seeds", "1",
                            "--tp", "1", "--strict")
    assert code == 0, err
    assert "notice" not in err


def test_traces_of_the_other_prefix_cache_setting_are_refused_naming_it(tmp_path, demo_file):
    import numpy as np
    from conftest import load_arrays, save_arrays
    arrays = load_arrays(demo_file)
    arrays["prefix_caching"] = np.zeros(len(arrays["tensor_parallelism"]), dtype=np.int64)    # all off
    data = save_arrays(tmp_path / "cache_off.npz", arrays)
    trained_on = {"settings": {"prefix_caching": True}, "batch_cap": {}}
    ckpt = tiny_checkpoint(tmp_path / "c.pt", server=trained_on, serving_model=FAST_SERVER)
    code, _, err = run_main(evaluate_generation, "--checkpoint", ckpt, "--data_file", data, "--seeds", "1",
                            "--tp", "1", "--out", tmp_path / "s.csv")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cache_off.npz" in err and "prefix cache off" in err and "with it on" in err
    assert not (tmp_path / "s.csv").exists()
    # the same traces against a checkpoint that trained with it off: scored
    ckpt = tiny_checkpoint(tmp_path / "off.pt", server={"settings": {"prefix_caching": False}, "batch_cap": {}},
                           serving_model=FAST_SERVER)
    code, _, err = run_main(evaluate_generation, "--checkpoint", ckpt, "--data_file", data, "--seeds", "1",
                            "--tp", "1")
    assert code == 0, err
