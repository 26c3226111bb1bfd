"""Sites: roll-ups that add up, baselines that are their definitions, reproducible files."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, SITE_JOB, files_under, run_cli, run_main
from model import config
from model.checkpoint import load_checkpoint
from model.errors import InputError
from model.generation.generator import Requests
from model.generation.requests_file import poisson_stream
from model.sites.layout import Layout, assign_configs, parse_mix, split_requests
from model.features import window_means
from model.sites.rollup import at_resolutions, diversity_factor, profile_metrics
from model.sites.site import baseline_watts

JOB = SITE_JOB


def test_coarser_resolutions_are_window_means_of_finer_ones():
    watts = np.random.default_rng(0).uniform(100, 200, 3600 * 4)
    levels = at_resolutions(watts, 0.25)
    assert sorted(levels) == [0.25, 1.0, 60.0, 900.0]
    np.testing.assert_allclose(levels[1.0][:2], [watts[:4].mean(), watts[4:8].mean()])
    np.testing.assert_allclose(levels[60.0], window_means(levels[1.0], 60))
    np.testing.assert_allclose(levels[900.0], window_means(levels[60.0], 15))
    for series, step in ((levels[r], r) for r in levels):          # energy is the same at every resolution
        assert series.sum() * step == pytest.approx(watts.sum() * 0.25)


def test_profile_metrics_by_hand():
    m = profile_metrics(np.array([100.0, 300.0, 200.0, 200.0]))
    assert m["peak_w"] == 300 and m["average_w"] == 200 and m["par"] == 1.5
    assert m["load_factor"] == pytest.approx(2 / 3)
    assert m["ramp_max_up_w"] == 200 and m["ramp_max_down_w"] == 100
    assert m["ldc_p99_w"] == pytest.approx(np.percentile([100, 300, 200, 200], 99))
    flat = profile_metrics(np.full(5, 7.0))
    assert flat["par"] == 1 and flat["ramp_p99_w"] == 0
    # one value (a 15-minute window of a 10-minute site) has no ramps: not a measured flat 0
    single = profile_metrics(np.array([7.0]))
    assert all(np.isnan(single[k]) for k in ("ramp_p95_w", "ramp_p99_w", "ramp_max_up_w", "ramp_max_down_w"))


def test_the_diversity_factor_is_the_utility_term_at_least_one():
    # two nodes of 300 W peaks whose sum peaks at 500 W: 600 / 500
    assert diversity_factor(500.0, [300.0, 300.0]) == pytest.approx(1.2)
    nodes = np.random.default_rng(0).uniform(0, 100, (8, 500))
    assert diversity_factor(nodes.sum(axis=0).max(), nodes.max(axis=1)) >= 1.0
    # nodes peaking together are the worse case for a planner: they score lower (1)
    together, apart = np.array([[0.0, 100.0], [0.0, 100.0]]), np.array([[100.0, 0.0], [0.0, 100.0]])
    assert diversity_factor(together.sum(axis=0).max(), together.max(axis=1)) == 1.0
    assert diversity_factor(apart.sum(axis=0).max(), apart.max(axis=1)) == 2.0


def test_the_worst_unit_is_the_largest_peak_or_the_smallest_factor():
    from model.sites.rollup import worst
    assert worst([3.0, 9.0, 5.0], "peak_w") == 9.0 and worst([3.0, 9.0, 5.0], "ramp_max_up_w") == 9.0
    assert worst([0.9, 0.5, 0.7], "load_factor") == 0.5 and worst([1.4, 1.1], "diversity_factor") == 1.1


def test_energy_per_request_and_token_by_hand_and_more_watts_cost_more_joules():
    from model.sites.rollup import energy_per
    assert energy_per(1000.0, 10.0, 5) == 2000.0                   # 10 kJ over 5 requests
    assert energy_per(1000.0, 10.0, 2500) == 4.0                   # over 2,500 output tokens
    assert energy_per(1200.0, 10.0, 5) > energy_per(1000.0, 10.0, 5)
    assert np.isnan(energy_per(1000.0, 10.0, 0))


def test_powers_are_shown_in_the_unit_their_size_reads_in():
    from model.sites.rollup import power_unit
    assert power_unit([14_000.0, 15_000.0]) == ("kW", 1e3)        # a 15-minute ramp, not 0.014 MW
    assert power_unit([0.5, 3.0]) == ("W", 1.0) and power_unit([1.19e6, 7e5]) == ("MW", 1e6)
    assert power_unit([float("nan"), 2e3]) == ("kW", 1e3)


def test_racks_get_configurations_by_share_reproducibly_and_requests_are_conserved():
    layout = Layout(10, 6, 4)
    racks = assign_configs(layout, parse_mix(["a:0.5", "b:0.25", "c:0.25"]), seed=3)
    assert sorted({n: racks.count(n) for n in set(racks)}.items()) == [("a", 30), ("b", 15), ("c", 15)]
    assert racks == assign_configs(layout, parse_mix(["a:0.5", "b:0.25", "c:0.25"]), seed=3)
    assert racks != assign_configs(layout, parse_mix(["a:0.5", "b:0.25", "c:0.25"]), seed=4)
    rng = np.random.default_rng(0)
    requests = Requests(np.sort(rng.uniform(0, 100, 500)), rng.integers(1, 900, 500).astype(float),
                        rng.integers(1, 900, 500).astype(float))
    parts = split_requests(requests, layout.n_nodes, seed=1)
    assert sum(len(p) for p in parts) == 500
    assert sum(p.input_tokens.sum() for p in parts) == requests.input_tokens.sum()
    with pytest.raises(InputError, match="sum to 0.9"):
        parse_mix(["a:0.5", "b:0.4"])
    with pytest.raises(InputError, match="--rows"):
        Layout(0, 6, 4)


@pytest.fixture(scope="module")
def results(site_results):
    return site_results


def facility(results, out, *extra, runner=run_cli):
    return runner("-m", "model.facility", "--config", JOB, "--results_dir", str(results), "--rows", "2",
                   "--racks_per_row", "2", "--nodes_per_rack", "2", "--output_dir", str(out), "--no_progress", *extra)


@pytest.mark.slow
def test_the_tdp_baseline_is_its_definition(results):
    ckpt = load_checkpoint(config.checkpoint_path(results, JOB))
    # the published layout: 240 servers of 4 H100s and 1 kW beside them, PUE 1.3
    assert 240 * baseline_watts(ckpt, 1000.0)["tdp"] * 1.3 == pytest.approx(1_185_600.0)


@pytest.mark.slow
def test_site_is_the_sum_of_its_racks_and_reruns_give_identical_files(results, tmp_path):
    proc = facility(results, tmp_path / "a", "--rate_per_node", "1", "--duration", "1200", "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    racks = np.load(tmp_path / "a" / "racks_1s.npz")["watts"].astype(np.float64)
    site = pd.read_csv(tmp_path / "a" / "site_power.csv")
    assert len(site) == 1800                                     # 20 min rounded up to whole 15 min
    np.testing.assert_allclose(site["it_w"], racks.sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(site["total_w"], site["it_w"] * 1.3, rtol=1e-9)
    quarter = pd.read_csv(tmp_path / "a" / "site_power_15min.csv")
    np.testing.assert_allclose(quarter["it_w"], window_means(site["it_w"].to_numpy(), 900), rtol=1e-6)
    metrics = pd.read_csv(tmp_path / "a" / "facility_metrics.csv")
    ours = metrics[(metrics.method == "ours") & (metrics.level == "site")]
    average = ours[(ours.resolution_s == 1.0) & (ours.metric == "average_w")]["value"].item()
    assert average == pytest.approx(site["total_w"].mean(), rel=1e-6)     # energy = power x time
    tdp = metrics[(metrics.method == "tdp") & (metrics.level == "site") & (metrics.metric == "peak_w")]
    assert set(tdp["value"].round(6)) == {8 * (4 * 700 + 1000) * 1.3}
    again = facility(results, tmp_path / "b", "--rate_per_node", "1", "--duration", "1200", "--seed", "5")
    assert again.returncode == 0
    for name in ("site_power.csv", "facility_metrics.csv", "sizing_table.tex", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.slow
def test_a_site_request_stream_is_split_without_losing_requests_or_tokens(results, tmp_path):
    rng = np.random.default_rng(2)
    n = 400
    pd.DataFrame({"arrival_time_s": np.sort(rng.uniform(0, 2000, n)), "input_tokens": rng.integers(10, 900, n),
                  "output_tokens": rng.integers(10, 900, n)}).to_csv(tmp_path / "req.csv", index=False)
    frame = pd.read_csv(tmp_path / "req.csv")
    proc = facility(results, tmp_path / "out", "--requests", str(tmp_path / "req.csv"), "--row_limit_kw", "12",
                    "--time_scale", "0.5")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["requests_served"] == [n, frame["input_tokens"].sum(), frame["output_tokens"].sum()]
    # arrivals compressed to under 1000 s (+60 s to finish): one 15-minute window would not hold
    # them, two do; unscaled (2000 s) they would need three
    assert len(pd.read_csv(tmp_path / "out" / "site_power.csv")) == 1800
    assert manifest["largest_row_racks"]["tdp"] == int(12_000 // (2 * (4 * 700 + 1000)))
    assert (tmp_path / "out" / "oversubscription.csv").exists() and (tmp_path / "out" / "rack_heatmap.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("flags,problem", [
    ([], "give the traffic"),
    (["--rate_per_node", "1"], "--duration"),
    (["--rate_per_node", "1", "--duration", "60", "--pue", "0.5"], "--pue"),
    (["--rate_per_node", "1", "--duration", "60", "--config", "nope_a100_tp1"], "checkpoint not found"),
    (["--rate_per_node", "1", "--duration", "60", "--rows", "0"], "--rows"),
    (["--requests", "REQ=arrival_time_s,input_tokens,output_tokens\n0.5,12,x\n"], "non-numeric value 'x' at row 2"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(results, tmp_path, flags, problem):
    args = _request_file_args(flags, tmp_path)
    if "--config" in args:      # replace the configuration, not add to it
        proc = run_main("-m", "model.facility", "--results_dir", str(results), "--output_dir", str(tmp_path / "out"),
                        "--no_progress", *args)
    else:
        proc = facility(results, tmp_path / "out", *args, runner=run_main)
    assert proc.returncode == 2 and problem in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert files_under(tmp_path / "out") == set()


def test_diurnal_multipliers_shape_the_arrival_rate_by_hour():
    pool = (np.array([100.0]), np.array([50.0]))
    hours = np.zeros(24)
    hours[[0, 2]] = [1.0, 0.5]                      # full rate in hour 0, half in hour 2, none else
    arrivals = poisson_stream(2.0, 4 * 3600.0, pool, seed=0, diurnal=hours).arrival_s
    per_hour = np.bincount((arrivals // 3600).astype(int), minlength=4)
    assert per_hour[1] == 0 and per_hour[3] == 0
    assert per_hour[0] == pytest.approx(7200, rel=0.05) and per_hour[2] == pytest.approx(3600, rel=0.05)
    flat = poisson_stream(2.0, 4 * 3600.0, pool, seed=0).arrival_s
    assert len(flat) == pytest.approx(4 * 7200, rel=0.03)


def _request_file_args(flags: list[str], tmp_path) -> list[str]:
    """flags with REQ=<bytes> written to a requests file and missing.csv made a path that is not there."""
    args = list(flags)
    for i, arg in enumerate(args):
        if arg.startswith("REQ="):
            (tmp_path / "requests.csv").write_text(arg[4:])
            args[i] = str(tmp_path / "requests.csv")
        elif arg == "missing.csv":
            args[i] = str(tmp_path / arg)
    return args


@pytest.mark.parametrize("flags,problem", [
    (["--rate_per_node", "1", "--duration", "60", "--non_gpu_w", "-5"], "--non_gpu_w"),
    (["--rate_per_node", "1", "--duration", "60", "--racks_per_task", "0"], "--racks_per_task"),
    (["--requests", "REQ="], "the requests file is empty"),
    (["--requests", "REQ=arrival_time_s,input_tokens,output_tokens\n"], "holds no requests"),
    (["--requests", "REQ=time,in,out\n1,2,3\n"], "names neither"),
    (["--requests", "missing.csv"], "requests file not found"),
])
@pytest.mark.slow          # it needs a trained checkpoint
def test_bad_site_input_is_refused_before_anything_is_written(results, tmp_path, flags, problem):
    """In-process (the command-line contract, one line and exit 2, is the test above's)."""
    from model.facility import build_site, parse_args
    out = tmp_path / "out"
    with pytest.raises(InputError, match=problem):
        build_site(parse_args(["--config", JOB, "--results_dir", str(results), "--output_dir", str(out), "--no_progress",
                               *_request_file_args(flags, tmp_path)]))
    assert files_under(out) == set()


def test_row_sizing_finds_the_largest_row_under_the_limit():
    from model.sites.rollup import racks_under, row_peaks
    traces = np.tile(np.array([[10.0, 30.0, 10.0]]), (5, 1))       # every rack peaks at 30 W
    curve = row_peaks(traces, limit=100.0, draws=7, rng=np.random.default_rng(0))
    assert [p["p95_w"] for p in curve] == [30.0, 60.0, 90.0, 120.0]   # stops at the first row over the limit
    assert racks_under(curve, 100.0) == 3 and [p["p_exceed"] for p in curve] == [0, 0, 0, 1]
    spread = np.array([[30.0, 10.0], [10.0, 30.0]])                 # peaks at different times
    assert row_peaks(spread, 1e9, 50, np.random.default_rng(1))[-1]["max_w"] == 40.0


def test_row_peak_spread_and_risk_of_exceeding_by_hand():
    from model.sites.rollup import racks_under, row_peaks
    # three constant racks of 10, 20 and 30 W: two of them make 30, 40 or 50 W, each a third of the time
    racks = np.array([[10.0], [20.0], [30.0]])
    curve = row_peaks(racks, limit=45.0, draws=3000, rng=np.random.default_rng(0), risk=50)
    two = curve[1]
    assert (two["p05_w"], two["p50_w"], two["max_w"]) == (30.0, 40.0, 50.0)
    assert two["p_exceed"] == pytest.approx(1 / 3, abs=0.03)
    assert len(curve) == 3 and curve[2]["p_exceed"] == 1.0          # all three: 60 W, always over
    # a stricter risk percentile carries no more racks
    strict = row_peaks(racks, limit=45.0, draws=3000, rng=np.random.default_rng(0), risk=95)
    assert racks_under(strict, 45.0) == 1 < racks_under(curve, 45.0) == 2


def test_a_row_holds_each_rack_once_and_no_answer_exceeds_the_sites_racks():
    from model.sites.report import oversubscription, row_answer
    # rack i draws 100 W at second i only: a row of distinct racks never peaks above 100 W, while
    # a rack drawn twice (with replacement) would give 200 W
    racks = 100.0 * np.eye(6)
    curve, largest, at_site_limit = oversubscription(racks, {"tdp": np.full(6, 120.0), "mean": np.full(6, 10.0)},
                                                     limit_w=110.0, draws=200, seed=0)
    ours = curve[curve["method"] == "ours"]
    assert list(ours["p95_w"]) == [100.0] * 6 and list(ours["racks"]) == [1, 2, 3, 4, 5, 6]
    assert largest == {"ours": 6, "tdp": 0, "mean": 6} and at_site_limit == ["ours", "mean"]
    assert max(largest.values()) <= len(racks) and curve["racks"].max() <= len(racks)
    # a site whose every rack fits many times over: still no answer beyond its 6 racks
    _, roomy, _ = oversubscription(racks, {"tdp": np.full(6, 1.0)}, limit_w=1e9, draws=50, seed=0, risk=99)
    assert roomy == {"ours": 6, "tdp": 6}
    from model.sites.report import row_sizing
    rows = row_sizing(curve, largest, at_site_limit).set_index("method")
    assert rows.loc["Ours", "p95_w"] == 100.0 and rows.loc["Ours", "p_exceed"] == 0.0
    assert rows.loc["Mean", "max_w"] == 60.0 and bool(rows.loc["Mean", "at_site_limit"])
    assert np.isnan(rows.loc["Nameplate (TDP)", "p95_w"])          # not one rack fits: no row to describe
    assert row_answer("ours", 6, at_site_limit) == "ours at least 6 (site limit)"
    assert row_answer("tdp", 0, at_site_limit) == "tdp 0"


@pytest.mark.slow
def test_an_interrupted_run_writes_nothing_and_a_rerun_completes(results, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "model.facility", "--config", JOB, "--results_dir", str(results), "--rows", "1",
            "--racks_per_row", "2", "--nodes_per_rack", "4", "--rate_per_node", "1", "--duration", "43200",
            "--output_dir", str(out), "--no_progress"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "nodes in" in proc.stdout.readline()       # generation has started
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted; nothing written" in stderr and "Traceback" not in stderr
    assert files_under(out) == set()                  # not a file, not a temporary one
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert {"site_power.csv", "manifest.json", "facility_metrics.csv"} <= files_under(out)
    assert not any(".tmp-" in name for name in files_under(out))


def test_a_fifo_as_diurnal_file_is_refused_without_blocking(tmp_path):
    from conftest import fails_instead_of_hanging, fifo
    from model.sites.layout import read_diurnal
    pipe = fifo(tmp_path / "hours.csv")
    with fails_instead_of_hanging(), pytest.raises(InputError, match="named pipe"):
        read_diurnal(pipe)


def _site(results, out, *extra):
    from model.facility import build_site, parse_args
    return build_site(parse_args(["--config", "m_h_tp1", "--results_dir", str(results), "--rows", "1",
                                  "--racks_per_row", "2", "--nodes_per_rack", "2", "--output_dir", str(out),
                                  "--no_progress", *extra]))


def test_a_small_site_of_a_made_up_checkpoint_is_written(tiny_results, tmp_path, capsys):
    assert _site(tiny_results, tmp_path / "out", "--rate_per_node", "1", "--duration", "60") == 0
    assert {"site_power.csv", "manifest.json", "facility_metrics.csv"} <= files_under(tmp_path / "out")
    assert not any(".tmp-" in name for name in files_under(tmp_path / "out"))


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(tiny_results, tmp_path):
    from model.outputs import locked_directory
    out = tmp_path / "out"
    with locked_directory(out, "--output_dir"):            # as a first run would, for its whole run
        with pytest.raises(InputError, match="in use by another run"):
            _site(tiny_results, out, "--rate_per_node", "1", "--duration", "60")
    assert files_under(out) == set()
    assert _site(tiny_results, out, "--rate_per_node", "1", "--duration", "60") == 0     # free again


def test_a_run_that_fails_while_writing_leaves_no_site_power_csv(tiny_results, tmp_path, monkeypatch):
    from model.sites import report

    def fail(*args, **kwargs):
        raise RuntimeError("drawing failed")
    monkeypatch.setattr(report, "write_figures", fail)
    with pytest.raises(RuntimeError, match="drawing failed"):
        _site(tiny_results, tmp_path / "out", "--rate_per_node", "1", "--duration", "60")
    assert files_under(tmp_path / "out") == set()


@pytest.mark.parametrize("flags,problem", [
    (["--rows", "1000000000", "--rate_per_node", "1", "--duration", "86400"], "GiB of memory"),
    (["--rate_per_node", "1", "--duration", "1e15"], "GiB of memory"),
    (["--rate_per_node", "1", "--duration", "60", "--row_limit_kw", "inf"], "--row_limit_kw"),
    (["--rate_per_node", "1", "--duration", "60", "--diurnal", "DIURNAL_INF"], "finite multiplier"),
])
def test_sizes_beyond_memory_and_infinite_limits_are_one_line_before_any_work(tiny_results, tmp_path, flags,
                                                                             problem):
    hours = tmp_path / "hours.csv"
    hours.write_text("hour,multiplier\n" + "".join(f"{h},{'inf' if h == 3 else 1}\n" for h in range(24)))
    flags = [str(hours) if f == "DIURNAL_INF" else f for f in flags]
    with pytest.raises(InputError, match=problem) as err:
        _site(tiny_results, tmp_path / "out", *flags)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_site_from_a_requests_file_runs_on_for_drain_s_after_the_last_arrival(tiny_results, tmp_path):
    import json
    requests = tmp_path / "requests.csv"
    requests.write_text("arrival_time_s,input_tokens,output_tokens\n1.0,100,20\n10.0,100,20\n")
    bins = {}
    for drain in ("60", "1000"):                     # 70 s: one 15-minute window; 1010 s: two
        out = tmp_path / f"drain{drain}"
        assert _site(tiny_results, out, "--requests", str(requests), "--drain_s", drain) == 0
        bins[drain] = json.loads((out / "manifest.json").read_text())["bins"]
    assert bins["1000"] == 2 * bins["60"]


def test_a_site_reports_its_share_above_nameplate_and_calls_tdp_nameplate(tiny_results, tmp_path, capsys):
    from test_checkpoint import tiny_checkpoint
    # GPUs of a 250 W nameplate whose busiest state draws 300 W
    tiny_checkpoint(config.checkpoint_path(tiny_results, "m_h_tp1"),
                    configuration={"model": "m", "hardware": "h", "tp": 1, "job_name": "m_h_tp1", "bin_s": 0.25,
                                   "gpu_tdp_w": 250.0})
    assert _site(tiny_results, tmp_path / "out", "--rate_per_node", "2", "--duration", "120", "--non_gpu_w", "0",
                 "--pue", "1") == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    nameplate = manifest["nameplate"]
    site = pd.read_csv(tmp_path / "out" / "site_power.csv")
    assert nameplate["nameplate_w"] == 4 * 250.0
    assert 0 < nameplate["share_above_nameplate"] < 1 and 0 < nameplate["servers_share_above_nameplate"] < 1
    assert nameplate["peak_1s_w"] == pytest.approx(site["total_w"].max(), rel=1e-5)
    assert nameplate["peak_0.25s_w"] >= nameplate["peak_1s_w"] >= nameplate["peak_60s_w"]
    table = (tmp_path / "out" / "sizing_table.tex").read_text()
    assert r"\textbf{Nameplate}\\\textbf{(TDP)}" in table        # the column head, on two lines
    assert r"Above nameplate (\%)" in table and "Peak, 0.25 s (kW)" in table
    assert "above the 1000 W nameplate" in capsys.readouterr().out


def test_a_site_notices_traffic_outside_the_training_range_and_records_it_under_warnings(tiny_results, tmp_path,
                                                                                      capsys):
    # the made-up checkpoint trained on at most 4 requests/s per server; 40 are far outside
    assert _site(tiny_results, tmp_path / "out", "--rate_per_node", "40", "--duration", "60") == 0
    err = capsys.readouterr().err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    notice = next(w for w in manifest["warnings"] if "outside what the checkpoint trained on" in w)
    assert notice.startswith("m_h_tp1: ") and f"notice: {notice}\n" in err
    assert manifest["extrapolation"]["m_h_tp1"]["share_outside"] > 0.9
    assert manifest["extrapolation"]["m_h_tp1"]["requests"] == manifest["requests_served"][0]     # every node's
    assert manifest["servers"] == {"m_h_tp1": {}}     # what its training runs' vLLM was set to: not recorded
    # its checkpoint records no validation scores: said too
    assert any("records no energy_error_pct or autocorr_r2" in w for w in manifest["warnings"])


def test_a_strict_site_with_traffic_outside_the_training_range_exits_2_with_nothing_written(tiny_results, tmp_path):
    with pytest.raises(InputError, match="^--strict: m_h_tp1: the traffic lies outside") as err:
        _site(tiny_results, tmp_path / "out", "--rate_per_node", "40", "--duration", "60", "--strict")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_poor_validation_scores_are_a_site_warning_with_the_numbers(tiny_results, tmp_path, capsys):
    from test_checkpoint import tiny_checkpoint
    from test_generate import _ranges
    tiny_checkpoint(config.checkpoint_path(tiny_results, "m_h_tp1"), training_traffic=_ranges(1e9),
                    metrics={"energy_error_pct": 10.6, "autocorr_r2": 0.44})
    # --strict is about the traffic: poor scores are a warning, not a refusal
    assert _site(tiny_results, tmp_path / "out", "--rate_per_node", "1", "--duration", "60", "--strict") == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    [warning] = manifest["warnings"]
    assert warning.startswith("m_h_tp1: poor validation scores")
    assert "energy_error_pct 10.6 > 5" in warning and "autocorr_r2 0.44 < 0.5" in warning
    assert f"warning: {warning}\n" in capsys.readouterr().err


def responsive_checkpoint(path):
    """A made-up checkpoint whose classifier reads the active requests and nothing else (no
    memory): under 10 active it picks the idle state, 10 to 30 the middle one, above 30 the
    busiest, with near certainty. Its requests take about 10 s, so at 5 a second a server holds
    about 65 and sits in the busiest state, while a server that starts empty climbs through all
    three in its first seconds."""
    import torch
    from model.generation.serving import ServingModel
    from test_checkpoint import K, PowerStateGRU, tiny_checkpoint
    model = PowerStateGRU(K, hidden_size=4, num_layers=1, dropout=0.0)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    hidden, active = 4, 3                             # feature 3: active requests (log1p; the norm is 0, 1)
    for suffix in ("", "_reverse"):
        state["gru.bias_ih_l0" + suffix][hidden:2 * hidden] = -30.0      # update gate shut: h_t = n_t
        for unit, threshold in ((0, 10), (1, 30)):
            state["gru.weight_ih_l0" + suffix][2 * hidden + unit, active] = 20.0
            state["gru.bias_ih_l0" + suffix][2 * hidden + unit] = -20.0 * np.log1p(threshold)
    steep = 15.0              # logits from the two forward units: state k wins between thresholds k and k + 1
    state["head.weight"][0, 0], state["head.bias"][0] = -steep, steep
    state["head.weight"][1, 0], state["head.weight"][1, 1] = steep, -steep
    state["head.weight"][2, 1], state["head.bias"][2] = steep, steep
    return tiny_checkpoint(path, model_state=state, input_tokens=np.array([10, 10]),
                           output_tokens=np.array([400, 400]), serving_model=ServingModel(1000.0, 0.02, 0.01).to_dict())


def test_a_steady_poisson_site_has_no_start_up_ramp(tmp_path):
    # with --warmup_s 0 (the servers start empty, as before the warm-up) this fails: the largest
    # 1 s ramp is 328 W against a p99 of 31 W (checked)
    results = tmp_path / "results"
    responsive_checkpoint(config.checkpoint_path(results, "m_h_tp1"))
    assert _site(results, tmp_path / "out", "--rate_per_node", "5", "--duration", "900") == 0
    ramps = np.abs(np.diff(pd.read_csv(tmp_path / "out" / "site_power.csv")["total_w"].to_numpy()))
    assert ramps.max() <= 3 * np.percentile(ramps, 99)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["warmup_s"] == 600.0


def test_a_warm_up_keeps_the_stream_after_zero_and_replays_a_request_files_start():
    from model.sites.site import Plan, warmup_requests, with_warmup
    stream = Requests(np.array([1.0, 5.0, 50.0]), np.array([10.0, 20.0, 30.0]), np.array([1.0, 2.0, 3.0]))
    plan = Plan(Layout(1, 1, 1), ["a"], {}, n_bins=400, bin_s=0.25, non_gpu_w=0.0, pue=1.0, seed=0,
                sampling="coherent", node_requests=[stream], warmup_s=10.0)
    before = warmup_requests(plan, 0, stream, pool=None)
    assert before.arrival_s.tolist() == [-9.0, -5.0] and before.output_tokens.tolist() == [1.0, 2.0]
    warmed = with_warmup(stream, before, 10.0)
    assert warmed.arrival_s.tolist() == [1.0, 5.0, 11.0, 15.0, 60.0]
    poisson = Plan(Layout(1, 1, 1), ["a"], {}, n_bins=400, bin_s=0.25, non_gpu_w=0.0, pue=1.0, seed=0,
                   sampling="coherent", rate_per_node=2.0, warmup_s=100.0)
    early = warmup_requests(poisson, 0, stream, pool=(np.array([7.0]), np.array([8.0]))).arrival_s
    assert len(early) == pytest.approx(200, rel=0.3) and (early >= -100).all() and (early < 0).all()


def test_each_site_table_is_written_as_csv_json_and_tex(tiny_results, tmp_path):
    out = tmp_path / "out"
    assert _site(tiny_results, out, "--rate_per_node", "2", "--duration", "120", "--row_limit_kw", "1",
                 "--risk", "90") == 0
    for stem in ("sizing_table", "row_sizing"):
        assert {f"{stem}.csv", f"{stem}.json", f"{stem}.tex"} <= files_under(out), stem
        assert len(json.loads((out / f"{stem}.json").read_text())) == len(pd.read_csv(out / f"{stem}.csv")) == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["risk_percentile"] == 90 and set(manifest["row_sizing"]) == {"tdp", "mean", "ours"}
    assert all(r["racks"] <= 2 for r in manifest["row_sizing"].values())       # the site has 2 racks
    assert manifest["energy_j"]["ours"]["j_per_request"] > 0
    metrics = pd.read_csv(out / "facility_metrics.csv")
    diversity = metrics[metrics.metric == "diversity_factor"]["value"]
    assert (diversity >= 1 - 1e-12).all()
    worst = metrics[(metrics.method == "ours") & (metrics.metric == "peak_w") & (metrics.resolution_s == 1.0)]
    by_level = worst.set_index("level")["value"]
    assert by_level["worst_rack"] >= by_level["rack"] and by_level["worst_row"] >= by_level["row"]


def test_the_sizing_table_shows_a_small_ramp_in_a_unit_that_shows_it():
    from model.sites.report import SIZING_ROWS, sizing_display
    table = pd.DataFrame([{key: 1.0 for key, _, _ in SIZING_ROWS} | {"method": "Ours", "ramp_max_15min_w": 14_000.0,
                                                                    "peak_1s_w": 1.186e6, "ramp_max_1s_w": 51_000.0}])
    shown = sizing_display(table)["Ours"]
    assert shown["Largest ramp, 15 min (kW)"] == "14.0" and shown["Peak, 1 s (MW)"] == "1.186"
    assert shown["Largest ramp, 1 s (kW)"] == "51.0"


@pytest.mark.slow
def test_site_tables_compile_in_one_column_of_a_two_column_paper(tiny_results, tmp_path):
    from test_aggregate import two_column_log
    out = tmp_path / "out"
    assert _site(tiny_results, out, "--rate_per_node", "2", "--duration", "120", "--row_limit_kw", "1") == 0
    # and a large site's numbers, wider than the small one's: megawatts, six-figure joules
    from model.sites.report import SIZING_ROWS, sizing_table
    large = pd.DataFrame([{key: 1.186e6 * share if kind in ("power", "va") else 100.0 for key, _, kind in SIZING_ROWS}
                          | {"method": label, "par": 1.01, "load_factor": 0.99, "diversity_factor": 1.23,
                             "j_per_request": 123_456.0, "j_per_output_token": 1234.5}
                          for label, share in (("Nameplate (TDP)", 1.0), ("Mean", 0.6), ("Ours", 0.61))])
    (out / "large.tex").write_text(sizing_table(large, "A site of 240 servers."))
    for table in ("sizing_table.tex", "row_sizing.tex", "large.tex"):
        text = (out / table).read_text()
        assert text.startswith("\\begin{table}") and ("$\\times$" in text or table == "large.tex")
        assert "Overfull \\hbox" not in two_column_log(out, table), table


def test_site_figures_count_whole_racks_and_carry_their_reference_lines(tmp_path, monkeypatch):
    from model.sites import report
    figures = {}
    monkeypatch.setattr(report, "save_figure", lambda fig, out, name: figures.setdefault(name, fig) and [])
    rng = np.random.default_rng(0)
    racks = rng.uniform(900.0, 1100.0, (6, 3600 * 4))                # 2 rows of 3 racks, an hour at 0.25 s
    per_second = window_means(racks, 4)
    curve, largest, _ = report.oversubscription(per_second, {"tdp": np.full(6, 1500.0), "mean": np.full(6, 1000.0)},
                                                limit_w=3500.0, draws=50, seed=0)
    report.write_figures(tmp_path, racks.sum(axis=0), 1.3, 0.25, racks, 3, {"Nameplate": 11_700.0, "Mean": 7_800.0},
                         curve, 3500.0, largest, at_site_limit=["mean"])
    ldc = figures["load_duration_15min"].axes[0]
    assert {round(line.get_ydata()[0], 3) for line in ldc.get_lines()} == {11.7, 7.8}          # in kW, both lines
    heat = figures["rack_heatmap"].axes[0]
    assert [line.get_ydata()[0] for line in heat.get_lines()] == [2.5]                         # between the rows
    assert all(float(t).is_integer() for t in heat.get_yticks())
    rows = figures["oversubscription"].axes[0]
    assert all(float(t).is_integer() for t in rows.get_xticks())
    answers = [line.get_xdata()[0] for line in rows.get_lines() if line.get_linestyle() == ":"]
    assert sorted(answers) == sorted([largest["tdp"], largest["mean"]]) == [2, 3]
    labels = {line.get_label() for line in rows.get_lines() if line.get_linestyle() == ":"}
    assert labels == {f"Nameplate (TDP): {largest['tdp']}", f"Mean: \u2265 {largest['mean']} (site limit)"}
    # each baseline keeps its colour from figure to figure
    colour = {line.get_label().split(":")[0]: line.get_color() for line in rows.get_lines() if line.get_linestyle() == ":"}
    ldc_colour = {line.get_label(): line.get_color() for line in ldc.get_lines()}
    assert colour["Nameplate (TDP)"] == ldc_colour["Nameplate"] and colour["Mean"] == ldc_colour["Mean"]


def test_a_requests_file_longer_than_the_period_counts_only_the_periods_requests(tiny_results, tmp_path):
    # an hour of requests, 2 a second, but a site of 15 minutes: energy per request divides the
    # period's energy by the period's requests, not by the whole file's
    arrivals = np.arange(7200) * 0.5
    pd.DataFrame({"arrival_time_s": arrivals, "input_tokens": 100, "output_tokens": 20}).to_csv(
        tmp_path / "req.csv", index=False)
    out = tmp_path / "out"
    assert _site(tiny_results, out, "--requests", str(tmp_path / "req.csv"), "--duration", "600") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    period = int((arrivals < 900).sum())                     # the site runs whole 15-minute windows
    assert manifest["requests_served"] == [period, 100 * period, 20 * period]
    ours = manifest["energy_j"]["ours"]
    site_it_j = pd.read_csv(out / "site_power.csv")["it_w"].sum() * 1.0      # 1 s rows
    assert ours["j_per_request"] == pytest.approx(site_it_j / period, rel=1e-6)


def test_a_site_of_half_second_bins_sizes_what_its_bins_can_tell(tmp_path, capsys):
    """A checkpoint trained on 0.5 s power samples: the 0.25 s peak does not exist ('--'), every
    coarser resolution is there."""
    from test_checkpoint import tiny_checkpoint
    results = tmp_path / "results"
    path = config.checkpoint_path(results, "m_h_tp1")
    path.parent.mkdir(parents=True)
    tiny_checkpoint(path, configuration={"model": "m", "hardware": "h", "tp": 1, "job_name": "m_h_tp1",
                                         "bin_s": 0.5, "gpu_tdp_w": 400.0})
    assert _site(results, tmp_path / "out", "--rate_per_node", "1", "--duration", "900") == 0
    metrics = pd.read_csv(tmp_path / "out" / "facility_metrics.csv")
    assert sorted(metrics["resolution_s"].unique()) == [1.0, 60.0, 900.0]
    sizing = pd.read_csv(tmp_path / "out" / "sizing_table.csv").set_index("method")
    assert sizing["peak_0.25s_w"].isna().all() and (sizing["peak_1s_w"] > 0).all()
