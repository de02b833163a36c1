"""Temperature scaling and ECE on synthetic logits with known calibration."""

from __future__ import annotations

import numpy as np
import pytest

from volseg.metrics import expected_calibration_error
from volseg.metrics.calibration import fit_temperature, softmax_with_temperature


def calibrated_set(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true class distribution the labels are drawn from."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, 3))
    probs = softmax_with_temperature(logits, 1.0)
    y = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    return logits, y


@pytest.mark.parametrize("k", [0.5, 3.0])
def test_temperature_recovers_the_scaling_of_true_logits(k: float) -> None:
    logits, y = calibrated_set()
    assert fit_temperature(logits * k, y) == pytest.approx(k, rel=0.05)


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident() -> None:
    logits, y = calibrated_set()
    assert expected_calibration_error(y, softmax_with_temperature(logits, 1.0)) < 0.02
    overconfident = softmax_with_temperature(logits * 4.0, 1.0)
    before = expected_calibration_error(y, overconfident)
    assert before > 0.1
    t = fit_temperature(logits * 4.0, y)
    after = expected_calibration_error(y, softmax_with_temperature(logits * 4.0, t))
    assert after < 0.02
    # scaling never changes a decision
    assert (softmax_with_temperature(logits * 4.0, t).argmax(1) == overconfident.argmax(1)).all()


def test_no_cases_keeps_temperature_one() -> None:
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 1.0


def test_reliability_bins_match_the_ece() -> None:
    from volseg.metrics.classification import reliability_bins

    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.05, 0.95], [0.8, 0.2]])
    bins = reliability_bins(y, probs)
    assert sum(b[2] for b in bins) == 4
    top = bins[-1]  # (14/15, 1]: the two 0.95 cases, both right
    assert top[2] == 2 and top[3] == pytest.approx(0.95) and top[4] == 1.0
    ece = sum(b[2] * abs(b[4] - b[3]) for b in bins) / 4
    assert ece == pytest.approx(expected_calibration_error(y, probs))


def test_separable_cases_are_not_sharpened() -> None:
    logits = np.array([[2.0, -2.0], [1.0, -1.0], [-1.5, 1.5], [-0.5, 0.5]])
    assert fit_temperature(logits, np.array([0, 0, 1, 1])) == 1.0
