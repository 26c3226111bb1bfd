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
