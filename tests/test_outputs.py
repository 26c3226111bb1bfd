"""Writing outputs: a full disk is one line, and a running writer's temporary file is left alone."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.errors import InputError


def test_full_disk_says_no_space_left(tmp_path, monkeypatch):
    import errno
    from model.outputs import write_text

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(InputError, match="no space left on device"):
        write_text(tmp_path / "table.tex", "x")
    assert list(tmp_path.iterdir()) == []


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


def test_json_outputs_are_strict_json_with_null_for_a_missing_number(tmp_path):
    import json
    from model.outputs import write_json

    def refuse(token):
        raise ValueError(f"{token} is not JSON")
    write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": -float("inf")}, "e": 2})
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=refuse) == \
        {"a": None, "b": [1.5, None], "c": {"d": None}, "e": 2}
