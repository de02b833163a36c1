"""Temperature scaling: one scalar T dividing the logits, fitted on validation cases.

Guo et al. (2017): ``softmax(logits / T)`` keeps every argmax (so AUC and accuracy are
unchanged) and, with T > 1, softens an overconfident model's probabilities.
"""

from __future__ import annotations

import math

import numpy as np

LOG_T_RANGE = (-4.0, 4.0)  # T in [0.018, 54.6]: wide enough for any sane model


def softmax_with_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` over the last axis; logits ``(N, G)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def temperature_nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true classes at ``temperature``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y_true)), np.asarray(y_true)].mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, *, iterations: int = 80) -> float:
    """The T minimising :func:`temperature_nll`, by golden-section search on log T.

    The NLL is convex in 1/T, hence unimodal in log T, so the 1-D search finds its minimum
    within ``LOG_T_RANGE`` (to ~1e-12 in log T after 80 steps).

    Args:
        logits: ``(N, G)`` uncalibrated logits.
        y_true: ``(N,)`` true class ids.

    Returns:
        T > 0; 1.0 when there are no cases, or when the minimum lies at the range's low end:
        cases the logits separate perfectly make the NLL fall without bound as T -> 0, and
        sharpening on them would make held-out predictions near-certain, so they stay as is.
    """
    y = np.asarray(y_true)
    if len(y) == 0:
        return 1.0
    lo, hi = LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = temperature_nll(logits, y, math.exp(a)), temperature_nll(logits, y, math.exp(b))
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = temperature_nll(logits, y, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = temperature_nll(logits, y, math.exp(b))
    log_t = (lo + hi) / 2
    return 1.0 if log_t < LOG_T_RANGE[0] + 1e-3 else math.exp(log_t)
