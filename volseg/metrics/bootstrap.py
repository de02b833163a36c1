"""Case-resampling bootstrap confidence intervals (percentile method), seeded and deterministic.

A resample draws N cases with replacement from the N cases; the metric is recomputed on it; the
interval is the ``alpha/2`` and ``1 - alpha/2`` percentiles of the recomputed values. Resamples
where the metric is undefined (NaN, e.g. an AUC on a resample holding one class only) are
skipped and counted. The same seed gives the same resamples, so the same intervals.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

METHOD = "percentile bootstrap over cases (resampling cases with replacement)"


@dataclass(frozen=True)
class ConfidenceInterval:
    """A bootstrap interval.

    Args:
        low: lower bound (NaN when no resample gave a defined value).
        high: upper bound.
        n_valid: resamples where the metric was defined.
        n_resamples: resamples drawn.
    """

    low: float
    high: float
    n_valid: int
    n_resamples: int

    @property
    def n_skipped(self) -> int:
        """Resamples left out because the metric was undefined on them."""
        return self.n_resamples - self.n_valid

    def as_list(self) -> list[float]:
        """``[low, high]``, the form ``summary.json`` stores."""
        return [self.low, self.high]


def resample_indices(n_cases: int, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """Case indices of every resample, shape ``(n_resamples, n_cases)``, from ``seed`` only."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_cases, size=(n_resamples, n_cases))


def percentile_interval(values: np.ndarray, alpha: float = 0.05) -> ConfidenceInterval:
    """Percentile interval of resampled metric values; NaN entries are skipped and counted."""
    values = np.asarray(values, dtype=np.float64)
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return ConfidenceInterval(float("nan"), float("nan"), 0, values.size)
    low, high = np.percentile(valid, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return ConfidenceInterval(float(low), float(high), int(valid.size), int(values.size))


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> ConfidenceInterval:
    """Bootstrap interval of a scalar metric over cases.

    Args:
        metric_fn: ``metric_fn(*resampled_arrays) -> float``; NaN means undefined.
        *arrays: per-case arrays, all with the cases along axis 0 (e.g. ``y_true (N,)`` and
            ``probs (N, G)``); they are resampled with the same indices.
        n_resamples: number of resamples.
        seed: random seed; the same seed gives the same interval.
        alpha: 0.05 for a 95% interval.

    Returns:
        The interval with the count of resamples used.
    """
    return bootstrap_cis(
        lambda *a: {"value": metric_fn(*a)},
        *arrays,
        n_resamples=n_resamples,
        seed=seed,
        alpha=alpha,
    )["value"]


def bootstrap_cis(
    metric_fn: Callable[..., Mapping[str, float]],
    *arrays: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, ConfidenceInterval]:
    """Bootstrap intervals of several metrics computed together on each resample.

    Same as :func:`bootstrap_ci` for a ``metric_fn`` returning ``{name: value}``; computing all
    metrics on one resample at once is much cheaper than one bootstrap per metric.

    Returns:
        name -> interval, for the names ``metric_fn`` returns on the full data.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n_cases = _n_cases(arrays)
    names = list(metric_fn(*arrays))
    values = {name: np.full(n_resamples, np.nan) for name in names}
    if n_cases:
        for r, idx in enumerate(resample_indices(n_cases, n_resamples, seed)):
            result = metric_fn(*(a[idx] for a in arrays))
            for name in names:
                values[name][r] = result.get(name, np.nan)
    return {name: percentile_interval(values[name], alpha) for name in names}


def bootstrap_mean_ci(
    values: np.ndarray, *, n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> ConfidenceInterval:
    """Bootstrap interval of the mean over cases of per-case values, NaN cases left out.

    The vectorised equivalent of ``bootstrap_ci(np.nanmean, values)`` (same resamples), fast
    enough for every label x metric of a large atlas.

    Args:
        values: per-case values ``(N,)``; NaN marks a case where the metric is undefined.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return percentile_interval(np.full(n_resamples, np.nan), alpha)
    resampled = values[resample_indices(values.size, n_resamples, seed)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resample -> NaN, skipped
        means = np.nanmean(resampled, axis=1)
    return percentile_interval(means, alpha)


def _n_cases(arrays: tuple[np.ndarray, ...]) -> int:
    if not arrays:
        raise ValueError("bootstrap needs at least one per-case array")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"per-case arrays differ in length: {sorted(lengths)}")
    return lengths.pop()
