"""Weighted kNN: known votes, exact predictions on separable rows, chance on shuffled labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from volseg.probe.knn import capped_ks, knn_probabilities


def test_weighted_vote_matches_the_hand_computed_probabilities():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1])
    probs = knn_probabilities(train, labels, np.array([[2.0, 0.0]]), k=2, n_classes=2)
    # neighbours: [1, 0] (cos 1, class 0) and [1, 1] (cos 1/sqrt 2, class 1)
    w0, w1 = math.exp(1 / 0.07), math.exp(2**-0.5 / 0.07)
    assert probs[0] == pytest.approx([w0 / (w0 + w1), w1 / (w0 + w1)], rel=1e-5)


def test_k_is_capped_at_the_training_rows():
    train, labels = np.eye(3), np.array([0, 1, 1])
    probs = knn_probabilities(train, labels, np.array([[1.0, 0.0, 0.0]]), k=200, n_classes=2)
    w_self, w_other = math.exp(1 / 0.07), math.exp(0.0)
    assert probs[0, 0] == pytest.approx(w_self / (w_self + 2 * w_other), rel=1e-5)
    assert capped_ks(7) == [7] and capped_ks(50) == [10, 20, 50] and capped_ks(500)[-1] == 200


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = 5 * np.eye(3, 16)
    return centres[labels] + rng.normal(scale=0.3, size=(n, 16)), labels


def test_separable_rows_are_classified_exactly():
    x, y = _blobs(60, 0)
    q, qy = _blobs(30, 1)
    for k in capped_ks(len(x)):
        pred = knn_probabilities(x, y, q, k=k, n_classes=3).argmax(1)
        np.testing.assert_array_equal(pred, qy)


def test_shuffled_labels_give_about_chance():
    x, y = _blobs(300, 0)
    q, qy = _blobs(600, 1)
    shuffled = np.random.default_rng(2).permutation(y)
    accuracy = np.mean(knn_probabilities(x, shuffled, q, k=20, n_classes=3).argmax(1) == qy)
    assert 0.2 < accuracy < 0.47  # chance is 1/3
