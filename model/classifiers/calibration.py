"""Temperature scaling of the classifier's logits (docs/design.md, "Training"), as pure functions.

    cut = calibration_split(len(trace))       # bins [0, cut) train the weights, [cut, T) fit T
    temperature = fit_temperature(logits, labels)     # one scalar T > 0, NLL-optimal on the slice
    probabilities = softmax(logits / temperature)     # PowerStateGRU.temperature does this

One scalar divides every logit, so the most probable state of every bin, and with it F1,
precision, recall and accuracy, is unchanged; only how sure the classifier says it is moves.
A T above 1 softens overconfident probabilities. It is fitted on bins the classifier's weights
never trained on, the calibration slice of each training trace (never a validation trace):
fitted on the bins it was trained on, an overfitted classifier looks well calibrated there.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from model import config

# the search interval of log T: T from about 0.01 to 100, far beyond any useful temperature
LOG_T_BOUNDS = (-math.log(100.0), math.log(100.0))


def calibration_split(n_bins: int, share: float = config.CALIBRATION_SHARE) -> int:
    """Where a training trace of `n_bins` bins is cut: bins [0, cut) train the weights, bins
    [cut, n_bins) fit the temperature. The last `share` of the trace, at least one bin on each
    side (a trace too short for both trains whole and gives no calibration bins)."""
    if n_bins < 2:
        return n_bins
    return int(min(max(round(n_bins * (1.0 - share)), 1), n_bins - 1))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    labels = np.asarray(labels, dtype=np.int64)
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    return float(-log_softmax(scaled, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the mean NLL of `labels` under softmax(logits / T).

    One-dimensional and smooth in log T (the NLL is convex in 1/T), so SciPy's bounded scalar
    search finds it; never worse on its own bins than T = 1 (no scaling): if the search ends
    above that, 1.0 is returned. No bins -> 1.0.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    found = minimize_scalar(lambda log_t: nll(logits, labels, math.exp(log_t)), bounds=LOG_T_BOUNDS,
                            method="bounded", options={"xatol": 1e-6})
    temperature = math.exp(float(found.x))
    return temperature if nll(logits, labels, temperature) <= nll(logits, labels, 1.0) else 1.0
