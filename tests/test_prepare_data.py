"""Training files from raw vLLM benchmark JSONs and nvidia-smi CSVs.

The raw files are written here in exactly the tools' formats."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from conftest import files_under, load_arrays, run_cli, run_main
from model import config
from model.data import load_power_file


SMI_HEADER = "timestamp, power.draw [W], utilization.gpu [%], memory.used [MiB]"
DAY = datetime(2025, 10, 17, 5, 0, 0)


def gpu_watts(sample: int, gpu: int) -> float:
    """Each GPU draws a different, sample-dependent power, so sums over GPUs can be checked."""
    return round(60.0 + 10.0 * gpu + 0.5 * (sample % 40) + 0.01 * gpu * sample, 2)


def write_power_csv(path, first: datetime, seconds: float, n_gpus: int = 8, period: float = 0.25,
                    watts=gpu_watts):
    lines = [SMI_HEADER]
    for s in range(int(round(seconds / period)) + 1):
        stamp = (first + timedelta(seconds=s * period)).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        for g in range(n_gpus):
            lines.append(f"{stamp}, {watts(s, g):.2f} W, {min(100, 3 * s % 101)} %, {1000 + g} MiB")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_benchmark(path, end: datetime, duration: float, tp: int, input_lens, output_lens, ttfts, itls,
                    start_times=None, request_rate=2.0):
    result = {"date": end.strftime("%Y%m%d-%H%M%S"), "backend": "vllm", "model_id": "meta-llama/Meta-Llama-3-8B",
              "num_prompts": len(input_lens), "request_rate": request_rate, "tensor_parallel_size": tp,
              "duration": duration, "completed": sum(1 for t in ttfts if t), "input_lens": input_lens,
              "output_lens": output_lens, "ttfts": ttfts, "itls": itls}
    if start_times is not None:
        result["start_times"] = start_times
    path.write_text(json.dumps(result))
    return path


def random_run(runs_dir, name: str, end: datetime, tp: int, seed: int, duration: float = 40.0,
               csv_name: str | None = None):
    """A plausible run: Poisson requests, power CSV starting 2 s before and ending 2 s after."""
    rng = np.random.default_rng(seed)
    n = 30
    outputs = rng.integers(20, 120, n)
    itls = [list(np.round(rng.uniform(0.01, 0.03, k - 1), 4)) for k in outputs]
    ttfts = list(np.round(rng.uniform(0.05, 0.4, n), 4))
    latencies = np.array(ttfts) + np.array([sum(x) for x in itls])
    starts = np.sort(rng.uniform(0, duration - latencies.max() - 0.5, n))
    write_benchmark(runs_dir / f"{name}.json", end, duration, tp, [int(x) for x in rng.integers(50, 900, n)],
                    [int(x) for x in outputs], [float(x) for x in ttfts], [[float(v) for v in x] for x in itls],
                    start_times=[float(x) for x in starts])
    write_power_csv(runs_dir / f"{csv_name or name}.csv", end - timedelta(seconds=duration + 2), duration + 4)


def prepare(runs_dir, out, *extra, runner=run_main):
    return runner("-m", "model.prepare_data", "--runs", str(runs_dir), "--model", "llama-3-8b",
                   "--hardware", "h100", "--out", str(out), *extra)


def test_watts_summed_over_the_runs_gpus_of_8_rows_per_sample(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    end = DAY + timedelta(seconds=30)
    write_benchmark(runs / "bench.json", end, 30.0, 2, [100], [3], [0.2], [[0.1, 0.1]], start_times=[0.5])
    write_power_csv(runs / "power.csv", DAY - timedelta(seconds=1), 32.0)     # samples 4 per second
    proc = prepare(runs, tmp_path / "out.npz")
    assert proc.returncode == 0, proc.stderr
    arrays = load_arrays(tmp_path / "out.npz")
    assert arrays["tensor_parallelism"].tolist() == [2] and arrays["trace_lengths"].tolist() == [120]
    # `date` is truncated to the second, so the run is placed half a second later than date - duration:
    # 1.5 s (6 samples) into the log
    samples = np.arange(120) + 6
    expected = [gpu_watts(s, 0) + gpu_watts(s, 1) for s in samples]
    np.testing.assert_allclose(arrays["power_traces"][0], expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.diff(arrays["timestamps"][0]), 0.25)

    proc = prepare(runs, tmp_path / "gpus23.npz", "--gpus", "2,3")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(load_arrays(tmp_path / "gpus23.npz")["power_traces"][0],
                               [gpu_watts(s, 2) + gpu_watts(s, 3) for s in samples], atol=1e-9)


def test_binning_of_prefill_decode_and_active_requests(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    end = DAY + timedelta(seconds=10)
    # request 0: arrives 0.1, prefill to 0.4, decodes to 0.9; request 1: 1.0, 1.2, 2.2; request 2 failed
    write_benchmark(runs / "b.json", end, 10.0, 1, [100, 50, 70], [6, 5, 0], [0.3, 0.2, 0.0],
                    [[0.1] * 5, [0.25] * 4, []], start_times=[0.1, 1.0, 1.5])
    write_power_csv(runs / "p.csv", DAY - timedelta(seconds=1), 12.0, n_gpus=1)
    proc = prepare(runs, tmp_path / "out.npz")
    assert proc.returncode == 0, proc.stderr
    arrays = load_arrays(tmp_path / "out.npz")
    prefill, decode, active = np.zeros(40), np.zeros(40), np.zeros(40)
    prefill[[0, 1]], prefill[4] = 100, 50
    decode[1:4], decode[4:9] = 6, 5
    active[0:9] = 1
    np.testing.assert_array_equal(arrays["prefill_tokens"][0], prefill)
    np.testing.assert_array_equal(arrays["decode_tokens"][0], decode)
    np.testing.assert_array_equal(arrays["active_requests"][0], active)
    start = arrays["timestamps"][0, 0]
    np.testing.assert_allclose(arrays["request_timestamps"][0] - start, [0.1, 1.0], atol=1e-6)
    assert arrays["input_tokens"][0].tolist() == [100, 50] and arrays["output_tokens"][0].tolist() == [6, 5]
    sources = json.loads((tmp_path / "out.sources.json").read_text())
    assert sources["traces"][0]["failed_requests_dropped"] == 1
    assert sources["traces"][0]["arrivals"] == "from start_times"


def test_pairs_by_time_not_by_name_and_reports_the_rest(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    random_run(runs, "run_a", DAY + timedelta(minutes=1), tp=1, seed=1, csv_name="power_of_b")
    random_run(runs, "run_b", DAY + timedelta(minutes=5), tp=2, seed=2, csv_name="power_of_a")
    as_metadata = json.loads((runs / "run_b.json").read_text()) | {"tensor_parallel_size": "2"}
    (runs / "run_b.json").write_text(json.dumps(as_metadata))   # --metadata writes strings
    write_power_csv(runs / "idle_afterwards.csv", DAY + timedelta(hours=1), 20.0)
    write_benchmark(runs / "run_without_power.json", DAY + timedelta(hours=2), 20.0, 1, [10], [2], [0.1],
                    [[0.05]], start_times=[1.0])
    proc = prepare(runs, tmp_path / "out.npz")
    assert proc.returncode == 0, proc.stderr
    assert "unmatched: run_without_power.json" in proc.stdout and "unmatched: idle_afterwards.csv" in proc.stdout
    sources = json.loads((tmp_path / "out.sources.json").read_text())
    assert [(t["benchmark"], t["power_log"], t["tensor_parallel_size"]) for t in sources["traces"]] == \
        [("run_a.json", "power_of_b.csv", 1), ("run_b.json", "power_of_a.csv", 2)]
    assert sorted(sources["unmatched"]) == ["idle_afterwards.csv", "run_without_power.json"]
    assert len(sources["traces"][0]["benchmark_sha256"]) == 64
    assert load_arrays(tmp_path / "out.npz")["tensor_parallelism"].tolist() == [1, 2]


def test_random_arrivals_are_rebuilt_only_when_allowed_and_then_reproducibly(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    n, duration = 20, 30.0
    itls = [[0.02] * 9] * n
    write_benchmark(runs / "b.json", DAY + timedelta(seconds=30), duration, 1, [200] * n, [10] * n,
                    [0.1] * (n - 1) + [0], itls, request_rate=1.5)
    write_power_csv(runs / "p.csv", DAY - timedelta(seconds=1), 32.0, n_gpus=1)
    refused = prepare(runs, tmp_path / "a.npz")
    assert refused.returncode == 2 and "--allow_rebuilt_arrivals" in refused.stderr
    assert "b.json" in refused.stderr and not (tmp_path / "a.npz").exists()
    proc = prepare(runs, tmp_path / "a.npz", "--allow_rebuilt_arrivals")
    assert proc.returncode == 0, proc.stderr
    assert "no per-request send times" in proc.stdout
    arrays = load_arrays(tmp_path / "a.npz")
    arrivals = arrays["request_timestamps"][0] - arrays["timestamps"][0, 0]
    assert len(arrivals) == n - 1 and arrivals[0] == 0 and np.all(np.diff(arrivals) > 0)
    assert arrivals[-1] + 0.1 + 0.18 == pytest.approx(duration, abs=1e-6)   # last one ends with the run
    record = json.loads((tmp_path / "a.sources.json").read_text())["traces"][0]
    assert record["arrivals"].startswith("rebuilt at random")
    assert record["request_rate"] == 1.5 and record["seed"] == 0 and record["time_scale"] > 0

    assert prepare(runs, tmp_path / "b.npz", "--allow_rebuilt_arrivals").returncode == 0
    np.testing.assert_array_equal(load_arrays(tmp_path / "b.npz")["request_timestamps"], arrays["request_timestamps"])
    assert prepare(runs, tmp_path / "c.npz", "--seed", "7", "--allow_rebuilt_arrivals").returncode == 0
    assert not np.array_equal(load_arrays(tmp_path / "c.npz")["request_timestamps"], arrays["request_timestamps"])


@pytest.mark.parametrize("damage, problem", [
    (lambda r: (r / "p.csv").write_text(((r / "p.csv").read_text()).replace(" W,", " [N/A],")), "no usable power.draw"),
    (lambda r: (r / "p.csv").write_text("time,watts\n1,2\n"), "header"),
    (lambda r: (r / "b.json").write_text((r / "b.json").read_text()[:50]), "not valid JSON"),
    (lambda r: (r / "b.json").write_text(json.dumps({k: v for k, v in json.loads((r / "b.json").read_text()).items()
                                                     if k != "ttfts"})), "'ttfts' is missing"),
    (lambda r: write_power_csv(r / "p.csv", DAY + timedelta(seconds=10), 30.0), "covers"),
])
def test_bad_raw_files_exit_2_naming_the_file_and_write_nothing(tmp_path, damage, problem):
    runs = tmp_path / "runs"
    runs.mkdir()
    write_benchmark(runs / "b.json", DAY + timedelta(seconds=30), 30.0, 1, [100], [3], [0.2], [[0.1, 0.1]],
                    start_times=[0.5])
    write_power_csv(runs / "p.csv", DAY - timedelta(seconds=1), 32.0)
    damage(runs)
    proc = prepare(runs, tmp_path / "out" / "x.npz")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert problem in proc.stderr and ("p.csv" in proc.stderr or "b.json" in proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not files_under(tmp_path / "out")


@pytest.mark.slow
def test_existing_file_is_not_replaced_without_overwrite(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    random_run(runs, "r", DAY + timedelta(minutes=1), tp=1, seed=0)
    (tmp_path / "x.npz").write_bytes(b"precious")
    proc = prepare(runs, tmp_path / "x.npz", runner=run_cli)     # one real process: the exit status
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert (tmp_path / "x.npz").read_bytes() == b"precious"
    assert prepare(runs, tmp_path / "x.npz", "--overwrite").returncode == 0


@pytest.mark.slow
def test_a_folder_of_raw_runs_becomes_a_file_train_entry_trains_on(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for i in range(6):
        random_run(runs, f"tp2_{i}", DAY + timedelta(minutes=2 * i + 1), tp=2, seed=10 + i)
    data_file = tmp_path / "vllm-benchmark_llama-3-8b_h100.npz"
    proc = prepare(runs, data_file)
    assert proc.returncode == 0, proc.stderr
    assert "6 traces (TP 2: 6)" in proc.stdout
    assert len(load_power_file(data_file).traces_for_tp(2)) == 6
    out = tmp_path / "results"
    proc = run_cli("-m", "model.train_entry", "--data_file", str(data_file), "--model", "llama-3-8b",
                   "--tp", "2", "--hardware_accelerator", "h100", "--num_epochs", "2", "--output_dir", str(out),
                   "--no_wandb", "--no_progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert config.metrics_path(out, "llama-3-8b_h100_tp2").exists()


def test_an_existing_sources_file_is_not_replaced_without_overwrite(tmp_path):
    from conftest import run_main
    from model import prepare_data
    runs = tmp_path / "runs"
    runs.mkdir()
    random_run(runs, "r", DAY + timedelta(minutes=1), tp=1, seed=0)
    (tmp_path / "x.sources.json").write_text("precious")
    code, _, err = run_main(prepare_data, "--runs", runs, "--model", "llama-3-8b", "--hardware", "h100",
                            "--out", tmp_path / "x.npz")
    assert code == 2 and "x.sources.json" in err and "--overwrite" in err
    assert (tmp_path / "x.sources.json").read_text() == "precious" and not (tmp_path / "x.npz").exists()


def test_out_onto_a_raw_file_is_refused_even_with_overwrite(tmp_path):
    from conftest import run_main
    from model import prepare_data
    runs = tmp_path / "runs"
    runs.mkdir()
    random_run(runs, "r", DAY + timedelta(minutes=1), tp=1, seed=0)
    before = {p.name: p.read_bytes() for p in runs.iterdir()}
    raw = sorted(runs.glob("*.csv"))[0]
    code, _, err = run_main(prepare_data, "--runs", runs, "--model", "llama-3-8b", "--hardware", "h100",
                            "--out", raw, "--overwrite")
    assert code == 2 and "--out" in err and raw.name in err
    assert {p.name: p.read_bytes() for p in runs.iterdir()} == before


@pytest.mark.parametrize("name", ["power.csv", "bench.json"])
def test_a_fifo_among_the_raw_runs_is_refused_without_blocking(tmp_path, name):
    from conftest import fails_instead_of_hanging, fifo, run_main
    from model import prepare_data
    runs = tmp_path / "runs"
    runs.mkdir()
    random_run(runs, "r", DAY + timedelta(minutes=1), tp=1, seed=0)
    fifo(runs / f"zz_{name}")
    with fails_instead_of_hanging():
        code, _, err = run_main(prepare_data, "--runs", runs, "--model", "llama-3-8b", "--hardware", "h100",
                                "--out", tmp_path / "x.npz")
    assert code == 2 and "named pipe" in err and f"zz_{name}" in err
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("tokens", [10**30, 10**15, -3])
def test_absurd_token_counts_are_one_line_exit_2(tmp_path, tokens):
    from conftest import run_main
    from model import prepare_data
    runs = tmp_path / "runs"
    runs.mkdir()
    random_run(runs, "r", DAY + timedelta(minutes=1), tp=1, seed=0)
    bench = runs / "r.json"
    record = json.loads(bench.read_text())
    record["input_lens"][3] = tokens
    bench.write_text(json.dumps(record))
    code, _, err = run_main(prepare_data, "--runs", runs, "--model", "llama-3-8b", "--hardware", "h100",
                            "--out", tmp_path / "x.npz")
    assert code == 2 and "r.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0, -1])
def test_prepare_data_refuses_a_request_rate_that_is_not_positive(tmp_path, rate):
    runs = tmp_path / "runs"
    runs.mkdir()
    write_benchmark(runs / "b.json", DAY + timedelta(seconds=30), 30.0, 1, [200] * 5, [10] * 5,
                    [0.1] * 5, [[0.02] * 9] * 5, request_rate=rate)
    write_power_csv(runs / "p.csv", DAY - timedelta(seconds=1), 32.0, n_gpus=1)
    result = prepare(runs, tmp_path / "a.npz", "--allow_rebuilt_arrivals")
    assert result.returncode == 2 and "request_rate" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "a.npz").exists()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_max_gap_s_that_is_not_a_positive_number_of_seconds_is_one_line(tmp_path, value):
    runs = tmp_path / "runs"
    runs.mkdir()
    random_run(runs, "a", datetime(2024, 5, 1, 12, 0, 0), tp=1, seed=0)
    code, _, err = prepare(runs, tmp_path / "out.npz", "--max_gap_s", value)
    assert code == 2 and "--max_gap_s must be a positive number of seconds" in err and len(err.strip().splitlines()) == 1
    assert files_under(tmp_path) == {"runs/a.json", "runs/a.csv"}
