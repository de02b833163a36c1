"""Patient-level classification metrics (grading) with bootstrap confidence intervals.

Inputs are the true class ids ``y_true (N,)`` (index into ``classes``) and predicted
probabilities ``probs (N, G)``. The predicted class is ``argmax(probs)`` (ties go to the lower
class id). With two classes the positive class is the last one, as in volseg manifests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from volseg.metrics.bootstrap import METHOD, ConfidenceInterval, bootstrap_ci, bootstrap_cis

NAN = float("nan")
ECE_BINS = 15

CONVENTIONS: dict[str, str] = {
    "predicted_class": "argmax of the probabilities (ties -> lower class id)",
    "positive_class": "binary tasks: the last class is positive (AUC, sensitivity, F1)",
    "AUC": (
        "Mann-Whitney U / (n_pos x n_neg), ties counted 1/2; more than two classes: unweighted "
        "mean of one-vs-rest AUCs (NaN if any class is absent or the only one present)"
    ),
    "balanced_accuracy": "mean recall over the classes present in y_true",
    "sensitivity_specificity": (
        "binary: recall of the positive / negative class; more than two classes: per class, "
        "one-vs-rest"
    ),
    "F1": (
        "binary: F1 of the positive class; more than two classes: macro mean of per-class F1 "
        "over classes present in y_true or predictions"
    ),
    "precision": (
        "binary: positive predictive value of the positive class (NaN when nothing is "
        "predicted positive); more than two classes: macro mean over classes predicted"
    ),
    "Brier": (
        "binary: mean (p_positive - y)^2, range 0..1; more than two classes: mean over cases of "
        "the sum over classes of (p_c - onehot_c)^2, range 0..2"
    ),
    "ECE": (
        f"expected calibration error, {ECE_BINS} equal-width bins (lo, hi] on the confidence "
        "max_c p_c: sum over bins of (n_bin / N) x |accuracy_bin - mean confidence_bin|"
    ),
    "undefined": "a metric undefined on the data (e.g. AUC with one class present) is NaN",
    "confusion_matrix": "rows = true class, columns = predicted class, in class order",
}


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney rank formula, ties counted 1/2.

    Args:
        positive: boolean ``(N,)``, True for positive cases.
        scores: ``(N,)``, higher means more likely positive.

    Returns:
        The AUC, or NaN if there are no positives or no negatives.
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return NAN
    ranks = rankdata(np.asarray(scores, dtype=np.float64))  # average ranks for ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """AUC as :func:`classification_metrics` reports it: binary, the last class's; more classes,
    the unweighted mean of the one-vs-rest AUCs (NaN where a class is missing)."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    g = probs.shape[1]
    values = [roc_auc(y_true == c, probs[:, c]) for c in range(g)]
    return values[-1] if g == 2 else float(np.mean(values))


def paired_auc_difference(
    y_true: np.ndarray,
    probs: np.ndarray,
    reference: np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, ConfidenceInterval]:
    """AUC of ``probs`` minus AUC of ``reference`` on the same cases, with a paired bootstrap
    95% interval (both scored on each resample of the cases).

    Args:
        y_true: ``(N,)`` class ids.
        probs, reference: ``(N, G)`` probabilities of two models for the same cases, same order.

    Returns:
        ``(difference, interval)``; resamples with a class missing are skipped (and counted).
    """
    y_true = np.asarray(y_true)
    probs, reference = np.asarray(probs), np.asarray(reference)
    if probs.shape != reference.shape or probs.shape[0] != y_true.shape[0]:
        raise ValueError(f"paired AUC needs matching cases: {probs.shape} vs {reference.shape}")
    difference = lambda y, a, b: auc(y, a) - auc(y, b)  # noqa: E731
    interval = bootstrap_ci(
        difference, y_true, probs, reference, n_resamples=n_resamples, seed=seed
    )
    return difference(y_true, probs, reference), interval


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    """ROC curve points for plotting, one per distinct score (no points dropped).

    Returns:
        ``{"fpr", "tpr", "thresholds"}``; point k predicts positive for ``score >= thresholds[k]``.
        The first point is (0, 0) at threshold +inf. Empty lists without positives or negatives.
    """
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return {"fpr": [], "tpr": [], "thresholds": []}
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # end of each tie group
    tps = np.cumsum(positive)[last]
    fps = (last + 1) - tps
    return {
        "fpr": [0.0, *(fps / n_neg).tolist()],
        "tpr": [0.0, *(tps / n_pos).tolist()],
        "thresholds": [math.inf, *scores[last].tolist()],
    }


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``(G, G)``: rows are true classes, columns predicted classes."""
    flat = np.asarray(y_true) * n_classes + np.asarray(y_pred)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def brier_score(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Brier score; binary: mean (p_last - y)^2; G > 2: mean over cases of the per-class sum."""
    onehot = np.eye(probs.shape[1])[y_true]
    if probs.shape[1] == 2:
        return float(np.mean((probs[:, 1] - onehot[:, 1]) ** 2))
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """ECE over ``n_bins`` equal-width confidence bins ``(k/n, (k+1)/n]`` (0 goes to the first).

    Confidence is the largest probability of a case; accuracy is whether its argmax is right.
    """
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    # Edges k / n are the floats nearest to them, so a confidence of exactly 0.2 lands in
    # (0.1333, 0.2] whatever rounding confidence * n would give.
    edges = np.arange(n_bins + 1) / n_bins
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    gap = np.bincount(bins, correct - confidence, minlength=n_bins)  # sum(acc - conf) per bin
    return float(np.sum(np.abs(gap)) / y_true.size)


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> list:
    """The reliability diagram behind :func:`expected_calibration_error`: per non-empty bin
    ``[lo, hi, n, mean confidence, accuracy]``, the same ``(k/n, (k+1)/n]`` bins."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.arange(n_bins + 1) / n_bins
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    out = []
    for k in range(n_bins):
        inside = bins == k
        if inside.any():
            out.append(
                [float(edges[k]), float(edges[k + 1]), int(inside.sum()),
                 float(confidence[inside].mean()), float(correct[inside].mean())]
            )  # fmt: skip
    return out


def classification_metrics(
    y_true: Sequence[int],
    probs: np.ndarray,
    *,
    classes: Sequence[str],
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """All classification metrics with bootstrap confidence intervals.

    Args:
        y_true: true class ids ``(N,)``, each in ``0..G-1``.
        probs: predicted probabilities ``(N, G)``, columns in ``classes`` order.
        classes: class names ``(G,)``, G >= 2; with two, the last is positive.
        n_resamples: bootstrap resamples over cases (0 skips the intervals).
        seed: bootstrap seed.
        alpha: 0.05 for 95% intervals.

    Returns:
        ``{"classes", "n_cases", "positive_class", "metrics": {AUC, accuracy,
        balanced_accuracy, F1, Brier, ECE[, sensitivity, specificity]}, "per_class": {class:
        {AUC, sensitivity, specificity, F1, n_true}}, "ci95": {metric: [lo, hi]},
        "ci95_per_class": {class: {metric: [lo, hi]}}, "ci95_skipped": {metric: count},
        "confusion_matrix": [[...]], "roc_curve": {class: {fpr, tpr, thresholds}}, "notes",
        "conventions", "bootstrap"}``. Undefined metrics are NaN and explained in "notes".

    Raises:
        ValueError: on mismatched shapes, fewer than two classes, class ids out of range or
            non-finite probabilities.
    """
    y, probs, classes = _check(y_true, probs, classes)
    binary = len(classes) == 2
    point = _scalars(y, probs)
    cis = (
        bootstrap_cis(_scalars, y, probs, n_resamples=n_resamples, seed=seed, alpha=alpha)
        if n_resamples
        else {}
    )
    per_class = {
        name: {m: point[f"{m}/{c}"] for m in ("AUC", "sensitivity", "specificity", "F1")}
        | {"n_true": int(np.sum(y == c))}
        for c, name in enumerate(classes)
    }
    curves = {
        classes[c]: roc_curve(y == c, probs[:, c])
        for c in ([len(classes) - 1] if binary else range(len(classes)))
    }
    return {
        "classes": classes,
        "n_cases": int(y.size),
        "positive_class": classes[-1] if binary else None,
        "metrics": {k: v for k, v in point.items() if "/" not in k},
        "per_class": per_class,
        "ci95": {k: ci.as_list() for k, ci in cis.items() if "/" not in k},
        "ci95_per_class": {
            name: {
                m: cis[f"{m}/{c}"].as_list()
                for m in ("AUC", "sensitivity", "specificity", "F1")
                if f"{m}/{c}" in cis
            }
            for c, name in enumerate(classes)
        },
        "ci95_skipped": {
            _readable(k, classes): ci.n_skipped for k, ci in cis.items() if ci.n_skipped
        },
        "confusion_matrix": confusion_matrix(y, probs.argmax(axis=1), len(classes)).tolist(),
        "roc_curve": curves,
        "reliability": reliability_bins(y, probs),
        "notes": _notes(point, classes),
        "conventions": dict(CONVENTIONS),
        "bootstrap": {"method": METHOD, "n_resamples": n_resamples, "seed": seed, "alpha": alpha},
    }


def _scalars(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Every scalar metric on one (re)sample; per-class ones are keyed ``metric/class_id``."""
    n, g = probs.shape
    cm = confusion_matrix(y, probs.argmax(axis=1), g)
    tp = np.diag(cm).astype(np.float64)
    n_true, n_pred = cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / n_true
        precision = tp / n_pred
        specificity = (n - n_true - n_pred + tp) / (n - n_true)
        f1 = 2 * tp / (n_true + n_pred)
    per_class = [roc_auc(y == c, probs[:, c]) for c in range(g)]
    out = {
        "AUC": per_class[-1] if g == 2 else float(np.mean(per_class)),
        "accuracy": float(tp.sum() / n),
        "balanced_accuracy": _nanmean(recall),
        "F1": float(f1[-1]) if g == 2 else _nanmean(f1),
        "precision": float(precision[-1]) if g == 2 else _nanmean(precision),
        "Brier": brier_score(y, probs),
        "ECE": expected_calibration_error(y, probs),
    }
    if g == 2:
        out.update(sensitivity=float(recall[1]), specificity=float(recall[0]))
    for c in range(g):
        out[f"AUC/{c}"] = per_class[c]
        out[f"sensitivity/{c}"] = float(recall[c])
        out[f"specificity/{c}"] = float(specificity[c])
        out[f"F1/{c}"] = float(f1[c])
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else NAN


def _readable(key: str, classes: list[str]) -> str:
    metric, _, index = key.partition("/")
    return f"{metric}/{classes[int(index)]}" if index else metric


def _notes(point: dict[str, float], classes: list[str]) -> list[str]:
    notes = []
    for key, value in point.items():
        if math.isnan(value):
            notes.append(f"{_readable(key, classes)} is undefined (NaN): {_why(key, classes)}")
    return notes


def _why(key: str, classes: list[str]) -> str:
    metric = key.partition("/")[0]
    if metric == "AUC":
        return "it needs cases of the class and of the rest (every class for the macro AUC)"
    if metric in ("sensitivity", "balanced_accuracy"):
        return "no true case of the class"
    if metric == "specificity":
        return "no case outside the class"
    return "the class is neither true nor predicted in any case"


def _check(
    y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    classes = [str(c) for c in classes]
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if len(classes) < 2:
        raise ValueError(f"classification needs at least two classes, got {classes}")
    if probs.shape != (y.size, len(classes)):
        raise ValueError(f"probs {probs.shape} must be (N, G) = ({y.size}, {len(classes)})")
    if y.size == 0:
        raise ValueError("classification metrics need at least one case")
    if y.min() < 0 or y.max() >= len(classes):
        raise ValueError(f"class ids must lie in 0..{len(classes) - 1}, got {y.min()}..{y.max()}")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probabilities hold NaN or Inf")
    return y, probs, classes
