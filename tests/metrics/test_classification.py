from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc

from volseg.metrics import (
    bootstrap_ci,
    bootstrap_mean_ci,
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    roc_auc,
    roc_curve,
)
from volseg.metrics.classification import brier_score

BINARY_Y = [0, 0, 1, 1]
BINARY_SCORES = [0.1, 0.4, 0.35, 0.8]


def binary_probs(scores):
    scores = np.asarray(scores, dtype=float)
    return np.stack([1 - scores, scores], axis=1)


def brute_force_auc(positive, scores):
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


def test_auc_hand_example_and_ties():
    assert roc_auc(np.array(BINARY_Y, bool), BINARY_SCORES) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1], bool), [0.5, 0.5]) == 0.5
    assert roc_auc(np.array([0, 1, 1], bool), [0.2, 0.2, 0.9]) == pytest.approx(0.75)
    assert math.isnan(roc_auc(np.array([1, 1], bool), [0.2, 0.3]))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force_and_monai(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60).astype(bool)
    scores = np.round(rng.uniform(size=60) + 0.3 * y, 1)  # rounding makes many ties
    ours = roc_auc(y, scores)
    assert ours == pytest.approx(brute_force_auc(y, scores), abs=1e-12)
    monai = compute_roc_auc(torch.from_numpy(scores), torch.from_numpy(y.astype(np.int64)))
    assert ours == pytest.approx(float(monai), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_multiclass_macro_auc_matches_monai(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 80)
    logits = rng.normal(size=(80, 4)) + 1.5 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    out = classification_metrics(y, probs, classes=list("abcd"), n_resamples=0)
    onehot = torch.from_numpy(np.eye(4)[y])
    monai = compute_roc_auc(torch.from_numpy(probs), onehot, average="macro")
    assert out["metrics"]["AUC"] == pytest.approx(float(monai), abs=1e-12)
    per_class = compute_roc_auc(torch.from_numpy(probs), onehot, average="none")
    for c, name in enumerate("abcd"):
        assert out["per_class"][name]["AUC"] == pytest.approx(per_class[c], abs=1e-12)


def test_binary_metrics_by_hand():
    out = classification_metrics(
        BINARY_Y, binary_probs(BINARY_SCORES), classes=["low", "high"], n_resamples=0
    )
    m = out["metrics"]
    # argmax: 0, 0, 0, 1 -> one positive missed
    assert out["confusion_matrix"] == [[2, 0], [1, 1]]
    assert m["AUC"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == 1.0
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["F1"] == pytest.approx(2 / 3)
    assert m["precision"] == 1.0  # the one case predicted high is high
    assert m["Brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)
    # confidences 0.9 (right), 0.6 (right), 0.65 (wrong), 0.8 (right) fall in 4 bins
    assert m["ECE"] == pytest.approx((0.1 + 0.4 + 0.65 + 0.2) / 4)
    assert out["positive_class"] == "high" and list(out["roc_curve"]) == ["high"]
    assert out["notes"] == []


def test_roc_curve_points():
    curve = roc_curve(np.array(BINARY_Y, bool), np.array(BINARY_SCORES))
    assert curve["fpr"] == [0, 0, 0.5, 0.5, 1]
    assert curve["tpr"] == [0, 0.5, 0.5, 1, 1]
    assert curve["thresholds"] == [math.inf, 0.8, 0.4, 0.35, 0.1]
    tied = roc_curve(np.array([0, 1, 1], bool), np.array([0.3, 0.3, 0.9]))
    assert tied["fpr"] == [0, 0, 1] and tied["tpr"] == [0, 0.5, 1]


def test_multiclass_confusion_balanced_accuracy_brier():
    y = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 0, 1, 1, 0])
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), predicted] = 0.8
    assert confusion_matrix(y, predicted, 3).tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    out = classification_metrics(y, probs, classes=["g2", "g3", "g4"], n_resamples=0)
    m = out["metrics"]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert out["per_class"]["g2"]["sensitivity"] == pytest.approx(2 / 3)
    assert out["per_class"]["g2"]["specificity"] == pytest.approx(2 / 3)  # 1 of 3 others -> g2
    assert out["per_class"]["g3"]["F1"] == pytest.approx(2 * 2 / (2 * 2 + 1))
    assert m["F1"] == pytest.approx((2 * 2 / 6 + 0.8 + 0) / 3)
    assert m["precision"] == pytest.approx((2 / 3 + 2 / 3) / 2)  # g4 never predicted: left out
    # right: 0.2^2 + 0.1^2 + 0.1^2 = 0.06; wrong: 0.9^2 + 0.1^2 + 0.8^2 = 1.46
    assert m["Brier"] == pytest.approx((4 * 0.06 + 2 * 1.46) / 6)
    assert "sensitivity" not in m and len(out["roc_curve"]) == 3


def test_brier_and_ece_small_cases():
    assert brier_score(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])) == pytest.approx(0.025)
    assert brier_score(np.array([0]), np.array([[0.7, 0.2, 0.1]])) == pytest.approx(0.14)
    # confidence 0.8 = 12/15 sits exactly on a bin edge and is right 4 times in 5: ECE 0
    probs = np.array([[0.2, 0.8]] * 5)
    y = np.array([1, 1, 1, 1, 0])
    assert expected_calibration_error(y, probs) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(np.array([0]), np.array([[0.6, 0.4]])) == pytest.approx(0.4)


def test_undefined_metrics_are_nan_with_notes():
    out = classification_metrics([1, 1, 1], binary_probs([0.2, 0.7, 0.9]), classes=["a", "b"])
    m = out["metrics"]
    assert math.isnan(m["AUC"]) and math.isnan(m["specificity"])
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert any(note.startswith("AUC is undefined") for note in out["notes"])
    assert out["roc_curve"]["b"] == {"fpr": [], "tpr": [], "thresholds": []}
    assert all(math.isnan(v) for v in out["ci95"]["AUC"])  # no resample has both classes
    assert out["ci95_skipped"]["AUC"] == 2000


def test_bootstrap_deterministic_contains_estimate_and_counts_skips():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 30)
    probs = binary_probs(np.clip(rng.uniform(size=30) * 0.7 + 0.3 * y, 0, 1))
    first = classification_metrics(y, probs, classes=["n", "p"], n_resamples=500, seed=1)
    again = classification_metrics(y, probs, classes=["n", "p"], n_resamples=500, seed=1)
    other = classification_metrics(y, probs, classes=["n", "p"], n_resamples=500, seed=2)
    assert first["ci95"] == again["ci95"] and first["ci95"] != other["ci95"]
    for name, (low, high) in first["ci95"].items():
        assert low <= first["metrics"][name] <= high, name
    tiny = classification_metrics([0, 1, 1], binary_probs([0.2, 0.7, 0.9]), classes=["n", "p"])
    assert 0 < tiny["ci95_skipped"]["AUC"] < 2000  # resamples holding one class only


def test_bootstrap_narrower_with_more_cases():
    def auc_interval(n):
        rng = np.random.default_rng(n)
        y = rng.integers(0, 2, n).astype(bool)
        scores = rng.normal(size=n) + y
        ci = bootstrap_ci(roc_auc, y, scores, n_resamples=1000, seed=0)
        assert ci.n_valid == 1000 and ci.low <= roc_auc(y, scores) <= ci.high
        return ci.high - ci.low

    assert auc_interval(400) < 0.6 * auc_interval(40)


def test_bootstrap_mean_matches_generic_bootstrap():
    values = np.array([0.9, 0.8, np.nan, 0.95, 0.7, 0.85])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        generic = bootstrap_ci(np.nanmean, values, n_resamples=300, seed=4)
    fast = bootstrap_mean_ci(values, n_resamples=300, seed=4)
    assert (fast.low, fast.high, fast.n_valid) == pytest.approx(
        (generic.low, generic.high, generic.n_valid)
    )
    assert fast.low <= np.nanmean(values) <= fast.high
    all_nan = bootstrap_mean_ci(np.array([np.nan, np.nan]), n_resamples=10)
    assert all_nan.n_valid == 0 and all_nan.n_skipped == 10 and math.isnan(all_nan.low)
