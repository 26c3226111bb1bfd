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

    One value has no ramps (0); a zero peak or average gives NaN ratios.
    """
    watts = np.asarray(watts, dtype=np.float64)
    steps = np.diff(watts)
    peak, average = float(watts.max()), float(watts.mean())
    has_steps = len(steps) > 0
    return {
        "peak_w": peak, "average_w": average,
        "par": peak / average if average else float("nan"),
        "load_factor": average / peak if peak else float("nan"),
        "ramp_p95_w": float(np.percentile(np.abs(steps), 95)) if has_steps else 0.0,
        "ramp_p99_w": float(np.percentile(np.abs(steps), 99)) if has_steps else 0.0,
        "ramp_max_up_w": float(max(steps.max(), 0.0)) if has_steps else 0.0,
        "ramp_max_down_w": float(max(-steps.min(), 0.0)) if has_steps else 0.0,
        "ldc_p95_w": float(np.percentile(watts, 95)), "ldc_p99_w": float(np.percentile(watts, 99)),
    }


def diversity_factor(level_peak: float, node_peaks) -> float:
    """Peak of a sum over the sum of its nodes' own peaks: 1 when every node peaks at once,
    lower the more their peaks are spread in time."""
    total = float(np.sum(node_peaks))
    return level_peak / total if total else float("nan")


def p95_peaks_of_random_rows(traces: np.ndarray, limit: float, draws: int, rng: np.random.Generator) -> list[float]:
    """For n = 1, 2, ... up to the number of traces: the P95 over `draws` random rows of n
    distinct traces of the peak of their sum, until it passes `limit`. A row is drawn without
    replacement (a rack cannot stand in a row twice), so the curve never goes beyond the site.

    Each draw is one random order of the traces and its row n + 1 is row n plus the next trace
    in that order: every row is still a uniform random set, and the work is one addition per
    rack, not n.
    """
    order = np.argsort(rng.random((draws, len(traces))), axis=1)
    running = np.zeros((draws, traces.shape[1]))
    curve: list[float] = []
    for n in range(len(traces)):
        running += traces[order[:, n]]
        curve.append(float(np.percentile(running.max(axis=1), 95)))
        if curve[-1] > limit:
            break
    return curve
