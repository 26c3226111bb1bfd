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


def test_generation_benchmark_reports_every_path_and_the_ratios(capsys):
    from model.benchmark import main
    assert main(["--generation", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "one server-day: 345600 bins" in out
    assert re.search(r"median: stock [\d.]+ s, stepwise fused [\d.]+ s, batched fused [\d.]+ s per server-day; "
                     r"side by side: batched [\d.]+x stock, [\d.]+x stepwise", out), out


def test_site_benchmark_prints_every_stage_and_the_batched_ratio(site_results, capsys):
    """In process, on the shared site checkpoint, a quarter hour of two servers: a smoke test
    that every stage and figure is printed, not a timing."""
    from conftest import SITE_JOB
    from model.benchmark import main
    from model.timing import SITE_STAGES
    assert main(["--site", "--results_dir", str(site_results), "--config", SITE_JOB, "--site_racks", "1",
                 "--nodes_per_rack", "2", "--hours", "0.25", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for stage in [*SITE_STAGES, "rest (start-up, loading)", "total"]:
        assert re.search(rf"^{re.escape(stage)} +[\d.]+ +[\d.]+", out, re.M), (stage, out)
    assert re.search(r"batched vs stepwise, side by side: [\d.]+x; batched classifier [\d.]+ GFlop/s "
                     r"\(.*\), torch.matmul on the same shapes [\d.]+ GFlop/s", out), out
