"""Scenario sweeps (model/sites/scenario.py): a row per scenario and seed, the spread over seeds,
and a bad file refused in one line naming the file and the key before any run."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from conftest import ROOT, files_under, run_main
from model.sites.scenario import read_scenarios

SMALL_SITE = """
seeds = [0, 1, 2]
[site]
results_dir = "{results}"
config = "m_h_tp1"
rows = 1
racks_per_row = 2
nodes_per_rack = 1
duration = 60
[sweep]
rate_per_node = [0.5, 2.0]
"""


def scenario_file(tmp_path, results, text=SMALL_SITE):
    path = tmp_path / "sweep.toml"
    path.write_text(text.format(results=results))
    return path


def test_two_rates_and_three_seeds_give_six_rows_and_the_spread_over_seeds(tiny_results, tmp_path):
    out = tmp_path / "sweep"
    ran = run_main("-m", "model.facility", "--scenario", scenario_file(tmp_path, tiny_results), "--output_dir", out,
                   "--no_progress")
    assert ran.returncode == 0, ran.stderr
    table = pd.read_csv(out / "scenarios.csv")
    assert len(table) == 6
    assert sorted(zip(table["rate_per_node"], table["seed"])) == [(r, s) for r in (0.5, 2.0) for s in (0, 1, 2)]
    for run in table["run"]:                       # each row is a site run of its own, with its own files
        assert {"manifest.json", "report.html", "facility_metrics.csv"} <= files_under(out / run)
    assert table.loc[table.rate_per_node == 2.0, "requests_served"].mean() > \
        table.loc[table.rate_per_node == 0.5, "requests_served"].mean()
    summary = pd.read_csv(out / "scenario_summary.csv")
    peaks = summary[summary.metric == "ours_peak_1s_w"].set_index("scenario")
    assert list(peaks["seeds"]) == [3, 3]
    by_hand = table.groupby("scenario")["ours_peak_1s_w"]
    pd.testing.assert_series_equal(peaks["std"], by_hand.std(), check_names=False, rtol=1e-5)
    pd.testing.assert_series_equal(peaks["max"], by_hand.max(), check_names=False, rtol=1e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"scenarios.csv", "scenario_summary.csv", "report.html"} <= set(manifest["files"])
    assert "sha256" in manifest["inputs"]["scenario file"]
    assert "data:image/png;base64," in (out / "report.html").read_text()


@pytest.mark.parametrize("change,problem", [
    (("duration = 60", "duration = 60\nwarmup = 5"), r"sweep.toml: \[site\] warmup: unknown key"),
    (("rate_per_node = [0.5, 2.0]", 'rate_per_node = [0.5, "fast"]'),
     r"sweep.toml: \[sweep\] rate_per_node = 'fast': expected a number"),
    (("rate_per_node = [0.5, 2.0]", "rate_per_node = [0.5, -1.0]"),
     r"sweep.toml: scenario 2 \(rate_per_node=-1\): --rate_per_node must be positive"),
    (("rate_per_node = [0.5, 2.0]", "rate_per_node = 0.5"), r"\[sweep\] rate_per_node = 0.5: expected a list"),
    (("seeds = [0, 1, 2]", "seeds = [0, 0]"), r"sweep.toml: seeds = \[0, 0\]: expected a list of distinct"),
    (('config = "m_h_tp1"', 'config = "nope_h_tp1"'), r"scenario 1 .*config nope_h_tp1: no checkpoint"),
    (("[site]", "[site]\noutput_dir = 'x'"), r"\[site\] output_dir: a flag of the command line"),
])
def test_a_bad_scenario_file_is_one_line_naming_file_and_key_exit_2_before_any_run(tiny_results, tmp_path, change,
                                                                                   problem):
    path = scenario_file(tmp_path, tiny_results, SMALL_SITE.replace(*change))
    ran = run_main("-m", "model.facility", "--scenario", path, "--output_dir", tmp_path / "sweep", "--no_progress")
    assert ran.returncode == 2
    assert len(ran.stderr.strip().splitlines()) == 1 and "Traceback" not in ran.stderr
    assert re.search(problem, ran.stderr), ran.stderr
    assert not (tmp_path / "sweep").exists()


def test_a_site_flag_beside_scenario_is_refused_not_overruled(tiny_results, tmp_path):
    ran = run_main("-m", "model.facility", "--scenario", scenario_file(tmp_path, tiny_results), "--rows", "3",
                   "--output_dir", tmp_path / "sweep")
    assert ran.returncode == 2 and "--rows: not with --scenario" in ran.stderr


def test_the_shipped_example_reads_as_eight_scenarios_of_three_seeds():
    site, sweep, seeds = read_scenarios(ROOT / "docs" / "scenario.example.toml")
    assert seeds == [0, 1, 2] and len(sweep) == 3
    assert sweep["config"][1] == ["llama-3-70b_h100_tp4:0.5", "llama-3-8b_h100_tp1:0.5"]
    assert sweep["diurnal"] == [None, "docs/diurnal.example.csv"] and site["duration"] == 86400.0
    assert (ROOT / sweep["diurnal"][1]).is_file()
