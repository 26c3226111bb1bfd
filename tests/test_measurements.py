"""prepare_data against the files the real tools write, checked against the truth of a simulated run.

A simulated run knows when every request was really sent, how long it ran and what every GPU drew.
From it the tests write the exact bytes of each tool's output: the measurement campaign's client
(epoch `request_timestamps` of successful requests), vLLM 0.5 and 0.8 `benchmark_serving.py`,
`vllm bench serve` with and without `--save-detailed` (monotonic `start_times`), and nvidia-smi CSVs
with units or `nounits`, `index` first, second or absent, instantaneous and averaged power, `[N/A]`
values, samples straddling a millisecond and rows a few ms apart. Every resulting trace must place
arrivals within one bin of the truth, count exactly the true active requests per bin, and have
watts within 2 %.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from conftest import files_under, load_arrays, run_main
from model.errors import InputError
from model.measurements import read_benchmarks, read_power_log
from model.prepare_data import prepare as prepare_in_process

BIN = 0.25
SMI_TIME = "%Y/%m/%d %H:%M:%S.%f"
DAY = datetime(2025, 5, 13, 14, 2, 10)          # local wall-clock time of the recording machine


# ---------------------------------------------------------------- the simulated run (the truth)

@dataclass
class SimRun:
    start: datetime              # local time the first request was sent
    zone: timedelta              # the machine's UTC offset
    sent: np.ndarray             # (n,) s since start, every request
    ttfts: list                  # as the client records them: 0.0 for a request that never answered
    itls: list
    input_lens: list
    output_lens: list
    errors: list                 # "" for success
    duration: float

    @property
    def ok(self) -> np.ndarray:
        return np.array([e == "" for e in self.errors])

    @property
    def latencies(self) -> np.ndarray:
        return np.array([t + sum(i) for t, i in zip(self.ttfts, self.itls)])

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration)

    def local_seconds(self, relative: np.ndarray) -> np.ndarray:
        """Seconds on the clock prepare_data uses: local wall-clock time read as UTC."""
        return as_utc(self.start) + relative

    def epoch(self, relative: np.ndarray) -> np.ndarray:
        """What time.time() returned on that machine."""
        return as_utc(self.start) - self.zone.total_seconds() + relative


def as_utc(moment: datetime) -> float:
    return moment.replace(tzinfo=timezone.utc).timestamp()


def simulate(seed: int, n: int = 40, rate: float = 5.0, burstiness: float = 1.0, max_concurrency=None,
             fail: tuple = (), fail_midstream: tuple = (), start_fraction: float = 0.637,
             zone_hours: float = 2.0, jitter: float = 0.003) -> SimRun:
    """A server run as vLLM's client drives it: requests due at gamma-distributed gaps (or all at
    once), each waiting for a free slot under the concurrency limit; send jitter of a few ms."""
    rng = np.random.default_rng(seed)
    outputs = [int(k) for k in rng.integers(5, 60, n)]
    ttfts = [float(x) for x in np.round(rng.uniform(0.05, 0.4, n), 5)]
    itls = [[float(x) for x in np.round(rng.uniform(0.015, 0.03, k - 1), 5)] for k in outputs]
    errors = [""] * n
    for i in fail:                                      # refused at once, no token
        ttfts[i], itls[i], outputs[i], errors[i] = 0.0, [], 0, "Bad Request: prompt too long"
    for i in fail_midstream:                            # broke off after its first tokens
        itls[i], outputs[i] = itls[i][:3], 0
        errors[i] = "ClientPayloadError: Response payload is not completed"
    busy = [t + sum(i) for t, i in zip(ttfts, itls)]
    if math.isinf(rate):
        due = np.zeros(n)
    else:
        gaps = rng.gamma(burstiness, 1.0 / (rate * burstiness), n)
        due = np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    sent, finishing = np.zeros(n), []
    for i in range(n):
        when = due[i]
        if max_concurrency is not None and len(finishing) >= max_concurrency:
            finishing.sort()
            when = max(when, finishing.pop(0))
        sent[i] = when + (jitter * rng.uniform() if i else 0.0)
        finishing.append(sent[i] + busy[i])
    duration = float(np.max(sent + busy) + 0.013)
    start = DAY + timedelta(seconds=start_fraction)
    return SimRun(start, timedelta(hours=zone_hours), sent, ttfts, itls,
                  [int(x) for x in rng.integers(30, 900, n)], outputs, errors, duration)


def true_watts(gpu: int, seconds: np.ndarray) -> np.ndarray:
    """Each GPU a different smooth curve, so a wrong GPU, column or time shows."""
    return 90.0 + 25.0 * gpu + 40.0 * np.sin(2 * np.pi * seconds / 6.3 + gpu)


# ---------------------------------------------------------------- benchmark JSONs, as each client writes them

def _summary(sim: SimRun) -> dict:
    ok = sim.ok
    return {"duration": sim.duration, "completed": int(ok.sum()),
            "total_input_tokens": int(np.sum(np.array(sim.input_lens)[ok])),
            "total_output_tokens": int(sum(sim.output_lens)),
            "request_throughput": ok.sum() / sim.duration, "output_throughput": sum(sim.output_lens) / sim.duration}


def _detail(sim: SimRun) -> dict:
    return {"input_lens": sim.input_lens, "output_lens": sim.output_lens, "ttfts": sim.ttfts, "itls": sim.itls,
            "generated_texts": ["" if e else "Sure." for e in sim.errors], "errors": sim.errors}


def _rate(rate: float):
    return rate if math.isfinite(rate) else "inf"


def campaign_json(sim: SimRun, rate: float, burstiness: float, max_concurrency, tp: int) -> dict:
    """The campaign's fork of benchmark_serving.py with --save-result --save-detailed."""
    return {"date": sim.end.strftime("%Y%m%d-%H%M%S"), "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B",
            "tokenizer_id": "meta-llama/Llama-3.1-8B", "num_prompts": len(sim.sent), "request_rate": _rate(rate),
            "burstiness": burstiness, "max_concurrency": max_concurrency, **_summary(sim),
            "request_goodput:": None, "total_token_throughput": 1234.5, **_detail(sim),
            "mean_ttft_ms": 120.0, "median_ttft_ms": 110.0, "std_ttft_ms": 20.0, "p99_ttft_ms": 300.0,
            "tensor_parallel_size": tp,
            "request_timestamps": [float(x) for x in sim.epoch(sim.sent[sim.ok])]}


def vllm05_json(sim: SimRun, rate: float, tp: int) -> dict:
    """vLLM 0.5.0 benchmark_serving.py --save-result --metadata tensor_parallel_size=N."""
    return {"date": sim.end.strftime("%Y%m%d-%H%M%S"), "backend": "vllm", "model_id": "meta-llama/Meta-Llama-3-8B",
            "tokenizer_id": "meta-llama/Meta-Llama-3-8B", "best_of": 1, "use_beam_search": False,
            "num_prompts": len(sim.sent), "request_rate": _rate(rate), **_summary(sim), "input_throughput": 900.0,
            "mean_ttft_ms": 120.0, "median_ttft_ms": 110.0, "p99_ttft_ms": 300.0, "mean_tpot_ms": 20.0,
            "median_tpot_ms": 19.0, "p99_tpot_ms": 30.0, **_detail(sim), "tensor_parallel_size": str(tp)}


def vllm08_json(sim: SimRun, rate: float, burstiness: float, max_concurrency, tp: int, detailed=True) -> dict:
    """vLLM 0.8 benchmark_serving.py --save-result [--save-detailed] --metadata tp=N."""
    return {"date": sim.end.strftime("%Y%m%d-%H%M%S"), "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B",
            "tokenizer_id": "meta-llama/Llama-3.1-8B", "num_prompts": len(sim.sent), "request_rate": _rate(rate),
            "burstiness": burstiness, "max_concurrency": max_concurrency, **_summary(sim),
            "request_goodput:": None, "total_token_throughput": 1234.5, **(_detail(sim) if detailed else {}),
            "mean_ttft_ms": 120.0, "median_ttft_ms": 110.0, "std_ttft_ms": 20.0, "p99_ttft_ms": 300.0,
            "tp": str(tp)}


def bench_serve_json(sim: SimRun, rate: float, burstiness: float, max_concurrency, tp: int,
                     detailed: bool = True) -> dict:
    """`vllm bench serve --save-result [--save-detailed] --metadata tensor_parallel_size=N`; its send
    times are time.perf_counter() values."""
    result = {"date": sim.end.strftime("%Y%m%d-%H%M%S"), "endpoint_type": "vllm", "label": None,
              "model_id": "meta-llama/Llama-3.1-8B", "tokenizer_id": "meta-llama/Llama-3.1-8B",
              "num_prompts": len(sim.sent), "request_rate": _rate(rate), "burstiness": burstiness,
              "max_concurrency": max_concurrency, **_summary(sim), "failed": int((~sim.ok).sum()),
              "request_goodput": None, "total_token_throughput": 1234.5, "tensor_parallel_size": str(tp)}
    if detailed:
        result |= _detail(sim) | {"start_times": [float(x) for x in 81234.5678 + sim.sent],
                                  "latencies": [float(x) for x in sim.latencies],
                                  "queue_times": [0.001] * len(sim.sent)}
    return result


# ---------------------------------------------------------------- nvidia-smi CSVs

@dataclass
class SmiLayout:
    header: str
    row: str                     # format with t (time), i (index), w (watts), a (average watts)
    units: bool = True
    offsets_ms: tuple = (0,) * 8     # each GPU row's time within a sample
    gpus: tuple = tuple(range(8))


LAYOUTS = {
    "units, no index": SmiLayout("timestamp, power.draw [W], utilization.gpu [%], memory.used [MiB]",
                                 "{t}, {w}, 37 %, 40211 MiB"),
    "nounits, index second": SmiLayout("timestamp, index, power.draw [W], utilization.gpu [%]",
                                       "{t}, {i}, {w}, 37", units=False),
    "index first": SmiLayout("index, timestamp, power.draw [W], memory.used [MiB]", "{i}, {t}, {w}, 40211 MiB"),
    "instant and average": SmiLayout("timestamp, index, power.draw.average [W], power.draw.instant [W]",
                                     "{t}, {i}, {a}, {w}"),
    "instant only, nounits": SmiLayout("timestamp, index, power.draw.instant [W]", "{t}, {i}, {w}", units=False),
    "split millisecond, no index": SmiLayout("timestamp, power.draw [W]", "{t}, {w}",
                                             offsets_ms=(0, 0, 0, 0, 0, 1, 1, 1)),
    "own time per row, no index": SmiLayout("timestamp, power.draw [W]", "{t}, {w}",
                                            offsets_ms=(0, 3, 5, 8, 11, 13, 16, 19)),
}


def write_smi(path: Path, sim: SimRun, layout: SmiLayout, before: float = 3.0, after: float = 3.0,
              bad=None, cut_last_line: bool = False, period_ms: int = 250) -> Path:
    """`nvidia-smi --query-gpu=... --format=csv[,nounits] -lms 250` over the run and a few seconds
    around it. `bad(sample, gpu)` returns the text nvidia-smi writes for an unreadable value, or None."""
    first_ms = round((as_utc(sim.start) - before) * 1000) + 13
    last_ms = round((as_utc(sim.start) + sim.duration + after) * 1000)
    unit = " W" if layout.units else ""
    lines = [layout.header]
    for sample, t0 in enumerate(range(first_ms, last_ms, period_ms)):
        for position, gpu in enumerate(layout.gpus):
            t_ms = t0 + layout.offsets_ms[position]
            stamp = datetime.fromtimestamp(t_ms / 1000, timezone.utc).strftime(SMI_TIME)[:-3]
            watts = float(true_watts(gpu, np.array(t_ms / 1000)))
            text = (bad and bad(sample, gpu)) or f"{watts:.2f}{unit}"
            lines.append(layout.row.format(t=stamp, i=gpu, w=text, a=f"{watts - 30:.2f}{unit}"))
    body = "\n".join(lines) + "\n"
    if cut_last_line:
        body = body[:-9]                     # nvidia-smi killed while writing
    path.write_text(body)
    return path


# ---------------------------------------------------------------- running and checking

def prepare(runs: Path, out: Path, gpus=None, num_gpus=None, allow_rebuilt=False):
    said = []
    prepare_in_process(runs, "llama-3-8b", "h100", out, gpus, num_gpus, 0, False, allow_rebuilt, echo=said.append)
    return load_arrays(out), json.loads(out.with_name(out.stem + ".sources.json").read_text()), "\n".join(said)


def expected_active(edges_start: np.ndarray, sent: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Requests in flight at any time during each bin [t, t + BIN)."""
    lows, highs = edges_start[:, None], edges_start[:, None] + BIN
    return np.sum((sent[None, :] < highs) & (ends[None, :] > lows), axis=1)


def check_against_truth(arrays, sim: SimRun, gpus, row: int = 0, placed_exactly: bool = True):
    """Arrivals within one bin, per-bin active requests equal, watts within 2 %.

    A run placed from `date` alone (no epoch send times) can be up to half a second off the
    truth; its arrivals are then checked relative to the run's start, where they are exact."""
    length = int(arrays["trace_lengths"][row])
    stamps = arrays["timestamps"][row, :length]
    ok = sim.ok
    truth_sent = sim.local_seconds(sim.sent[ok])
    got_sent = arrays["request_timestamps"][row, : ok.sum()]
    if placed_exactly:
        assert np.max(np.abs(got_sent - truth_sent)) < BIN
        shift = 0.0
    else:
        shift = stamps[0] - as_utc(sim.start)
        assert abs(shift) <= 0.5 + 1e-6                    # the whole-second date's error, centered
        assert np.max(np.abs(got_sent - (truth_sent + shift))) < BIN
    ends = truth_sent + shift + sim.latencies[ok]
    np.testing.assert_array_equal(arrays["active_requests"][row, :length],
                                  expected_active(stamps, truth_sent + shift, ends))
    watts = sum(true_watts(g, stamps) for g in gpus)
    np.testing.assert_allclose(arrays["power_traces"][row, :length], watts, rtol=0.02)
    assert arrays["input_tokens"][row, : ok.sum()].tolist() == list(np.array(sim.input_lens)[ok])


def folder(tmp_path: Path, name: str = "runs") -> Path:
    runs = tmp_path / name
    runs.mkdir()
    return runs


# ---------------------------------------------------------------- send times and placement

@pytest.mark.parametrize("zone_hours", [2.0, -5.0, 5.75])
def test_campaign_request_timestamps_place_every_arrival_within_a_bin_on_the_power_clock(tmp_path, zone_hours):
    runs = folder(tmp_path)
    sim = simulate(1, rate=5.0, max_concurrency=6, fail=(0, 3), fail_midstream=(10,), zone_hours=zone_hours)
    (runs / "bench.json").write_text(json.dumps(campaign_json(sim, 5.0, 1.0, 6, tp=2)))
    write_smi(runs / "power.csv", sim, LAYOUTS["nounits, index second"])
    arrays, sources, said = prepare(runs, tmp_path / "out.npz")
    check_against_truth(arrays, sim, gpus=[0, 1])
    record = sources["traces"][0]
    assert record["arrivals"] == "from request_timestamps" and record["requests"] == 37
    sign, hours = ("-" if zone_hours < 0 else "+"), abs(zone_hours)
    assert f"UTC{sign}{int(hours):02d}:{int(60 * (hours % 1)):02d}" in record["placement"]
    assert "rebuilt" not in said


def test_infinite_rate_with_a_concurrency_limit_is_rebuilt_as_the_client_sent_it(tmp_path):
    runs = folder(tmp_path)
    sim = simulate(2, rate=math.inf, max_concurrency=4, fail=(5,), jitter=0.0)
    (runs / "bench.json").write_text(json.dumps(vllm08_json(sim, math.inf, 1.0, 4, tp=1)))
    write_smi(runs / "power.csv", sim, LAYOUTS["index first"])
    arrays, sources, said = prepare(runs, tmp_path / "out.npz")
    check_against_truth(arrays, sim, gpus=[0], placed_exactly=False)
    # at most 4 in flight at once, plus hand-overs inside a bin; all sent at t = 0 would put 39 in the first
    assert arrays["active_requests"][0].max() < 2 * 4
    assert "at most 4 in flight" in sources["traces"][0]["arrivals"]
    assert "bench.json: no per-request send times" in said         # never silently


def test_vllm_05_infinite_rate_sends_everything_at_once(tmp_path):
    runs = folder(tmp_path)
    sim = simulate(3, n=25, rate=math.inf, jitter=0.0)
    (runs / "bench.json").write_text(json.dumps(vllm05_json(sim, math.inf, tp=2)))
    write_smi(runs / "power.csv", sim, LAYOUTS["units, no index"])
    arrays, sources, _ = prepare(runs, tmp_path / "out.npz")
    check_against_truth(arrays, sim, gpus=[0, 1], placed_exactly=False)
    assert sources["traces"][0]["tensor_parallel_size"] == 2       # --metadata wrote "2"


@pytest.mark.parametrize("writer", [
    lambda sim: vllm05_json(sim, 4.0, tp=1),
    lambda sim: vllm08_json(sim, 4.0, 2.5, 3, tp=1),
    lambda sim: campaign_json(sim, 4.0, 1.0, None, tp=1) | {"request_timestamps": None},
], ids=["vllm-0.5", "vllm-0.8-bursty-limited", "no-usable-timestamps"])
def test_random_send_times_are_refused_unless_rebuilding_is_allowed(tmp_path, writer):
    runs = folder(tmp_path)
    sim = simulate(4, rate=4.0, burstiness=2.5, max_concurrency=3)
    result = {k: v for k, v in writer(sim).items() if v is not None or k != "request_timestamps"}
    (runs / "bench.json").write_text(json.dumps(result))
    write_smi(runs / "power.csv", sim, LAYOUTS["index first"])
    with pytest.raises(InputError, match="bench.json.*--allow_rebuilt_arrivals"):
        prepare(runs, tmp_path / "out.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]           # nothing written
    _, sources, said = prepare(runs, tmp_path / "out.npz", allow_rebuilt=True)
    record = sources["traces"][0]
    assert record["arrivals"].startswith("rebuilt at random") and "no per-request send times" in said
    assert record["burstiness"] == result.get("burstiness", 1.0)
    assert record["max_concurrency"] == result.get("max_concurrency")
    if result.get("max_concurrency"):
        run, = read_benchmarks(runs / "bench.json", allow_rebuilt=True)
        in_flight = [np.sum((run.arrivals <= a) & (run.arrivals + run.latencies > a)) for a in run.arrivals]
        assert max(in_flight) == result["max_concurrency"]


def test_bench_serve_monotonic_start_times_give_exact_relative_arrivals(tmp_path):
    runs = folder(tmp_path)
    sim = simulate(5, rate=6.0, burstiness=0.7, max_concurrency=None, fail=(0, 7))   # the first one failed
    (runs / "serve.json").write_text(json.dumps(bench_serve_json(sim, 6.0, 0.7, None, tp=4)))
    write_smi(runs / "power.csv", sim, LAYOUTS["instant and average"])
    arrays, sources, _ = prepare(runs, tmp_path / "out.npz")
    check_against_truth(arrays, sim, gpus=[0, 1, 2, 3], placed_exactly=False)
    assert sources["traces"][0]["arrivals"] == "from start_times"


@pytest.mark.parametrize("fraction", [0.02, 0.35, 0.5, 0.71, 0.98])
def test_a_run_placed_from_its_whole_second_date_is_at_most_half_a_second_off(tmp_path, fraction):
    runs = folder(tmp_path)
    sim = simulate(6, n=15, rate=3.0)
    sim.start += timedelta(seconds=fraction - (sim.end.microsecond / 1e6))      # end at .fraction
    (runs / "serve.json").write_text(json.dumps(bench_serve_json(sim, 3.0, 1.0, None, tp=1)))
    write_smi(runs / "power.csv", sim, LAYOUTS["index first"])
    arrays, _, _ = prepare(runs, tmp_path / "out.npz")
    error = arrays["timestamps"][0, 0] - as_utc(sim.start)
    assert abs(error) <= 0.5 + 1e-6
    assert error == pytest.approx(0.5 - fraction, abs=1e-3)


def test_a_request_with_an_error_message_is_failed_even_after_its_first_token(tmp_path):
    runs = folder(tmp_path)
    sim = simulate(7, n=20, rate=8.0, fail_midstream=(4, 12))
    result = bench_serve_json(sim, 8.0, 1.0, None, tp=1)
    (runs / "serve.json").write_text(json.dumps(result))
    write_smi(runs / "power.csv", sim, LAYOUTS["index first"])
    assert min(result["ttfts"]) > 0                                 # TTFT alone would keep them
    arrays, sources, _ = prepare(runs, tmp_path / "out.npz")
    assert sources["traces"][0]["failed_requests_dropped"] == 2 and sources["traces"][0]["requests"] == 18
    check_against_truth(arrays, sim, gpus=[0], placed_exactly=False)


# ---------------------------------------------------------------- power logs

@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_nvidia_smi_layout_gives_the_true_watts_of_the_runs_gpus(tmp_path, layout):
    runs = folder(tmp_path)
    sim = simulate(8, rate=5.0, max_concurrency=5, fail=(2,))
    (runs / "bench.json").write_text(json.dumps(campaign_json(sim, 5.0, 1.0, 5, tp=2)))
    write_smi(runs / "power.csv", sim, LAYOUTS[layout])
    arrays, sources, _ = prepare(runs, tmp_path / "out.npz", gpus=[1, 3])
    check_against_truth(arrays, sim, gpus=[1, 3])
    record = sources["traces"][0]
    assert record["power_column"] == ("power.draw.instant" if "instant" in layout else "power.draw")
    assert record["gpu_rows"] == ("index column" if "index" in LAYOUTS[layout].header.split(", ")
                                  else "8 rows per sample, in index order")


@pytest.mark.parametrize("layout", ["split millisecond, no index", "own time per row, no index"])
def test_gpu_rows_of_one_sample_are_found_without_an_index_or_equal_timestamps(tmp_path, layout):
    sim = simulate(9, n=10)
    log = read_power_log(write_smi(tmp_path / "p.csv", sim, LAYOUTS[layout]))
    assert log.gpus == list(range(8))
    times, watts = log.series[0]
    np.testing.assert_allclose(watts, true_watts(0, times), atol=0.006)     # GPU 0, not a mix of rows


def test_unindexed_rows_no_count_fits_name_num_gpus_and_the_given_count_is_used(tmp_path):
    sim = simulate(10, n=12)
    scattered = SmiLayout("timestamp, power.draw [W]", "{t}, {w}",
                          offsets_ms=(0, 3, 41, 47, 90, 97, 130, 150))   # rows spread over 150 ms of 250
    path = write_smi(tmp_path / "p.csv", sim, scattered)
    with pytest.raises(InputError, match=r"p\.csv.*--num_gpus"):
        read_power_log(path)
    log = read_power_log(path, num_gpus=8)
    times, watts = log.series[5]
    np.testing.assert_allclose(watts, true_watts(5, times), atol=0.006)


def test_unreadable_values_count_only_on_the_runs_gpus_and_a_cut_off_last_line_is_dropped(tmp_path):
    runs = folder(tmp_path)
    sim = simulate(11, rate=5.0)

    def bad(sample: int, gpu: int):
        if gpu == 6:
            return "[Not Supported]"                   # a GPU the run did not use, never readable
        if gpu == 1 and sample in (20, 41):
            return "[N/A]"
        if gpu == 0 and sample == 30:
            return "[Unknown Error]"
        return None

    (runs / "bench.json").write_text(json.dumps(campaign_json(sim, 5.0, 1.0, None, tp=2)))
    write_smi(runs / "power.csv", sim, LAYOUTS["nounits, index second"], bad=bad, cut_last_line=True)
    arrays, sources, _ = prepare(runs, tmp_path / "out.npz")
    check_against_truth(arrays, sim, gpus=[0, 1])
    assert sources["traces"][0]["power_samples_dropped"] == 3
    assert sources["traces"][0]["power_rows_dropped"] == 1


def test_a_used_gpu_without_values_for_more_than_two_seconds_is_refused(tmp_path):
    runs = folder(tmp_path)
    sim = simulate(12, rate=5.0)
    (runs / "bench.json").write_text(json.dumps(campaign_json(sim, 5.0, 1.0, None, tp=1)))
    write_smi(runs / "power.csv", sim, LAYOUTS["index first"],
              bad=lambda s, g: "[N/A]" if g == 0 and 30 <= s < 40 else None)
    # samples 30-39 unreadable: the hole runs from sample 29 to 40, 11 x 0.25 s, said to the millisecond
    with pytest.raises(InputError, match=r"power\.csv: GPU 0 has no usable power\.draw value for 2\.750 s .*"
                                         r"at most 2 s may be missing \(--max_gap_s\)"):
        prepare(runs, tmp_path / "out.npz")


def test_max_gap_s_sets_how_long_a_hole_may_be(tmp_path):
    runs = folder(tmp_path)
    sim = simulate(12, rate=5.0)
    (runs / "bench.json").write_text(json.dumps(campaign_json(sim, 5.0, 1.0, None, tp=1)))
    write_smi(runs / "power.csv", sim, LAYOUTS["index first"],
              bad=lambda s, g: "[N/A]" if g == 0 and 30 <= s < 40 else None)     # a 2.750 s hole
    with pytest.raises(InputError, match=r"for 2\.750 s .*at most 2\.7 s may be missing"):
        prepare_in_process(runs, "llama-3-8b", "h100", tmp_path / "a.npz", None, None, 0, False, max_gap_s=2.7)
    prepare_in_process(runs, "llama-3-8b", "h100", tmp_path / "b.npz", None, None, 0, False, echo=lambda _: None,
                       max_gap_s=2.75)
    sources = json.loads((tmp_path / "b.sources.json").read_text())
    assert sources["max_gap_s"] == 2.75 and sources["traces"][0]["power_samples_dropped"] == 10


def test_gpus_are_nvidia_smi_indices_even_when_the_log_lists_only_some(tmp_path):
    runs = folder(tmp_path)
    sim = simulate(13, rate=5.0)
    (runs / "bench.json").write_text(json.dumps(campaign_json(sim, 5.0, 1.0, None, tp=2)))
    only_upper = SmiLayout("timestamp, index, power.draw [W]", "{t}, {i}, {w}", gpus=(4, 5, 6, 7))
    write_smi(runs / "power.csv", sim, only_upper)                  # nvidia-smi -i 4,5,6,7
    arrays, sources, _ = prepare(runs, tmp_path / "out.npz", gpus=[6, 4])
    check_against_truth(arrays, sim, gpus=[6, 4])
    assert sources["traces"][0]["gpus"] == [6, 4]
    with pytest.raises(InputError, match=r"power\.csv: has no GPU 0 \(it lists 4, 5, 6, 7.*--gpus"):
        prepare(runs, tmp_path / "default.npz")


# ---------------------------------------------------------------- folders

def test_other_json_is_skipped_and_appended_results_are_one_run_per_line(tmp_path):
    runs = folder(tmp_path)
    first = simulate(14, rate=math.inf, max_concurrency=3, jitter=0.0)
    second = simulate(15, rate=5.0)
    second.start += timedelta(minutes=3)
    lines = [json.dumps(vllm08_json(first, math.inf, 1.0, 3, tp=1) | {"tp": None, "tensor_parallel_size": "1"}),
             json.dumps(campaign_json(second, 5.0, 1.0, None, tp=1))]
    (runs / "appended.json").write_text("\n".join(lines) + "\n")
    (runs / "appended.pytorch.json").write_text(json.dumps([{"benchmark": {"name": "vLLM benchmark"},
                                                             "model": {"name": "m"}, "metric": {"name": "x"}}]))
    write_smi(runs / "first.csv", first, LAYOUTS["index first"])
    write_smi(runs / "second.csv", second, LAYOUTS["index first"])
    arrays, sources, said = prepare(runs, tmp_path / "out.npz")
    assert [t["benchmark"] for t in sources["traces"]] == ["appended.json:1", "appended.json:2"]
    assert [t["power_log"] for t in sources["traces"]] == ["first.csv", "second.csv"]
    assert sources["unmatched"] == ["appended.pytorch.json"]
    assert "unmatched: appended.pytorch.json: not a benchmark result" in said
    check_against_truth(arrays, first, gpus=[0], row=0, placed_exactly=False)
    check_against_truth(arrays, second, gpus=[0], row=1)


@pytest.mark.parametrize("writer", [
    lambda sim: bench_serve_json(sim, 5.0, 1.0, None, tp=1, detailed=False),
    lambda sim: vllm08_json(sim, 5.0, 1.0, None, tp=1, detailed=False),
], ids=["vllm-bench-serve", "vllm-0.8"])
def test_missing_per_request_results_name_save_detailed(tmp_path, writer):
    runs = folder(tmp_path)
    sim = simulate(16, rate=5.0)
    (runs / "serve.json").write_text(json.dumps(writer(sim)))
    write_smi(runs / "power.csv", sim, LAYOUTS["index first"])
    with pytest.raises(InputError, match=r"serve\.json: key 'input_lens' is missing.*--save-detailed"):
        prepare(runs, tmp_path / "out.npz")


# ---------------------------------------------------------------- the command line

def _no_index_scattered(runs: Path, sim: SimRun) -> None:
    write_smi(runs / "power.csv", sim, SmiLayout("timestamp, power.draw [W]", "{t}, {w}",
                                                 offsets_ms=(0, 3, 41, 47, 90, 97, 130, 150)))


@pytest.mark.slow
@pytest.mark.parametrize("make, extra, fix", [
    (lambda r, s: (r / "b.json").write_text(json.dumps(bench_serve_json(s, 5.0, 1.0, None, 1, detailed=False))),
     (), "--save-detailed"),
    (lambda r, s: (r / "b.json").write_text(json.dumps(vllm05_json(s, 5.0, tp=1))), (), "--allow_rebuilt_arrivals"),
    (lambda r, s: (r / "b.json").write_text(json.dumps({k: v for k, v in vllm05_json(s, math.inf, 1).items()
                                                        if k != "tensor_parallel_size"})),
     (), "--metadata tensor_parallel_size=N"),
    (lambda r, s: _no_index_scattered(r, s) or (r / "b.json").write_text(json.dumps(campaign_json(s, 5.0, 1.0, None, 1))),
     (), "--num_gpus"),
    (lambda r, s: (r / "b.json").write_text(json.dumps(campaign_json(s, 5.0, 1.0, None, 2))),
     ("--gpus", "0,9"), "--gpus"),
], ids=["no-save-detailed", "random-arrivals", "no-tp", "rows-per-sample", "gpu-not-in-log"])
def test_each_refusal_is_one_line_naming_the_file_and_the_fix_with_exit_2_and_nothing_written(tmp_path, make,
                                                                                               extra, fix):
    runs = folder(tmp_path)
    sim = simulate(17, rate=5.0)
    write_smi(runs / "power.csv", sim, LAYOUTS["index first"])
    make(runs, sim)
    proc = run_main("-m", "model.prepare_data", "--runs", str(runs), "--model", "llama-3-8b", "--hardware", "h100",
                    "--out", str(tmp_path / "out" / "x.npz"), *extra)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert fix in proc.stderr and ("b.json" in proc.stderr or "power.csv" in proc.stderr)
    assert not files_under(tmp_path / "out")
