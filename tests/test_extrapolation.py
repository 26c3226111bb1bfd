"""model/generation/extrapolation.py: when generation is guessing, by hand."""
from __future__ import annotations

import numpy as np
import pytest

from model.data import Workload
from model.errors import InputError
from model.features import raw_features
from model.generation import extrapolation as ex
from model.generation.serving import ServingModel


def features(arrivals, prompts, outputs, active) -> np.ndarray:
    """(T, 6) raw features with the four columns the check reads (prefill and decode unused)."""
    cols = [np.asarray(c, dtype=np.float64) for c in (arrivals, prompts, outputs, active)]
    return np.stack(cols + [np.zeros(len(cols[0]))] * 2, axis=1)


def test_window_rates_are_centred_window_sums_per_second_held_at_the_ends():
    # 0.5 s bins, 2-bin windows: window sums 4, 4, 0, 2, 2 over 1 s; bin t takes the window
    # starting at t - 1 (clipped to 0..4)
    rates = ex.window_rates(np.array([0, 4, 0, 0, 2, 0]), bin_s=0.5, window_bins=2)
    assert rates.tolist() == [4.0, 4.0, 4.0, 0.0, 2.0, 2.0]


def test_a_trace_shorter_than_the_window_has_its_mean_rate_everywhere():
    assert ex.window_rates(np.array([1, 2, 3]), bin_s=1.0, window_bins=10).tolist() == [2.0, 2.0, 2.0]
    assert ex.window_rates(np.array([]), bin_s=1.0, window_bins=10).tolist() == []


def test_training_ranges_by_hand():
    # 1 s bins, 2 s windows. Trace a: arrivals 2, 0, 2, 0 -> rates 1, 1, 1, 1 (windows 1, 1, 1);
    # trace b: 0, 0, 6 -> windows 0, 3 -> rates 0, 0, 3. Prompt tokens 10 per request.
    a = features([2, 0, 2, 0], [20, 0, 20, 0], [4, 0, 4, 0], [2, 1, 3, 1])
    b = features([0, 0, 6], [0, 0, 60], [0, 0, 12], [0, 0, 6])
    ranges = ex.training_ranges([a, b], bin_s=1.0, window_s=2.0)
    assert ranges["window_s"] == 2.0 and ranges["bins"] == 7
    assert ranges["arrival_rate_per_s"] == {"low": 0.0, "high": 3.0, "mean": 10 / 7}
    assert ranges["prompt_tokens_per_s"] == {"low": 0.0, "high": 30.0, "mean": 100 / 7}
    assert ranges["output_tokens_per_s"]["high"] == 6.0
    assert ranges["active_requests"] == {"low": 0.0, "high": 6.0, "mean": 13 / 7}


RANGES = {"window_s": 2.0, "bin_s": 1.0, "bins": 100,
          "arrival_rate_per_s": {"low": 1.0, "high": 3.0, "mean": 2.0},
          "prompt_tokens_per_s": {"low": 0.0, "high": 30.0, "mean": 20.0},
          "output_tokens_per_s": {"low": 0.0, "high": 6.0, "mean": 4.0},
          "active_requests": {"low": 0.0, "high": 4.0, "mean": 2.0}}


def test_a_check_counts_the_bins_outside_each_range_by_hand():
    # 1 s bins, 2 s windows: arrivals 2, 2, 8, 0, 0 -> window rates 2, 5, 4, 0 -> per bin 2, 2, 5,
    # 4, 0 (bin t takes the window starting at t - 1): bins 2 and 3 above 3/s, bin 4 below 1/s.
    # Prompts 10 each: 20, 20, 50, 40, 0 -> bins 2, 3 above 30. Outputs 1 each: 2, 2, 5, 4, 0,
    # none above 6. Active 1, 5, 4, 9, 0 against a maximum of 4: bins 1 and 3.
    check = ex.traffic_check(features([2, 2, 8, 0, 0], [20, 20, 80, 0, 0], [2, 2, 8, 0, 0], [1, 5, 4, 9, 0]),
                             1.0, RANGES, requests=12, unfinished=3, max_batch=4)
    assert check["bins_outside"] == {"arrival_rate_per_s": 3, "prompt_tokens_per_s": 2, "output_tokens_per_s": 0,
                                     "active_requests": 2, "any": 4}
    assert check["bins_at_batch_cap"] == 3            # bins 1, 2, 3 hold at least 4 active requests
    summary = ex.summarize(check, RANGES)
    assert summary["share_outside"] == 4 / 5
    assert summary["share_outside_by_quantity"]["arrival_rate_per_s"] == 3 / 5
    assert summary["mean"]["arrival_rate_per_s"] == 12 / 5
    assert summary["mean_vs_training_mean"]["prompt_tokens_per_s"] == pytest.approx(24 / 20)
    assert summary["peak_vs_training_max"]["arrival_rate_per_s"] == pytest.approx(5 / 3)
    assert summary["share_unfinished"] == 3 / 12 and summary["share_at_batch_cap"] == 3 / 5


def test_traffic_inside_the_range_is_no_notice():
    check = ex.traffic_check(features([2, 2, 4, 2], [20, 20, 40, 20], [4, 4, 8, 4], [1, 2, 4, 2]),
                             1.0, RANGES, requests=10, unfinished=0)
    summary = ex.summarize(check, RANGES)
    assert summary["share_outside"] == 0 and ex.traffic_notices(summary) == []


def test_checks_pool_by_adding_counts():
    one = ex.traffic_check(features([2, 2, 8, 0, 0], [20] * 5, [2] * 5, [1, 5, 4, 9, 0]), 1.0, RANGES, 12, 3, 4)
    two = ex.traffic_check(features([2, 2, 4, 2], [20] * 4, [4] * 4, [1, 2, 4, 2]), 1.0, RANGES, 10, 0, 4)
    both = ex.pooled([one, two])
    assert both["bins"] == 9 and both["requests"] == 22 and both["unfinished_requests"] == 3
    assert both["bins_outside"]["any"] == one["bins_outside"]["any"] + two["bins_outside"]["any"]
    assert both["bins_at_batch_cap"] == 3 + 1 and both["peaks"]["active_requests"] == 9


def _served_share(rate: float, ranges: dict, seed: int = 0) -> float:
    """Poisson requests at `rate` for 10 minutes through a serving model, checked against `ranges`."""
    rng = np.random.default_rng(seed)
    n_bins, bin_s = 2400, 0.25
    arrivals = np.sort(rng.uniform(0, n_bins * bin_s, rng.poisson(rate * n_bins * bin_s)))
    inputs, outputs = rng.integers(50, 150, len(arrivals)), rng.integers(20, 80, len(arrivals))
    series, n, unfinished = ServingModel(5000.0, 0.02, 0.02).serve(arrivals, inputs, outputs, n_bins, bin_s)
    workload = Workload(np.arange(n_bins) * bin_s, series["prefill_tokens"], series["decode_tokens"],
                        series["active_requests"], arrivals, inputs.astype(float), outputs.astype(float))
    return ex.summarize(ex.traffic_check(raw_features(workload), bin_s, ranges, n, unfinished), ranges)["share_outside"]


def test_traffic_far_outside_the_training_range_has_a_larger_share_outside():
    # trained on 1 request/s; generated at 1, 2 and 8 requests/s
    rng = np.random.default_rng(1)
    n_bins, bin_s = 2400, 0.25
    arrivals = np.sort(rng.uniform(0, n_bins * bin_s, int(n_bins * bin_s)))        # 1 request/s
    inputs, outputs = rng.integers(50, 150, len(arrivals)), rng.integers(20, 80, len(arrivals))
    series = ServingModel(5000.0, 0.02, 0.02).simulate(arrivals, inputs, outputs, n_bins, bin_s)
    trained = Workload(np.arange(n_bins) * bin_s, series["prefill_tokens"], series["decode_tokens"],
                       series["active_requests"], arrivals, inputs.astype(float), outputs.astype(float))
    ranges = ex.training_ranges([raw_features(trained)], bin_s)
    same, double, far = (_served_share(rate, ranges) for rate in (1.0, 2.0, 8.0))
    assert same < ex.RANGE_NOTICE_SHARE < double < far and far > 0.9


def test_notices_say_the_shares_in_one_line_each():
    check = ex.traffic_check(features([2, 2, 8, 0, 0], [20, 20, 80, 0, 0], [2, 2, 8, 0, 0], [1, 5, 4, 9, 0]),
                             1.0, RANGES, requests=12, unfinished=3, max_batch=4)
    notices = ex.traffic_notices(ex.summarize(check, RANGES), "m_h_tp1")
    assert len(notices) == 3 and all("\n" not in n and n.startswith("m_h_tp1: ") for n in notices)
    assert "outside what the checkpoint trained on in 80.0 % of bins" in notices[0]
    assert "arrival rate 60.0 %" in notices[0] and "1.2x the trained arrival rate" in notices[0]
    assert "3 of 12 requests (25.0 %) are unfinished" in notices[1]
    assert "batch cap of 4 requests" in notices[2] and "60.0 % of bins" in notices[2]


def test_a_batch_cap_full_in_a_few_bins_only_is_no_notice():
    # 1 bin of 40 at the cap: 2.5 %, under CAP_NOTICE_SHARE
    active = [1.0] * 39 + [4.0]
    check = ex.traffic_check(features([2] * 40, [20] * 40, [4] * 40, active), 1.0, RANGES, 80, 0, max_batch=4)
    assert ex.summarize(check, RANGES)["share_at_batch_cap"] == 1 / 40
    assert ex.traffic_notices(ex.summarize(check, RANGES)) == []


def test_strict_turns_a_notice_into_one_input_error_and_otherwise_prints_it(capsys):
    with pytest.raises(InputError, match=r"^--strict: first \(and 1 more notice\(s\)\)$"):
        ex.report(["first", "second"], strict=True)
    ex.report([], strict=True)
    ex.report(["first"], strict=False)
    assert capsys.readouterr().err == "notice: first\n"


def test_poor_validation_scores_are_a_warning_with_the_numbers():
    [line] = ex.fidelity_warnings("m_h_tp1", {"energy_error_pct": 10.6, "autocorr_r2": 0.44})
    assert line.startswith("m_h_tp1: poor validation scores") and "energy_error_pct 10.6 > 5" in line
    assert "autocorr_r2 0.44 < 0.5" in line
    assert ex.fidelity_warnings("m_h_tp1", {"energy_error_pct": 1.0, "autocorr_r2": 0.9}) == []
    [only_acf] = ex.fidelity_warnings("m_h_tp1", {"energy_error_pct": 4.9, "autocorr_r2": 0.3})
    assert "energy" not in only_acf and "autocorr_r2 0.3" in only_acf
    [unknown] = ex.fidelity_warnings("m_h_tp1", {"energy_error_pct": float("nan")})
    assert "records no energy_error_pct or autocorr_r2" in unknown


def test_the_serving_model_counts_requests_unfinished_at_the_end_by_hand():
    # 10 decode tokens/s (0.1 s steps), prefill at once; 0.25 s bins, 8 of them (2 s). Request 0
    # (1 output token) finishes in bin 0; request 1 (100 tokens, 10 s) is still decoding at 2 s;
    # request 2 arrives at 5 s, after the window: neither counted nor unfinished.
    series, n, unfinished = ServingModel(1e6, 0.1, 0.0).serve(np.array([0.0, 0.0, 5.0]), np.array([1.0, 1.0, 1.0]),
                                                              np.array([1.0, 100.0, 1.0]), 8, 0.25)
    assert (n, unfinished) == (2, 1)
    assert series["active_requests"].tolist() == [2.0] + [1.0] * 7
