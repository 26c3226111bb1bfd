"""Validation metrics (docs/design.md, "Metrics") as small pure functions on numpy arrays.

Per-trace inputs are lists with one array per validation trace; per-bin inputs are the
concatenation of those traces. scikit-learn and statsmodels do what they already do.
"""
from __future__ import annotations

import warnings

import numpy as np

from model import config


def classification_scores(labels: np.ndarray, predictions: np.ndarray, num_states: int) -> dict[str, float]:
    """Weighted F1, precision and recall over the K states, and accuracy, over all bins."""
    # scikit-learn and statsmodels load where they are used, so --help of every command is instant
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=list(range(num_states)), average="weighted", zero_division=0)
    return {"val_f1": float(f1), "val_precision": float(precision), "val_recall": float(recall),
            "val_accuracy": float(accuracy_score(labels, predictions))}


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray,
                     n_bins: int = config.ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-label confidence in equal-width bins on [0, 1] (the last one closed): per bin the
    number of time bins, their accuracy and their mean confidence (NaN where a bin is empty)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], confidence, side="right")   # 1.0 lands in the last bin
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / counts
        mean_confidence = np.bincount(which, weights=confidence, minlength=n_bins) / counts
    return counts, accuracy, mean_confidence


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               n_bins: int = config.ECE_BINS) -> float:
    """Top-label ECE: sum over confidence bins of (share of time bins) x |accuracy - mean confidence|."""
    counts, accuracy, confidence = reliability_bins(probabilities, labels, n_bins)
    filled = counts > 0
    return float(np.sum(counts[filled] / counts.sum() * np.abs(accuracy[filled] - confidence[filled])))


def mean_trace_cross_entropy(log_probabilities: list[np.ndarray], labels: list[np.ndarray]) -> float:
    """Cross-entropy averaged over each trace's bins, then over traces."""
    return float(np.mean([-lp[np.arange(len(y)), y].mean() for lp, y in zip(log_probabilities, labels)]))


def acf_lags(x: np.ndarray, nlags: int = config.ACF_NLAGS) -> np.ndarray:
    """Autocorrelation at lags 1..nlags (statsmodels, FFT); NaN for a constant series.

    A constant series is tested for exactly: subtracting a float mean from it can leave rounding
    residue of ~1e-14, whose "autocorrelation" is a smooth ramp that would score as structure.
    """
    if len(x) == 0 or np.all(x == x[0]):
        return np.full(nlags, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a constant series has no ACF
        from statsmodels.tsa.stattools import acf
        return acf(x, nlags=nlags, fft=True)[1:]


def autocorr_r2(real: list[np.ndarray], synthetic: list[np.ndarray], nlags: int = config.ACF_NLAGS) -> float:
    """How well the synthetic trace reproduces the real trace's autocorrelation.

    Per trace: squared Pearson r between the ACFs (lags 1..nlags) of real and synthetic watts,
    0 when either ACF is undefined; length-weighted mean over traces with >= 2*nlags+1 bins.
    NaN when no trace is that long.
    """
    scores, weights = [], []
    for r, s in zip(real, synthetic):
        if len(r) < 2 * nlags + 1:
            continue
        acf_real, acf_syn = acf_lags(r, nlags), acf_lags(s, nlags)
        if (not np.all(np.isfinite(acf_real)) or not np.all(np.isfinite(acf_syn))
                or np.std(acf_real) == 0 or np.std(acf_syn) == 0):
            score = 0.0
        else:
            score = float(np.corrcoef(acf_real, acf_syn)[0, 1] ** 2)
        scores.append(score)
        weights.append(len(r))
    return float(np.average(scores, weights=weights)) if scores else float("nan")


def acf_mae(real: list[np.ndarray], synthetic: list[np.ndarray], nlags: int = config.ACF_NLAGS) -> float:
    """Mean absolute difference of the real and synthetic ACFs over lags 1..nlags, length-weighted
    over traces with >= 2*nlags+1 bins; NaN when none is that long.

    Unlike autocorr_r2 it sees amplitude: an ACF of the right shape at half the height scores
    badly. An undefined ACF (a constant trace) counts as zero correlation at every lag.
    """
    scores, weights = [], []
    for r, s in zip(real, synthetic):
        if len(r) < 2 * nlags + 1:
            continue
        acf_real, acf_syn = np.nan_to_num(acf_lags(r, nlags)), np.nan_to_num(acf_lags(s, nlags))
        scores.append(float(np.mean(np.abs(acf_real - acf_syn))))
        weights.append(len(r))
    return float(np.average(scores, weights=weights)) if scores else float("nan")


def transition_mae(real: list[np.ndarray], synthetic: list[np.ndarray], labels: list[np.ndarray]) -> float:
    """Mean |real step - synthetic step| in watts over the bins where the true state changes.

    NaN when no validation trace has a state change.
    """
    errors = []
    for r, s, y in zip(real, synthetic, labels):
        changes = np.flatnonzero(np.diff(y) != 0) + 1
        errors.append(np.abs((r[changes] - r[changes - 1]) - (s[changes] - s[changes - 1])))
    errors = np.concatenate(errors) if errors else np.array([])
    return float(errors.mean()) if len(errors) else float("nan")


def energy_error_pct(real: list[np.ndarray], synthetic: list[np.ndarray]) -> float:
    """100 x |total synthetic energy - total real energy| / total real energy; NaN when the real
    energy is 0 (a relative error of nothing is undefined)."""
    total_real = float(sum(r.sum() for r in real))
    total_syn = float(sum(s.sum() for s in synthetic))
    if total_real == 0:
        return float("nan")
    return 100.0 * abs(total_syn - total_real) / total_real
