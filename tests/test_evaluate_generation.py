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
