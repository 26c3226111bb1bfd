"""prepare_data on run folders of the campaign's native layout (model/measurements/native_run.py),
on made-up folders written by native_fixture.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_arrays, run_main, save_arrays
from model.data import load_power_file
from model.errors import InputError
from model.measurements import read_folder
from native_fixture import START_EPOCH, UTC_OFFSET_S, NativeRun, fixture_watts


def prepare(runs_dir, out):
    return run_main("-m", "model.prepare_data", "--runs", str(runs_dir), "--model", "llama-3-8b",
                    "--hardware", "a100", "--out", str(out))


def sources_of(out: Path) -> dict:
    return json.loads(out.with_name(out.stem + ".sources.json").read_text())


def only_run(folder: Path):
    sources = read_folder(folder)
    assert len(sources.runs) == 1
    return sources.runs[0]


def test_a_scalar_itls_is_a_mean_so_decode_lasts_mean_times_output_tokens_less_one(tmp_path):
    spec = NativeRun(itls="scalar")
    run = only_run(spec.write(tmp_path / "run"))
    np.testing.assert_allclose(run.arrivals + run.latencies - spec.start_epoch + spec.start_epoch,
                               spec.ends, atol=1e-9)
    # the 150-token request decodes for 0.2 + 149 x 20 ms = 3.18 s: active in every bin it spans
    out = tmp_path / "x.npz"
    assert prepare(tmp_path / "run", out).returncode == 0
    trace = load_power_file(out).traces[0]
    t = trace.timestamps - trace.timestamps[0]
    during = (t >= 1.25) & (t < 1.1 + 3.18 - 0.25)
    assert np.all(trace.active_requests[during] >= 1)
    assert np.all(trace.decode_tokens[during] >= 150)


def test_a_list_itls_is_summed_and_gives_the_same_run_as_its_mean(tmp_path):
    scalar = only_run(NativeRun(itls="scalar").write(tmp_path / "a"))
    listed = only_run(NativeRun(itls="list").write(tmp_path / "b"))
    np.testing.assert_allclose(listed.latencies, scalar.latencies, rtol=1e-12)


def test_an_itls_entry_that_is_neither_a_number_nor_a_list_is_one_line_naming_the_field(tmp_path):
    NativeRun(itls="text").write(tmp_path / "run")
    out = tmp_path / "x.npz"
    code, _, err = prepare(tmp_path / "run", out)
    assert code == 2 and "'itls'" in err and "requests.json" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("power_basis", ["local_wall_time", "unix_epoch"])
def test_the_run_is_placed_by_its_window_and_the_manifests_clocks(tmp_path, power_basis):
    NativeRun(power_basis=power_basis, log_gpus=2, used=[1]).write(tmp_path / "run")
    out = tmp_path / "x.npz"
    assert prepare(tmp_path / "run", out).returncode == 0
    trace = load_power_file(out).traces[0]
    assert trace.timestamps[0] == pytest.approx(START_EPOCH + UTC_OFFSET_S)
    np.testing.assert_allclose(trace.request_times - trace.timestamps[0], NativeRun().arrivals, atol=1e-6)
    assert len(trace) == 40                                  # the 10 s window in 0.25 s bins
    np.testing.assert_allclose(trace.power, [fixture_watts(4 + k, 1) for k in range(40)], atol=1e-6)


def test_a_manifest_whose_utc_offset_disagrees_with_its_reference_time_is_refused(tmp_path):
    folder = NativeRun().write(tmp_path / "run")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["clock"]["local_utc_offset_s"] = -7200.0
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = prepare(folder, tmp_path / "x.npz")
    assert code == 2 and "local_utc_offset_s -7200" in err and len(err.strip().splitlines()) == 1, err


def test_the_gpus_are_the_power_logs_rows_with_the_manifests_uuids(tmp_path):
    """The log holds three GPUs; the run used only GPU 2 (by UUID): its watts, not GPU 0's."""
    NativeRun(log_gpus=3, used=[2]).write(tmp_path / "run")
    out = tmp_path / "x.npz"
    assert prepare(tmp_path / "run", out).returncode == 0
    trace = load_power_file(out).traces[0]
    # bins start at the window's start, 4 samples (1 s) into the log, on the samples
    expected = [fixture_watts(4 + k, 2) for k in range(len(trace))]
    np.testing.assert_allclose(trace.power, expected, atol=1e-6)
    assert sources_of(out)["traces"][0]["gpus"] == [2]


@pytest.mark.parametrize("spec, problem", [
    (NativeRun(tp=2, log_gpus=2, used=[0]), "tp 2 disagrees with server.active_gpu_uuids"),
    (NativeRun(tp=2, log_gpus=1, used=[0, 1]), "has no GPU GPU-00000000-0000-4000-8000-000000000001"),
])
def test_a_manifest_whose_tp_disagrees_with_the_power_logs_gpus_is_one_line_exit_2(tmp_path, spec, problem):
    spec.write(tmp_path / "run")
    out = tmp_path / "x.npz"
    code, _, err = prepare(tmp_path / "run", out)
    assert code == 2 and problem in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not out.with_name("x.sources.json").exists()


def test_run_folders_are_found_anywhere_under_the_folder(tmp_path):
    NativeRun().write(tmp_path / "campaign" / "a" / "run1")
    NativeRun(start_epoch=START_EPOCH + 100).write(tmp_path / "campaign" / "b" / "c" / "run2")
    out = tmp_path / "x.npz"
    assert prepare(tmp_path / "campaign", out).returncode == 0
    records = sources_of(out)["traces"]
    assert [r["run_folder"] for r in records] == ["a/run1", "b/c/run2"]
    assert len(load_power_file(out).traces) == 2


def test_a_folder_without_any_benchmark_result_says_so_rather_than_blaming_time(tmp_path):
    """Old code: "no benchmark JSON overlaps a power CSV in time"."""
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "notes.json").write_text(json.dumps({"comment": "not a benchmark result"}))
    (folder / "power.csv").write_text(NativeRun().power_csv())
    out = tmp_path / "x.npz"
    code, _, err = prepare(folder, out)
    assert code == 2 and "no benchmark result" in err and "overlaps" not in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_native_folder_without_its_manifest_is_named_as_such(tmp_path):
    NativeRun().write(tmp_path / "runs" / "run", manifest=False)
    out = tmp_path / "x.npz"
    code, _, err = prepare(tmp_path / "runs", out)
    assert code == 2 and "no manifest.json" in err and str(tmp_path / "runs" / "run") in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_the_engine_counters_agreement_is_recorded_per_run(tmp_path):
    spec = NativeRun()
    spec.write(tmp_path / "run")
    out = tmp_path / "x.npz"
    assert prepare(tmp_path / "run", out).returncode == 0
    engine = sources_of(out)["traces"][0]["engine"]
    assert engine["in_flight_vs_running_plus_waiting_r"] > 0.9
    assert engine["prompt_tokens_engine"] == engine["prompt_tokens_requests"] == sum(spec.input_lens)
    assert engine["generation_tokens_engine"] == engine["generation_tokens_requests"] == sum(spec.output_lens)
    assert engine["most_running"] == 3            # at 3.0-3.38 s the requests sent at 1.1, 2.3 and 3.0 s


def test_a_run_without_engine_counters_records_none(tmp_path):
    NativeRun(engine=False).write(tmp_path / "run")
    out = tmp_path / "x.npz"
    assert prepare(tmp_path / "run", out).returncode == 0
    assert "engine" not in sources_of(out)["traces"][0]


def test_the_servers_settings_go_into_the_sources_and_the_data_file(tmp_path):
    NativeRun(max_num_seqs=24, prefix_caching=True).write(tmp_path / "run")
    out = tmp_path / "x.npz"
    assert prepare(tmp_path / "run", out).returncode == 0
    assert sources_of(out)["traces"][0]["server"] == {
        "max_num_seqs": 24, "max_num_batched_tokens": 2048, "chunked_prefill": True, "prefix_caching": True,
        "vllm_version": "9.9.9"}
    assert load_power_file(out).traces[0].server == sources_of(out)["traces"][0]["server"]
    arrays = load_arrays(out)
    assert arrays["max_num_seqs"].tolist() == [24] and arrays["prefix_caching"].tolist() == [1]


def test_runs_with_the_prefix_cache_on_and_off_are_not_mixed_in_one_file(tmp_path):
    NativeRun(prefix_caching=True).write(tmp_path / "runs" / "on")
    NativeRun(prefix_caching=False, start_epoch=START_EPOCH + 100).write(tmp_path / "runs" / "off")
    out = tmp_path / "x.npz"
    code, _, err = prepare(tmp_path / "runs", out)
    assert code == 2 and "prefix cache on" in err and "separate data files" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_data_file_mixing_prefix_cache_settings_is_refused(tmp_path):
    NativeRun(prefix_caching=True).write(tmp_path / "runs" / "a")
    NativeRun(prefix_caching=True, start_epoch=START_EPOCH + 100).write(tmp_path / "runs" / "b")
    out = tmp_path / "x.npz"
    assert prepare(tmp_path / "runs", out).returncode == 0
    arrays = load_arrays(out)
    arrays["prefix_caching"] = np.array([1, 0])
    mixed = save_arrays(tmp_path / "mixed.npz", arrays)
    with pytest.raises(InputError, match="prefix cache on .traces .0.. and off .traces .1.."):
        load_power_file(mixed)


def test_a_benchmark_json_with_one_mean_itl_per_request_reads_it_as_a_mean(tmp_path):
    """The same rule in vllm_json.py: a number in `itls` was summed as if it were the whole decode."""
    from model.measurements.vllm_json import read_benchmarks
    result = {"date": "20300101-000010", "duration": 10.0, "completed": 2, "tensor_parallel_size": 1,
              "request_rate": "inf", "input_lens": [100, 200], "output_lens": [51, 11], "ttfts": [0.1, 0.2],
              "itls": [0.02, [0.03] * 10], "start_times": [0.0, 1.0]}
    (tmp_path / "bench.json").write_text(json.dumps(result))
    run, = read_benchmarks(tmp_path / "bench.json")
    np.testing.assert_allclose(run.latencies, [0.1 + 0.02 * 50, 0.2 + 0.3])


def test_out_onto_a_file_of_a_nested_run_folder_is_refused(tmp_path):
    NativeRun().write(tmp_path / "runs" / "a")
    NativeRun(start_epoch=START_EPOCH + 100).write(tmp_path / "runs" / "b")
    target = tmp_path / "runs" / "a" / "power.csv"
    before = target.read_bytes()
    code, _, err = run_main("-m", "model.prepare_data", "--runs", str(tmp_path / "runs"), "--model", "llama-3-8b",
                            "--hardware", "a100", "--out", str(target), "--overwrite")
    assert code == 2 and "is also the raw file a/power.csv" in err and target.read_bytes() == before, err


def test_an_engine_clock_that_is_not_the_runs_is_noted_not_compared(tmp_path):
    folder = NativeRun().write(tmp_path / "run")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["clock"]["engine_epoch_offset_s"] = 3600.0          # an hour off: no sample in the window
    (folder / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "x.npz"
    ran = prepare(folder, out)
    assert ran.returncode == 0, ran.stderr
    engine = sources_of(out)["traces"][0]["engine"]
    assert engine["samples_compared"] == 0 and engine["samples_expected"] == 40
    assert "engine.csv has 0 samples within the run's window, which should hold about 40" in ran.stdout


def test_engine_counters_that_go_back_in_time_are_refused(tmp_path):
    folder = NativeRun().write(tmp_path / "run")
    lines = (folder / "engine.csv").read_text().splitlines()
    lines[3], lines[4] = lines[4], lines[3]
    (folder / "engine.csv").write_text("\n".join(lines) + "\n")
    ran = prepare(folder, tmp_path / "x.npz")
    assert ran.returncode == 2 and "engine.csv: 'timestamp' does not increase" in ran.stderr
    assert not (tmp_path / "x.npz").exists()


def test_a_manifest_of_another_kind_under_runs_is_not_taken_for_a_run(tmp_path):
    NativeRun().write(tmp_path / "runs" / "run")
    site = tmp_path / "runs" / "site_output"          # e.g. a facility run's folder
    site.mkdir()
    (site / "manifest.json").write_text(json.dumps({"inputs": {}, "layout": {}}))
    out = tmp_path / "x.npz"
    ran = prepare(tmp_path / "runs", out)
    assert ran.returncode == 0, ran.stderr
    assert [t["run_folder"] for t in sources_of(out)["traces"]] == ["run"]


def test_a_reference_time_that_is_not_a_number_is_one_line(tmp_path):
    folder = NativeRun().write(tmp_path / "run")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["clock"]["reference_epoch_s"] = "n/a"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    ran = prepare(folder, tmp_path / "x.npz")
    assert ran.returncode == 2 and "clock.reference_epoch_s 'n/a' is not a number" in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
