"""When generation is guessing: traffic outside what the checkpoint trained on, requests left
unfinished, a serving model held at its batch cap, a configuration with poor validation scores.

    ranges = training_ranges([raw_features(t.workload) for t in train], bin_s)   # the job, into the checkpoint
    check = traffic_check(raw_features(workload), bin_s, ranges, requests=R, unfinished=U, max_batch=cap)
    summary = summarize(pooled(checks), ranges)      # shares and ratios, for the output JSON / manifest
    for line in traffic_notices(summary): print(f"notice: {line}")
    fidelity_warnings(job, ckpt.metrics)             # poor validation scores (the site command)

A classifier and a serving model fitted on some traffic say nothing reliable about other
traffic: on the real A100 runs, the Azure conv trace carried several times the trained prompt
load and the fitted serving model left nearly half its requests unfinished, while the output
looked plausible. So every generating command compares its traffic with the training traffic
and says so in one line.

The quantities, per bin, from the classifier's own raw features (features.raw_features):
arrivals, their prompt and output tokens, each as a rate per second over a window of WINDOW_S
centred on the bin (a 0.25 s bin holds zero or one arrival: only a window has a rate), and the
active requests of the bin itself. The training range is each quantity's lowest and highest
value over the training traces' bins, the rates measured with the same window; a generated bin
is outside when any of its quantities lies outside (active requests: above the training
maximum). Counts add up, so nodes and traces pool (pooled) before the shares are taken.

Pure functions of numpy arrays and plain dicts; no torch, so reporting commands load nothing.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from model.errors import InputError

WINDOW_S = 10.0       # the window a rate is measured over (0.25 s bins; about 25 arrivals at 2.5/s)
RATES = ("arrival_rate_per_s", "prompt_tokens_per_s", "output_tokens_per_s")   # raw feature columns 0-2
ACTIVE = "active_requests"                                                     # raw feature column 3
QUANTITIES = RATES + (ACTIVE,)
LABELS = {"arrival_rate_per_s": "arrival rate", "prompt_tokens_per_s": "prompt tokens/s",
          "output_tokens_per_s": "output tokens/s", ACTIVE: "active requests"}
# when a share is worth a notice: a Poisson stream at a trained rate pokes out of the training
# maximum now and then (1.4 % of bins in tests/test_extrapolation.py), and a trace cut off
# without drain leaves its last requests unfinished
RANGE_NOTICE_SHARE = 0.05       # of bins outside the training range
UNFINISHED_NOTICE_SHARE = 0.01  # of requests unfinished at the end
CAP_NOTICE_SHARE = 0.05         # of bins at the serving model's batch cap ("more than a few percent")
# validation scores below which a configuration's generated watts are flagged (issue 25: sites)
FIDELITY_LIMITS = {"energy_error_pct": ("above", 5.0), "autocorr_r2": ("below", 0.5)}
# a value counts as outside only beyond this relative slack: float sums must not flag a bin
_SLACK = 1e-9


def window_rates(per_bin: np.ndarray, bin_s: float, window_bins: int) -> np.ndarray:
    """Per bin, the sum of `per_bin` per second over the min(window_bins, T) consecutive bins
    centred on it; bins within half a window of either end take the first or last whole window,
    so every value is a mean over the same number of bins (a trace shorter than the window: its
    mean, everywhere)."""
    values = np.asarray(per_bin, dtype=np.float64)
    n = len(values)
    if n == 0:
        return np.zeros(0)
    w = max(1, min(int(window_bins), n))
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    means = (cumulative[w:] - cumulative[:-w]) / (w * bin_s)          # n - w + 1 windows
    return means[np.clip(np.arange(n) - w // 2, 0, n - w)]


def traffic_series(features: np.ndarray, bin_s: float, window_s: float = WINDOW_S) -> dict[str, np.ndarray]:
    """The QUANTITIES per bin of one trace's (T, 6) raw features (before log1p)."""
    features = np.asarray(features, dtype=np.float64)
    window_bins = max(1, int(round(window_s / bin_s)))
    return {name: window_rates(features[:, i], bin_s, window_bins) for i, name in enumerate(RATES)} \
        | {ACTIVE: features[:, 3]}


def _means(features: list[np.ndarray], bin_s: float) -> dict[str, float]:
    """Mean of each quantity over all bins: rates as totals over the seconds, active requests per bin."""
    stacked = np.concatenate([np.asarray(f, dtype=np.float64)[:, :4] for f in features])
    if not len(stacked):
        return {name: 0.0 for name in QUANTITIES}
    per_bin = stacked.mean(axis=0)
    return {name: float(per_bin[i] / bin_s) for i, name in enumerate(RATES)} | {ACTIVE: float(per_bin[3])}


def training_ranges(features: list[np.ndarray], bin_s: float, window_s: float = WINDOW_S) -> dict:
    """What the training traces' traffic covered (their raw features): per quantity the lowest,
    highest and mean value over their bins, and the window and bin width they were measured
    with. Recorded in the checkpoint by the job; plain floats, for a weights-only load."""
    series = [traffic_series(f, bin_s, window_s) for f in features]
    means = _means(features, bin_s)
    ranges: dict = {"window_s": float(window_s), "bin_s": float(bin_s), "bins": int(sum(len(f) for f in features))}
    for name in QUANTITIES:
        values = np.concatenate([s[name] for s in series]) if series else np.zeros(0)
        ranges[name] = {"low": float(values.min()) if len(values) else 0.0,
                        "high": float(values.max()) if len(values) else 0.0, "mean": means[name]}
    return ranges


def _outside(values: np.ndarray, low: float | None, high: float) -> np.ndarray:
    below = values < low - _SLACK * max(1.0, abs(low)) if low is not None else np.zeros(len(values), bool)
    return below | (values > high + _SLACK * max(1.0, abs(high)))


def traffic_check(features: np.ndarray, bin_s: float, ranges: dict, requests: int, unfinished: int,
                  max_batch: int = 0) -> dict:
    """One trace's traffic against the training `ranges`, as counts that pool over traces and
    nodes: bins outside per quantity and in any, per-quantity sums and peaks, the requests that
    arrived within the trace and those unfinished at its end, and with a batch cap (`max_batch`
    > 0) the bins in which at least that many requests are active, i.e. the serving model's
    batch is full (requests arrived and not finished before the bin are exactly those it holds
    or queues: model/generation/serving.py)."""
    series = traffic_series(features, bin_s, ranges["window_s"])
    masks = {name: _outside(series[name], ranges[name]["low"] if name != ACTIVE else None, ranges[name]["high"])
             for name in QUANTITIES}
    n = len(series[ACTIVE])
    any_outside = np.zeros(n, dtype=bool)
    for mask in masks.values():
        any_outside |= mask
    features = np.asarray(features, dtype=np.float64)
    sums = features[:, :4].sum(axis=0) if n else np.zeros(4)
    return {"bins": n, "bin_s": float(bin_s),
            "bins_outside": {name: int(mask.sum()) for name, mask in masks.items()} | {"any": int(any_outside.sum())},
            "sums": {name: float(sums[i]) for i, name in enumerate(QUANTITIES)},
            "peaks": {name: float(series[name].max()) if n else 0.0 for name in QUANTITIES},
            "requests": int(requests), "unfinished_requests": int(unfinished), "max_batch": int(max_batch),
            "bins_at_batch_cap": int((series[ACTIVE] >= max_batch).sum()) if max_batch > 0 else 0}


def pooled(checks: list[dict]) -> dict:
    """Several traces' or nodes' checks of one configuration as one: counts and sums added,
    peaks the highest (all checks share the bin width and batch cap)."""
    if not checks:
        raise ValueError("pooling needs at least one traffic check")
    first = checks[0]
    return {"bins": sum(c["bins"] for c in checks), "bin_s": first["bin_s"],
            "bins_outside": {k: sum(c["bins_outside"][k] for c in checks) for k in first["bins_outside"]},
            "sums": {k: sum(c["sums"][k] for c in checks) for k in QUANTITIES},
            "peaks": {k: max(c["peaks"][k] for c in checks) for k in QUANTITIES},
            "requests": sum(c["requests"] for c in checks),
            "unfinished_requests": sum(c["unfinished_requests"] for c in checks),
            "max_batch": max(c["max_batch"] for c in checks),
            "bins_at_batch_cap": sum(c["bins_at_batch_cap"] for c in checks)}


def _ratio(a: float, b: float) -> float | None:
    """a / b, None where undefined (JSON holds no infinity)."""
    return a / b if b > 0 and math.isfinite(a / b) else None


def summarize(check: dict, ranges: dict) -> dict:
    """A (pooled) check as shares and ratios against the training ranges, JSON-ready: the share
    of bins outside (any and per quantity), the traffic's mean and peak of each quantity over the
    training mean and maximum, the share of requests unfinished, the share of bins at the batch
    cap; with the counts and the training ranges for the record."""
    bins, bin_s = check["bins"], check["bin_s"]
    share = (lambda n: n / bins) if bins else (lambda n: 0.0)
    means = {name: check["sums"][name] / (bins * (bin_s if name in RATES else 1.0)) if bins else 0.0
             for name in QUANTITIES}
    return {"window_s": ranges["window_s"], "bins": bins,
            "share_outside": share(check["bins_outside"]["any"]),
            "share_outside_by_quantity": {name: share(check["bins_outside"][name]) for name in QUANTITIES},
            "mean": means,
            "mean_vs_training_mean": {name: _ratio(means[name], ranges[name]["mean"]) for name in QUANTITIES},
            "peak_vs_training_max": {name: _ratio(check["peaks"][name], ranges[name]["high"]) for name in QUANTITIES},
            "requests": check["requests"], "unfinished_requests": check["unfinished_requests"],
            "share_unfinished": check["unfinished_requests"] / check["requests"] if check["requests"] else 0.0,
            "max_batch": check["max_batch"], "share_at_batch_cap": share(check["bins_at_batch_cap"]),
            "training": ranges}


def _pct(share: float) -> str:
    return f"{100 * share:.1f} %"


def traffic_notices(summary: dict, who: str = "") -> list[str]:
    """The one-line notices a summary calls for (none when the traffic is what the checkpoint
    trained on): bins outside the training range, requests unfinished at the end, bins at the
    batch cap. `who` prefixes each line (a site names the configuration)."""
    prefix = f"{who}: " if who else ""
    notices = []
    if summary["share_outside"] > RANGE_NOTICE_SHARE:
        parts = ", ".join(f"{LABELS[name]} {_pct(s)}" for name, s in summary["share_outside_by_quantity"].items())
        ratios = ", ".join(f"{r:.1f}x the trained {LABELS[name]}" for name, r in summary["mean_vs_training_mean"].items()
                           if r is not None and name in RATES)
        notices.append(f"{prefix}the traffic lies outside what the checkpoint trained on in "
                       f"{_pct(summary['share_outside'])} of bins (by {parts}; rates over {summary['window_s']:g} s "
                       "windows)" + (f", on average {ratios}" if ratios else "")
                       + ": generated watts there are extrapolated")
    if summary["share_unfinished"] > UNFINISHED_NOTICE_SHARE:
        notices.append(f"{prefix}{summary['unfinished_requests']} of {summary['requests']} requests "
                       f"({_pct(summary['share_unfinished'])}) are unfinished (queued or being served) when the "
                       "generated period ends: their load is missing from the trace, or the simulated server does "
                       "not keep up with this traffic")
    if summary["max_batch"] > 0 and summary["share_at_batch_cap"] > CAP_NOTICE_SHARE:
        notices.append(f"{prefix}the serving model's batch cap of {summary['max_batch']} requests (the "
                       f"checkpoint's max_batch) is full in {_pct(summary['share_at_batch_cap'])} of bins: requests "
                       "queue behind it, so the generated load there is set by the cap")
    return notices


def report(notices: list[str], strict: bool) -> None:
    """Print each notice as one `notice:` line on stderr; with --strict, an InputError (exit 2,
    one line) instead, which the commands raise before writing anything."""
    if strict and notices:
        more = f" (and {len(notices) - 1} more notice(s))" if len(notices) > 1 else ""
        raise InputError(f"--strict: {notices[0]}{more}")
    for line in notices:
        print(f"notice: {line}", file=sys.stderr)


def fidelity_warnings(job: str, metrics: dict) -> list[str]:
    """A one-line warning when a configuration's validation scores (its checkpoint's metrics) are
    poor by FIDELITY_LIMITS, with the numbers, or when the checkpoint records none of them."""
    poor, missing = [], []
    for name, (side, limit) in FIDELITY_LIMITS.items():
        value = metrics.get(name)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            missing.append(name)
        elif (value > limit) if side == "above" else (value < limit):
            poor.append(f"{name} {value:.3g} {'>' if side == 'above' else '<'} {limit:g}")
    if poor:
        return [f"{job}: poor validation scores in its checkpoint ({', '.join(poor)}): its generated watts may "
                "be far from what the hardware draws"]
    if missing:
        return [f"{job}: its checkpoint records no {' or '.join(missing)}; how well it generates is unknown"]
    return []
