"""`python -m model.benchmark` runs end to end. It is a benchmark, not a timed test:
this only checks that it completes and reports every figure, never how fast anything is."""
from __future__ import annotations

import pytest

import re
import subprocess
import sys

from conftest import ROOT

pytestmark = pytest.mark.slow   # every test here starts a process or trains


def test_benchmark_runs_and_reports_every_figure():
    # --grid_epochs 0 skips the launcher comparison (two real jobs, twice): the launcher's own
    # tests run grids, and this one would be most of the suite's time
    proc = subprocess.run([sys.executable, "-m", "model.benchmark", "--rounds", "1", "--together_epochs", "1",
                           "--grid_epochs", "0"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"median: fused [\d.]+ s/trace .* stock [\d.]+ s/trace .* side by side: [\d.]+x", out), out
    assert re.search(r"fused with \d+ one-thread trainings at once: [\d.]+ s/trace", out), out
    assert re.search(r"fused: --jobs 1 ~[\d.]+ h, --jobs \d+ ~[\d.]+ h", out), out
    assert re.search(r"torch: --jobs 1 ~[\d.]+ h", out), out


def test_generation_benchmark_reports_both_implementations_and_their_ratio():
    proc = subprocess.run([sys.executable, "-m", "model.benchmark", "--generation", "--rounds", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "one server-day: 345600 bins" in proc.stdout
    assert re.search(r"median: stock [\d.]+ s, fused [\d.]+ s per server-day; speed-up, side by side: [\d.]+x",
                     proc.stdout), proc.stdout
