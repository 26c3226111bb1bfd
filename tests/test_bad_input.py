"""Bad input in every command: exit 2, a short message naming the problem, nothing written.

The cases run in this process (conftest.run_main); one case per command runs as a real
process, for the exit status the shell sees."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import files_under, load_arrays, run_cli, run_main, save_arrays


def _arrays(demo_file):
    return load_arrays(demo_file)


def make_bad(kind: str, demo_file, folder):
    path = folder / "bad.npz"
    if kind == "missing file":
        return folder / "absent.npz"
    if kind == "empty file":
        path.write_bytes(b"")
    elif kind == "truncated npz":
        path.write_bytes(demo_file.read_bytes()[:5000])
    elif kind == "text file named npz":
        path.write_text("hello\n")
    elif kind == "pickled objects":
        arrays = _arrays(demo_file)
        arrays["tensor_parallelism"] = arrays["tensor_parallelism"].astype(object)
        save_arrays(path, arrays)
    elif kind == "missing key":
        arrays = _arrays(demo_file)
        del arrays["power_traces"]
        save_arrays(path, arrays)
    elif kind == "shapes disagree":
        arrays = _arrays(demo_file)
        arrays["decode_tokens"] = arrays["decode_tokens"][:, :-3]
        save_arrays(path, arrays)
    elif kind in ("NaN watts", "negative watts"):
        arrays = _arrays(demo_file)
        arrays["power_traces"][1, 10] = np.nan if kind == "NaN watts" else -3.0
        save_arrays(path, arrays)
    elif kind == "TP with one trace":
        arrays = _arrays(demo_file)
        arrays["tensor_parallelism"][:] = 2
        arrays["tensor_parallelism"][0] = 1
        save_arrays(path, arrays)
    elif kind == "trace too short for the ACF":
        arrays = _arrays(demo_file)
        arrays["trace_lengths"][0] = 80
        save_arrays(path, arrays)
    return path


DATA_CASES = {
    "missing file": "not found",
    "empty file": "empty",
    "truncated npz": "",
    "text file named npz": "not a readable .npz",
    "pickled objects": "pickle",
    "missing key": "'power_traces'",
    "shapes disagree": "'decode_tokens'",
    "NaN watts": "trace 1",
    "negative watts": "trace 1",
    "TP with one trace": "TP 1 has 1 trace",
    "trace too short for the ACF": "trace 0",
}


def assert_bad_input(proc, *fragments):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def train(data_file, out, *extra, runner=run_main):
    return runner("-m", "model.train_entry", "--data_file", str(data_file), "--model", "llama-3-8b",
                   "--tp", "1", "--hardware_accelerator", "a100", "--num_epochs", "1",
                   "--output_dir", str(out), *extra)


@pytest.mark.parametrize("kind", list(DATA_CASES))
def test_train_entry_bad_data(kind, demo_file, tmp_path):
    path = make_bad(kind, demo_file, tmp_path)
    proc = train(path, tmp_path / "out")
    assert_bad_input(proc, str(path), DATA_CASES[kind])
    assert files_under(tmp_path / "out") == set()


@pytest.mark.parametrize("flags,fragment", [
    (["--tp", "4"], "TP 1, 2"),
    (["--num_epochs", "0"], "--num_epochs"),
    (["--lr", "0"], "--lr"),
    (["--lr=-1e-3"], "--lr"),
    (["--val_split", "0"], "--val_split"),
    (["--val_split", "1.5"], "--val_split"),
    (["--model", "llama3-8b"], "llama3-8b"),
    (["--hardware_accelerator", "v100"], "v100"),
    (["--val_traces", "3;7"], "--val_traces must be"),
    (["--val_traces", "100000"], "--val_traces: "),
])
def test_train_entry_bad_flags(flags, fragment, demo_file, tmp_path):
    proc = train(demo_file, tmp_path / "out", *flags)
    assert_bad_input(proc, fragment)
    assert files_under(tmp_path / "out") == set()


@pytest.mark.slow
def test_train_entry_unwritable_output(demo_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = train(demo_file, blocker / "out", runner=run_cli)
    assert_bad_input(proc, str(blocker))


def test_launcher_bad_flags(tmp_path):
    for flags, fragment in ([["--hardware", "b200"], "b200"], [["--num_epochs", "0"], "--num_epochs"],
                            [["--lr", "0"], "--lr"], [["--jobs", "0"], "--jobs"]):
        proc = run_main("run_all_training.py", "--output_dir", str(tmp_path / "out"), *flags)
        assert_bad_input(proc, fragment)
    assert files_under(tmp_path / "out") == set()


@pytest.mark.slow
def test_launcher_unwritable_output(tmp_path):
    (tmp_path / "file").write_text("")
    proc = run_cli("run_all_training.py", "--output_dir", str(tmp_path / "file" / "out"))
    assert_bad_input(proc, "file")


@pytest.mark.slow
def test_demo_data_bad_scale_and_folder(tmp_path):
    assert_bad_input(run_cli("-m", "model.demo_data", "--output_dir", str(tmp_path), "--scale", "huge"), "huge")
    (tmp_path / "file").write_text("")
    assert_bad_input(run_cli("-m", "model.demo_data", "--output_dir", str(tmp_path / "file" / "x")), "file")
