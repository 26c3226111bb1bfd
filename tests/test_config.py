"""Paths as outputs record them (config.recorded_path): never this machine's absolute path where a
relative one can say the same."""
from __future__ import annotations

from model import config


def test_a_path_is_recorded_relative_to_its_output_folder_then_the_project_then_as_given(tmp_path):
    out = tmp_path / "results"
    assert config.recorded_path(out / "logs" / "a.log", out) == "logs/a.log"
    inside = config.PROJECT_ROOT / "demo" / "training_data" / "x.npz"
    assert config.recorded_path(inside, out) == "demo/training_data/x.npz"
    assert config.recorded_path(inside) == "demo/training_data/x.npz"
    elsewhere = tmp_path / "data" / "x.npz"
    assert config.recorded_path(elsewhere, out) == str(elsewhere)
