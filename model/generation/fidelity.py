"""How close a generated power trace comes to a measured one, as small pure functions.

Each takes the measured watts `real` and the generated watts `gen` of one trace (1-D arrays,
not necessarily of the same length where only distributions are compared).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp

from model.classifiers import metrics

FIDELITY_METRICS = ("ks", "acf_r2", "nrmse", "p95_error_pct", "p99_error_pct", "energy_error_pct")
# also scored and kept per trace, outside the fixed columns of the summary CSV
EXTRA_METRICS = ("acf_mae",)


def ks(real: np.ndarray, gen: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of the two watt distributions (0 = identical,
    1 = disjoint): the largest gap between their empirical CDFs."""
    return float(ks_2samp(real, gen).statistic)


def acf_r2(real: np.ndarray, gen: np.ndarray) -> float:
    """Squared correlation of the two autocorrelation functions, lags 1-50, as the training
    table's autocorr_r2: 0 when either is undefined (a constant trace), NaN when the trace
    has fewer than 101 bins."""
    return metrics.autocorr_r2([real], [gen])


def nrmse(real: np.ndarray, gen: np.ndarray) -> float:
    """Root-mean-square error bin by bin over the measured trace's range (max - min); NaN
    when the measured trace is constant. Needs equal lengths."""
    spread = float(np.max(real) - np.min(real))
    if spread == 0:
        return float("nan")
    return float(np.sqrt(np.mean((np.asarray(gen) - np.asarray(real)) ** 2)) / spread)


def percentile_error_pct(real: np.ndarray, gen: np.ndarray, q: float) -> float:
    """100 x |P_q(gen) - P_q(real)| / P_q(real): how far off the q-th percentile (the peak a
    planner sizes for) is; NaN when the measured percentile is 0."""
    measured = float(np.percentile(real, q))
    if measured == 0:
        return float("nan")
    return 100.0 * abs(float(np.percentile(gen, q)) - measured) / measured


def energy_error_pct(real: np.ndarray, gen: np.ndarray) -> float:
    """The training table's energy_error_pct on the one trace (equal bin widths, so sums of watts
    stand for energy); NaN when the measured energy is 0."""
    return metrics.energy_error_pct([real], [gen])


def fidelity(real: np.ndarray, gen: np.ndarray) -> dict[str, float]:
    """Every metric of FIDELITY_METRICS and EXTRA_METRICS for one trace."""
    return {"ks": ks(real, gen), "acf_r2": acf_r2(real, gen), "nrmse": nrmse(real, gen),
            "p95_error_pct": percentile_error_pct(real, gen, 95),
            "p99_error_pct": percentile_error_pct(real, gen, 99),
            "energy_error_pct": energy_error_pct(real, gen),
            "acf_mae": metrics.acf_mae([real], [gen])}
