"""The serving model: hand-computed series, its fit on demo data, and bad input."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from model.data import Trace, Workload, load_power_file
from model.demo_data import write_demo_files
from model.generation.serving import (FIDELITY_KEYS, SERVING_SERIES, ServingModel, _stream, fit_no_queue_decode_s,
                                      fit_serving_model, measured_series, most_active, no_queue_series,
                                      prefill_counting_of, recorded_max_num_seqs, series_fidelity, server_record,
                                      serving_fidelity, simulate_trace, trace_requests)
from model.grid import BUILT_IN

BIN_S = 0.25


def series_of(model: ServingModel, arrivals, inputs, outputs, n_bins: int) -> dict[str, np.ndarray]:
    return model.simulate(np.asarray(arrivals, float), np.asarray(inputs, float), np.asarray(outputs, float),
                          n_bins, BIN_S)


def make_trace(model: ServingModel, arrivals, inputs, outputs, n_bins: int, index: int = 0) -> Trace:
    """A trace whose measured series are exactly what `model` simulates."""
    s = series_of(model, arrivals, inputs, outputs, n_bins)
    start = 1000.0
    workload = Workload(start + BIN_S * np.arange(n_bins), s["prefill_tokens"], s["decode_tokens"],
                        s["active_requests"], start + np.asarray(arrivals, float), np.asarray(inputs, float),
                        np.asarray(outputs, float))
    return Trace(index, 4, workload, np.zeros(n_bins))


def random_requests(rate: float, n_bins: int, seed: int):
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * n_bins * BIN_S)
    arrivals = np.sort(rng.uniform(0, n_bins * BIN_S, n))
    inputs = np.clip(rng.lognormal(np.log(220), 0.9, n), 4, 4096).round()
    outputs = np.clip(rng.lognormal(np.log(200), 0.8, n), 1, 4096).round()
    return arrivals, inputs, outputs


# ---- hand-computed cases ----

def test_one_request_gives_the_hand_computed_series():
    # 100 prompt tokens per bin; a step of 0.05 s whatever the batch: 5 tokens per free bin
    model = ServingModel(prefill_tok_s=400.0, step_s=0.05, step_growth=0.0)
    s = series_of(model, [0.3], [150], [10], 6)
    # bin 1: 100 of 150 prompt tokens; bin 2: the last 50, which leave half the bin to decode
    # 2.5 tokens; bin 3: 5 more (7.5); bin 4: 12.5 >= 10, done
    np.testing.assert_array_equal(s["prefill_tokens"], [0, 100, 50, 0, 0, 0])
    np.testing.assert_array_equal(s["active_requests"], [0, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(s["decode_tokens"], [0, 0, 10, 10, 10, 0])
    assert all(s[name].dtype == np.float64 and s[name].shape == (6,) for name in SERVING_SERIES)


def test_pending_counting_holds_the_whole_prompt_from_arrival_to_first_token():
    model = ServingModel(400.0, 0.05, 0.0, prefill_counting="pending")
    s = series_of(model, [0.3], [150], [10], 6)
    np.testing.assert_array_equal(s["prefill_tokens"], [0, 150, 150, 0, 0, 0])
    np.testing.assert_array_equal(s["active_requests"], [0, 1, 1, 1, 1, 0])


def test_a_request_arriving_after_the_end_is_ignored():
    model = ServingModel(400.0, 0.05, 0.0)
    alone = series_of(model, [0.3], [150], [10], 6)
    with_late = series_of(model, [0.3, 1.5, 9.0], [150, 500, 500], [10, 50, 50], 6)   # 6 bins end at 1.5 s
    for name in SERVING_SERIES:
        np.testing.assert_array_equal(with_late[name], alone[name])


def test_a_full_batch_makes_the_next_request_wait_for_a_free_place():
    # 1000 prompt tokens per bin, 5 tokens per free bin, at most one request in progress
    model = ServingModel(4000.0, 0.05, 0.0, max_batch=1)
    s = series_of(model, [0.0, 0.0], [100, 100], [10, 10], 7)
    # the first is prefilled in bin 0 (4.5 tokens in the 90 % left), finishes in bin 2 at 14.5;
    # only then is the second admitted: prefilled in bin 3, done in bin 5
    np.testing.assert_array_equal(s["prefill_tokens"], [100, 0, 0, 100, 0, 0, 0])
    np.testing.assert_array_equal(s["active_requests"], [2, 2, 2, 1, 1, 1, 0])
    np.testing.assert_array_equal(s["decode_tokens"], [10, 10, 10, 10, 10, 10, 0])
    uncapped = series_of(ServingModel(4000.0, 0.05, 0.0), [0.0, 0.0], [100, 100], [10, 10], 7)
    np.testing.assert_array_equal(uncapped["active_requests"], [2, 2, 2, 0, 0, 0, 0])


def test_a_bigger_batch_slows_every_request_down():
    arrivals, outputs = np.zeros(8), np.full(8, 40.0)
    flat = series_of(ServingModel(1e6, 0.02, 0.0), arrivals, np.full(8, 10.0), outputs, 40)
    growing = series_of(ServingModel(1e6, 0.02, 0.25), arrivals, np.full(8, 10.0), outputs, 40)
    assert growing["active_requests"].sum() > 2 * flat["active_requests"].sum()


def test_processed_prefill_tokens_sum_to_the_prompts_prefilled_within_the_window():
    model = ServingModel(800.0, 0.05, 0.01)         # 200 prompt tokens a bin: overloaded at 4 req/s
    arrivals, inputs, outputs = random_requests(4.0, 200, seed=3)
    arrivals = np.append(arrivals, [60.0])          # after the end: never prefilled
    inputs, outputs = np.append(inputs, [999.0]), np.append(outputs, [5.0])
    stream = _stream(arrivals, inputs, outputs, 200, BIN_S)
    join_bin, _, processed = model._serve(stream)
    completed = float(stream.input_tokens[join_bin < 200].sum())
    in_progress = stream.input_tokens[join_bin == 200]
    assert len(in_progress) > 0                     # the case exercises an unfinished queue
    assert completed <= processed.sum() < completed + in_progress[0]
    s = model.simulate(arrivals, inputs, outputs, 200, BIN_S)
    np.testing.assert_array_equal(s["prefill_tokens"], processed)
    # a queue that drains by the end: every prompt that arrived in time is counted exactly once
    drained = model.simulate(arrivals[:50], inputs[:50], outputs[:50], 200, BIN_S)
    assert drained["prefill_tokens"].sum() == pytest.approx(inputs[:50].sum(), rel=1e-12)


def test_unsorted_arrivals_are_served_in_arrival_order():
    model = ServingModel(400.0, 0.05, 0.01)
    arrivals, inputs, outputs = random_requests(2.0, 80, seed=1)
    order = np.random.default_rng(0).permutation(len(arrivals))
    a = model.simulate(arrivals, inputs, outputs, 80)
    b = model.simulate(arrivals[order], inputs[order], outputs[order], 80)
    for name in SERVING_SERIES:
        np.testing.assert_array_equal(a[name], b[name])


def test_no_requests_and_no_bins_give_zero_and_empty_series():
    model = ServingModel(400.0, 0.05, 0.01)
    empty = series_of(model, [], [], [], 5)
    assert all(np.array_equal(empty[name], np.zeros(5)) for name in SERVING_SERIES)
    assert all(series_of(model, [0.1], [10], [10], 0)[name].shape == (0,) for name in SERVING_SERIES)


def test_no_queue_baseline_prefills_on_arrival_and_decodes_for_a_fixed_time():
    s = no_queue_series(np.array([0.3, 0.4]), np.array([150.0, 50.0]), np.array([10.0, 20.0]), 6, decode_s=0.5)
    np.testing.assert_array_equal(s["prefill_tokens"], [0, 200, 0, 0, 0, 0])
    np.testing.assert_array_equal(s["active_requests"], [0, 2, 2, 2, 0, 0])   # 0.3-0.8 s and 0.4-0.9 s
    np.testing.assert_array_equal(s["decode_tokens"], [0, 30, 30, 30, 0, 0])


# ---- the parameters as a dict ----

def test_to_dict_round_trips_with_plain_python_values(tmp_path):
    model = ServingModel(4547.5, 0.0606, 0.0156, max_batch=48, prefill_counting="pending")
    d = model.to_dict()
    assert all(type(v) in (str, int, float) for v in d.values())
    assert ServingModel.from_dict(d) == model
    torch.save({"serving_model": d}, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=True)["serving_model"]
    assert ServingModel.from_dict(loaded) == model


def test_from_dict_rejects_bad_dicts():
    good = ServingModel(4547.5, 0.0606, 0.0156).to_dict()
    with pytest.raises(KeyError):
        ServingModel.from_dict({k: v for k, v in good.items() if k != "step_s"})
    for key, value in (("step_s", -1.0), ("prefill_tok_s", float("nan")), ("step_s", "fast"),
                       ("max_batch", 2.5), ("max_batch", -1), ("prefill_counting", "both")):
        with pytest.raises(ValueError):
            ServingModel.from_dict(good | {key: value})
    with pytest.raises(ValueError):
        ServingModel.from_dict(good | {"warp_speed": 9.0})
    with pytest.raises(ValueError):
        ServingModel.from_dict([("step_s", 1.0)])


# ---- bad input ----

@pytest.mark.parametrize("arrivals, inputs, outputs", [
    ([0.1, float("nan")], [10, 10], [10, 10]),
    ([0.1, float("inf")], [10, 10], [10, 10]),
    ([0.1, 0.2], [10, -1], [10, 10]),
    ([0.1, 0.2], [10, 10], [-5, 10]),
    ([0.1, 0.2], [10, float("nan")], [10, 10]),
    ([0.1, 0.2], [10], [10, 10]),
])
def test_simulate_rejects_bad_requests(arrivals, inputs, outputs):
    with pytest.raises(ValueError):
        ServingModel(400.0, 0.05, 0.01).simulate(np.asarray(arrivals, float), np.asarray(inputs, float),
                                                 np.asarray(outputs, float), 10)


@pytest.mark.parametrize("n_bins, bin_s", [(-1, 0.25), (2.5, 0.25), (10, 0.0), (10, float("nan"))])
def test_simulate_rejects_a_bad_window(n_bins, bin_s):
    with pytest.raises(ValueError):
        ServingModel(400.0, 0.05, 0.01).simulate(np.array([0.1]), np.array([10.0]), np.array([10.0]), n_bins, bin_s)


# ---- a day of traffic (its speed is measured by `python -m model.generate`, not asserted) ----

def test_a_day_at_four_requests_per_second_fills_every_bin():
    arrivals, inputs, outputs = random_requests(4.0, 345_600, seed=0)
    model = ServingModel(22_800.0, 0.0126, 0.0156)        # an 8B-sized server that keeps up
    s = model.simulate(arrivals, inputs, outputs, 345_600)
    assert s["active_requests"].shape == (345_600,) and s["active_requests"].max() > 0
    assert s["prefill_tokens"].sum() == pytest.approx(inputs.sum(), rel=1e-3)


# ---- fitted on demo data ----

@pytest.fixture(scope="module")
def demo_fit(tmp_path_factory):
    """One TP of the 70B A100 demo file: trained on every trace but the highest-rate ones."""
    out = tmp_path_factory.mktemp("serving_demo")
    path = write_demo_files(BUILT_IN, out, seed=0, scale="demo", models=["llama-3-70b"], hardware=["a100"])[0]
    with np.load(path, allow_pickle=False) as npz:
        rates = npz["poisson_rate"]
    data = load_power_file(path)
    traces = data.traces_for_tp(data.tp_values[0])
    top = max(rates[t.index] for t in traces)
    train = [t for t in traces if rates[t.index] < top]
    held_out = [t for t in traces if rates[t.index] == top]
    return train, held_out, fit_serving_model(train, BIN_S)


def test_fitted_model_reproduces_the_highest_rate_better_than_no_queue(demo_fit):
    train, held_out, model = demo_fit
    ours = serving_fidelity(model, held_out)
    decode_s = fit_no_queue_decode_s(train)
    baseline = series_fidelity([no_queue_series(*trace_requests(t), len(t), decode_s) for t in held_out],
                               [measured_series(t) for t in held_out])
    print("held-out, highest rate: ours", ours, "no queue", baseline)
    assert ours["serving_active_r"] > baseline["serving_active_r"]
    assert abs(ours["serving_active_mean_err_pct"]) < abs(baseline["serving_active_mean_err_pct"])
    assert abs(ours["serving_decode_mean_err_pct"]) < abs(baseline["serving_decode_mean_err_pct"])
    # and close in absolute terms: the demo server is a continuous-batching one
    assert ours["serving_active_r"] > 0.95 and abs(ours["serving_active_mean_err_pct"]) < 10
    assert ours["serving_decode_r"] > 0.95 and ours["serving_prefill_r"] > 0.9


def test_fit_reads_the_demo_prefill_counting(demo_fit):
    train, held_out, model = demo_fit
    assert model.prefill_counting == "processed"
    # the file rounds each bin to whole tokens, which can push the sum past the prompts' total
    assert prefill_counting_of(train + held_out) == "processed"


def test_fitted_parameters_are_deterministic(demo_fit):
    train, _, model = demo_fit
    assert fit_serving_model(train, BIN_S).to_dict() == model.to_dict()


def test_fidelity_is_worse_for_a_worse_model(demo_fit):
    _, held_out, model = demo_fit
    good = serving_fidelity(model, held_out)
    assert set(good) == set(FIDELITY_KEYS)
    slow_prefill = ServingModel.from_dict(model.to_dict() | {"prefill_tok_s": model.prefill_tok_s / 10})
    slow_decode = ServingModel.from_dict(model.to_dict() | {"step_s": model.step_s * 10})
    for worse in (serving_fidelity(slow_prefill, held_out), serving_fidelity(slow_decode, held_out)):
        assert worse["serving_active_r"] < good["serving_active_r"]
        assert abs(worse["serving_active_mean_err_pct"]) > abs(good["serving_active_mean_err_pct"])
    assert serving_fidelity(slow_prefill, held_out)["serving_prefill_r"] < good["serving_prefill_r"]


def test_fit_recovers_a_batch_cap_and_pending_counting():
    truth = ServingModel(4500.0, 0.06, 0.016, max_batch=16, prefill_counting="pending")
    train = [make_trace(truth, *random_requests(rate, 300, seed=i), 300, index=i)
             for i, rate in enumerate([0.25, 0.5, 1.0, 2.0, 4.0, 1.0])]
    assert prefill_counting_of(train) == "pending"
    model = fit_serving_model(train, BIN_S)
    assert model.prefill_counting == "pending" and 8 <= model.max_batch <= 32
    held_out = [make_trace(truth, *random_requests(4.0, 300, seed=99), 300)]
    scores = serving_fidelity(model, held_out)
    assert scores["serving_active_r"] > 0.98 and abs(scores["serving_active_mean_err_pct"]) < 5


def test_prefill_counting_is_read_from_the_data_despite_whole_token_rounding():
    requests = [a[:50] for a in random_requests(4.0, 200, seed=3)]      # a queue that drains
    # 202.5 prompt tokens a bin: a prompt split across bins leaves halves, rounded up
    processed = make_trace(ServingModel(810.0, 0.05, 0.01), *requests, 200)
    processed.workload.prefill_tokens = np.floor(processed.prefill_tokens + 0.5)
    assert processed.prefill_tokens.sum() > requests[1].sum()
    assert prefill_counting_of([processed]) == "processed"
    pending = make_trace(ServingModel(810.0, 0.05, 0.01, prefill_counting="pending"), *requests, 200)
    assert prefill_counting_of([pending]) == "pending"


# ---- fidelity edge cases ----

def test_fidelity_is_nan_for_constant_or_zero_series():
    model = ServingModel(400.0, 0.05, 0.01)
    n = 8
    quiet = Trace(0, 4, Workload(BIN_S * np.arange(n), np.zeros(n), np.zeros(n), np.zeros(n),
                                 np.zeros(0), np.zeros(0), np.zeros(0)), np.zeros(n))
    scores = serving_fidelity(model, [quiet])
    assert all(np.isnan(v) for v in scores.values())
    one = make_trace(model, [0.3], [150], [10], n)
    scores = serving_fidelity(model, [one])
    assert scores["serving_active_r"] == pytest.approx(1.0) and scores["serving_active_mean_err_pct"] == 0.0
    assert simulate_trace(model, one)["active_requests"].sum() == one.active_requests.sum()


# ---- the batch cap against the server's recorded max_num_seqs ----

def light_traffic(max_num_seqs: int = 0) -> list[Trace]:
    """Traffic that never has more than a few requests active, from a server whose recorded
    max_num_seqs (0: not recorded) lies far above that."""
    truth = ServingModel(4500.0, 0.06, 0.016)
    train = [make_trace(truth, *random_requests(rate, 200, seed=i), 200, index=i) for i, rate in enumerate([0.5, 1.0])]
    for trace in train:
        trace.server = {"max_num_seqs": max_num_seqs} if max_num_seqs else {}
    return train


def test_the_batch_cap_is_the_servers_max_num_seqs_where_the_data_record_it():
    """A cap fitted to light traffic would say "the most ever active"; the server allowed 256."""
    train = light_traffic(max_num_seqs=256)
    assert most_active(train) < 64
    model = fit_serving_model(train, BIN_S)
    assert model.max_batch == 256
    record = server_record(train, model)
    assert record["batch_cap"] == {"max_batch": 256, "source": "the server's max_num_seqs", "max_num_seqs": 256,
                                   "most_active_measured": most_active(train)}
    assert record["settings"] == {"max_num_seqs": 256}


def test_without_max_num_seqs_the_fitted_cap_is_recorded_with_its_evidence():
    truth = ServingModel(4500.0, 0.06, 0.016, max_batch=16, prefill_counting="pending")
    train = [make_trace(truth, *random_requests(rate, 300, seed=i), 300, index=i)
             for i, rate in enumerate([0.25, 1.0, 4.0])]
    busiest = most_active(train)
    fitted = server_record(train, ServingModel(4500.0, 0.06, 0.016, max_batch=16))["batch_cap"]
    assert fitted["max_num_seqs"] == 0 and fitted["max_batch"] == 16 and fitted["most_active_measured"] == busiest
    assert fitted["source"] == (f"fitted: no max_num_seqs recorded; a cap of 16 explains the training traces, "
                                f"which had at most {busiest:g} requests active")
    uncapped = server_record(train, ServingModel(4500.0, 0.06, 0.016))["batch_cap"]
    assert uncapped["max_batch"] == 0 and uncapped["source"].startswith("none: no max_num_seqs recorded")
    assert f"at most {busiest:g} requests active" in uncapped["source"]


def test_differing_recorded_max_num_seqs_give_the_largest_and_list_both():
    train = light_traffic(max_num_seqs=64)
    train[1].server = {"max_num_seqs": 128}
    assert recorded_max_num_seqs(train) == 128
    model = ServingModel(4500.0, 0.06, 0.016, max_batch=128)
    assert server_record(train, model)["settings"] == {"max_num_seqs": [64, 128]}


def test_a_prefix_cache_clash_needs_both_sides_to_record_the_setting():
    from model.generation.serving import prefix_caching_clash
    idle = Workload(BIN_S * np.arange(4), np.zeros(4), np.zeros(4), np.zeros(4), np.zeros(0), np.zeros(0),
                    np.zeros(0))
    on, off, unknown = (Trace(i, 1, idle, np.ones(4), server=s)
                        for i, s in enumerate(({"prefix_caching": True}, {"prefix_caching": False}, {})))
    assert prefix_caching_clash({"prefix_caching": True}, [on, unknown]) is None
    assert "trace 1 ran with vLLM's prefix cache off" in prefix_caching_clash({"prefix_caching": True}, [on, off])
    assert prefix_caching_clash({}, [off]) is None                            # the checkpoint does not say
    assert prefix_caching_clash({"prefix_caching": [False, True]}, [off]) is None     # nor does a mixed one
