"""Rolling power up in time and space, and the numbers a site is sized by; small pure functions.

Resolutions are window means of the finest one: a 1 s value is the mean of its four 0.25 s
bins, so energy is the same at every resolution.
"""
from __future__ import annotations

import numpy as np

from model import config
from model.features import window_means

RESOLUTIONS_S = (config.SAMPLE_PERIOD_S, 1.0, 60.0, 900.0)
METRICS = ("peak_w", "average_w", "par", "load_factor", "ramp_p95_w", "ramp_p99_w", "ramp_max_up_w",
           "ramp_max_down_w", "ldc_p95_w", "ldc_p99_w", "diversity_factor")


def at_resolutions(watts: np.ndarray, bin_s: float) -> dict[float, np.ndarray]:
    """The series (last axis: time) at each resolution of RESOLUTIONS_S, each the window mean
    of the finest; a resolution that is not a whole number of bins is left out."""
    out = {}
    for resolution in RESOLUTIONS_S:
        factor = resolution / bin_s
        if abs(factor - round(factor)) < 1e-9 and round(factor) >= 1:
            out[resolution] = window_means(watts, int(round(factor)))
    return out


def profile_metrics(watts: np.ndarray) -> dict[str, float]:
    """Peak, average, peak-to-average ratio, load factor (average / peak), ramps (absolute changes
    between consecutive values: p95, p99; the largest rise and the largest fall, as positive
    watts) and the load-duration curve's p95 and p99 (the power exceeded 5 % and 1 % of the time).

    One value has no ramps: NaN, shown as "--" and written as null (a 0 would read as a flat
    load measured); a zero peak or average gives NaN ratios.
    """
    watts = np.asarray(watts, dtype=np.float64)
    steps = np.diff(watts)
    peak, average = float(watts.max()), float(watts.mean())
    has_steps = len(steps) > 0
    return {
        "peak_w": peak, "average_w": average,
        "par": peak / average if average else float("nan"),
        "load_factor": average / peak if peak else float("nan"),
        "ramp_p95_w": float(np.percentile(np.abs(steps), 95)) if has_steps else float("nan"),
        "ramp_p99_w": float(np.percentile(np.abs(steps), 99)) if has_steps else float("nan"),
        "ramp_max_up_w": float(max(steps.max(), 0.0)) if has_steps else float("nan"),
        "ramp_max_down_w": float(max(-steps.min(), 0.0)) if has_steps else float("nan"),
        "ldc_p95_w": float(np.percentile(watts, 95)), "ldc_p99_w": float(np.percentile(watts, 99)),
    }


def diversity_factor(level_peak: float, node_peaks) -> float:
    """The utility term: the sum of the nodes' own peaks over the peak of their sum (the
    coincident peak). At least 1; 1 when every node peaks at once, larger the more their peaks
    are spread in time. (Its inverse is the coincidence factor.)"""
    return float(np.sum(node_peaks)) / level_peak if level_peak else float("nan")


# what "worst" means per metric: the largest value, except where a smaller one is worse
LOWER_IS_WORSE = ("load_factor", "diversity_factor")


def worst(values, metric: str) -> float:
    """The worst unit's value of `metric` (the worst rack or row beside the mean): the largest,
    or for a load or diversity factor the smallest."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.min() if metric in LOWER_IS_WORSE else values.max())


def energy_per(average_w: float, seconds: float, count: float) -> float:
    """Joules per unit served (a request, an output token): average watts x seconds / count;
    NaN when nothing was served."""
    return average_w * seconds / count if count else float("nan")


def power_unit(watts) -> tuple[str, float]:
    """The unit (W, kW or MW) and its size in watts that read the largest magnitude in `watts`
    with one to three digits before the point: a 15-minute ramp of 14 kW reads 14.0 kW, not
    0.014 MW."""
    finite = np.abs(np.asarray(watts, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    largest = float(finite.max()) if finite.size else 0.0
    if largest < 1e3:
        return "W", 1.0
    return ("kW", 1e3) if largest < 1e6 else ("MW", 1e6)


ROW_QUANTILES = (5, 50, 95)


def row_peaks(traces: np.ndarray, limit: float, draws: int, rng: np.random.Generator,
              risk: float = 95.0) -> list[dict[str, float]]:
    """For n = 1, 2, ... up to the number of traces (racks: rows of time): how the peak of a row
    of n distinct racks drawn at random is spread over `draws` draws -- its p05, p50, p95, the
    `risk` percentile, the largest (`max_w`) and the share of draws above `limit`
    (`p_exceed`) -- until the `risk` percentile passes `limit`. A row is drawn without
    replacement (a rack cannot stand in a row twice), so the curve never goes beyond the site.

    Each draw is one random order of the traces and its row n + 1 is row n plus the next trace
    in that order: every row is still a uniform random set, and the work is one addition per
    rack, not n. A constant rack is a trace of one value.
    """
    traces = np.asarray(traces, dtype=np.float64)
    order = np.argsort(rng.random((draws, len(traces))), axis=1)
    running = np.zeros((draws, traces.shape[1]))
    curve: list[dict[str, float]] = []
    for n in range(len(traces)):
        running += traces[order[:, n]]
        peaks = running.max(axis=1)
        curve.append({"racks": n + 1,
                      **{f"p{q:02d}_w": float(np.percentile(peaks, q)) for q in ROW_QUANTILES},
                      "risk_w": float(np.percentile(peaks, risk)), "max_w": float(peaks.max()),
                      "p_exceed": float(np.mean(peaks > limit))})
        if curve[-1]["risk_w"] > limit:
            break
    return curve


def racks_under(curve: list[dict[str, float]], limit: float) -> int:
    """The largest row of a row_peaks curve whose risk percentile stays under `limit` (0 if
    not even one rack does)."""
    return sum(point["risk_w"] <= limit for point in curve)
