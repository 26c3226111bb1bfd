"""A grid of one's own (--grid FILE): read, checked, and used by every command."""
from __future__ import annotations

import dataclasses
import shlex
import shutil

import pandas as pd
import pytest

from conftest import ROOT, run_cli
from model import grid as grid_module
from model.errors import InputError


def test_the_example_grid_file_is_read_and_the_built_in_grid_is_untouched():
    example = grid_module.load_grid(ROOT / "docs" / "grid.example.toml")
    cells = example.cells()
    assert len(cells) == 12 and example.hardware == ["h100", "h200"]
    assert example.gpu_tdp_w["h200"] == 700.0
    assert example.models_by_key["qwen-2.5-32b"].display_name == "Qwen-2.5 (32B)"
    assert [c.tp for c in cells if c.model == "qwen-2.5-32b" and c.hardware == "h200"] == [2, 4]
    assert example.argv() == ["--grid", str((ROOT / "docs" / "grid.example.toml").resolve())]
    # a grid is a value: reading another leaves the built-in one as it was
    assert len(grid_module.BUILT_IN.cells()) == 16 and "a100" in grid_module.BUILT_IN.hardware
    assert grid_module.load_grid(None) is grid_module.BUILT_IN and grid_module.BUILT_IN.argv() == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.models = ()


@pytest.mark.parametrize("argv,expected", [([], None), (["--grid", "G"], "G"), (["--grid=G"], "G"),
                                           (["--model", "x", "--grid", "G", "--help"], "G")])
def test_a_command_line_names_its_grid_in_either_spelling(tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "docs" / "grid.example.toml", tmp_path / "G")
    found = grid_module.grid_of_argv(argv)
    assert found.file == (str((tmp_path / expected).resolve()) if expected else None)


def test_a_changed_grid_file_is_read_again(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text("[[models]]\nkey='a'\ntp=[1]\nlabel='A'\n[hardware]\nx=100\n")
    assert grid_module.load_grid(path).gpu_tdp_w == {"x": 100.0}
    path.write_text("[[models]]\nkey='a'\ntp=[1]\nlabel='A'\n[hardware]\nx=100\ny=200\n")
    assert grid_module.load_grid(path).gpu_tdp_w == {"x": 100.0, "y": 200.0}


@pytest.mark.parametrize("text,problem", [
    ("[[models]]\nkey='a'\ntp=[1]\nlabel='A'\n", "[hardware]"),
    ("[[models]]\nkey='a'\ntp=[0]\nlabel='A'\n[hardware]\nx=1\n", "distinct positive integers"),
    ("[[models]]\nkey='a'\ntp=[1]\n[hardware]\nx=1\n", "needs key, tp and label"),
    ("[[models]]\nkey='a'\ntp=[1]\nlabel='A'\n[[models]]\nkey='a'\ntp=[2]\nlabel='B'\n[hardware]\nx=1\n", "twice"),
    ("[[models]]\nkey='a'\ntp=[1]\nlabel='A'\n[hardware]\nx=-5\n", "positive TDP"),
    ("[[models]\n", "not a readable grid file"),
])
def test_a_bad_grid_file_is_one_line_naming_the_problem(tmp_path, text, problem):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem.replace("[", r"\[")):
        grid_module.read_grid_file(path)


@pytest.mark.slow
def test_launcher_jobs_and_aggregator_all_follow_the_grid_file(demo_dir, tmp_path):
    (tmp_path / "my_grid.json").write_text(
        '{"models": [{"key": "my-llm", "file_stem": "llama-3-8b", "tp": [1], "label": "My LLM & Co"}],'
        ' "hardware": {"a100": 400}}')
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(demo_dir / "vllm-benchmark_llama-3-8b_a100.npz", data)
    out = tmp_path / "out"
    proc = run_cli("run_all_training.py", "--grid", str(tmp_path / "my_grid.json"), "--data_dir", str(data),
                   "--output_dir", str(out), "--num_epochs", "1", "--no_wandb")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "metrics" / "my-llm_a100_tp1_metrics.csv").exists()
    # the launcher's own hint, run as printed, carries the grid file
    hint = next(line for line in proc.stdout.splitlines() if line.startswith("next:"))
    command = shlex.split(hint.split(":", 1)[1])
    assert command[:2] == ["python3", "aggregate_metrics.py"] and "--grid" in command
    proc = run_cli(*command[1:])
    assert proc.returncode == 0, proc.stderr
    all_jobs = pd.read_csv(out / "all_jobs.csv")
    assert "num_epochs" in all_jobs.columns
    assert not [c for c in all_jobs.columns if c.endswith(("_x", "_y"))], list(all_jobs.columns)
    assert r"\texttt{My LLM \& Co}" in (out / "table_summary.tex").read_text()
    assert list(pd.read_csv(out / "model_statistics.csv")["model"]) == ["my-llm"]
    # without the grid file the same results are not this grid's: nothing to tabulate
    assert run_cli("aggregate_metrics.py", "--metrics_dir", str(out / "metrics")).returncode == 2


def _grid_json(hardware: str = '{"x": 400}', label: str = '"A"') -> str:
    return '{"models": [{"key": "a", "tp": [1], "label": ' + label + '}], "hardware": ' + hardware + '}'


@pytest.mark.parametrize("text,problem", [
    ('[{"models": []}]', "not a list"),
    ('"models"', "not a str"),
    (_grid_json('{"x": NaN}'), "positive TDP"),
    (_grid_json('{"x": Infinity}'), "positive TDP"),
    (_grid_json('{"x": 400, "x": 700}'), "'x' appears twice"),
    ('{"models": [], "models": [{"key": "a", "tp": [1], "label": "A"}], "hardware": {"x": 1}}', "appears twice"),
])
def test_a_grid_json_that_is_not_an_object_has_a_nan_tdp_or_a_key_twice_is_refused(tmp_path, text, problem):
    path = tmp_path / "grid.json"
    path.write_text(text)
    with pytest.raises(InputError, match=problem):
        grid_module.read_grid_file(path)


def test_a_nan_tdp_in_a_toml_grid_is_refused(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text("[[models]]\nkey='a'\ntp=[1]\nlabel='A'\n[hardware]\nx=nan\n")
    with pytest.raises(InputError, match="positive TDP"):
        grid_module.read_grid_file(path)


def test_grid_labels_are_text_in_latex_never_commands(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(_grid_json(label=r'"\\input /etc/hostname ~ x^2 \\\\ 50% & $"'))
    [spec] = grid_module.read_grid_file(path).models
    inner = spec.table_label
    assert r"\input" not in inner.replace(r"\textbackslash{}input", "")
    assert r"\textbackslash{}input /etc/hostname \textasciitilde{} x\textasciicircum{}2" in inner
    assert r"50\% \& \$" in inner


def test_a_fifo_as_grid_file_is_refused_without_blocking(tmp_path):
    from conftest import fails_instead_of_hanging, fifo
    pipe = fifo(tmp_path / "grid.toml")
    with fails_instead_of_hanging(), pytest.raises(InputError, match="named pipe"):
        grid_module.read_grid_file(pipe)
