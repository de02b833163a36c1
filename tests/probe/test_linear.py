"""The linear-probe grid: separable rows learnt exactly, shuffled labels at chance, selection."""

from __future__ import annotations

import numpy as np

from volseg.probe.linear import select_and_refit, train_grid
from volseg.probe.table import grading_scores


def _views(n: int, seed: int, shuffle: bool = False):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    signal = np.where(y[:, None] == 1, 2.0, -2.0) * np.ones((n, 4))
    good = signal + rng.normal(size=(n, 4))
    noise = rng.normal(size=(n, 6))
    if shuffle:
        y = rng.permutation(y)
    return {"noise": noise, "good": np.concatenate([good, noise], 1)}, y


def _score(y, probs):
    s = grading_scores(y, probs)
    return s["balanced_accuracy"], s["AUC"]


def test_every_cell_of_a_separable_view_reaches_accuracy_one():
    views, y = _views(80, 0)
    cells = train_grid(views, y, 2, lrs=[0.01, 0.1], epochs=30)
    assert [(c.view, c.lr) for c in cells] == [
        ("noise", 0.01), ("noise", 0.1), ("good", 0.01), ("good", 0.1)
    ]  # fmt: skip
    test_views, test_y = _views(40, 1)
    for cell in cells[2:]:
        pred = cell.probabilities(test_views["good"]).argmax(1)
        assert np.mean(pred == test_y) == 1.0


def test_selection_picks_the_informative_view_and_refits_on_train_and_val():
    views, y = _views(120, 0)
    train, val, test = np.arange(0, 60), np.arange(60, 90), np.arange(90, 120)
    cell, grid = select_and_refit(
        views, y, 2, train=train, val=val, score=_score, lrs=[0.01, 0.1], epochs=30
    )
    assert cell.view == "good" and len(grid) == 4
    assert {g["view"] for g in grid if g["val_balanced_accuracy"] == 1.0} == {"good"}
    assert np.mean(cell.probabilities(views["good"][test]).argmax(1) == y[test]) == 1.0
    # the refit saw train + val: its standardisation is theirs
    both = np.concatenate([train, val])
    np.testing.assert_allclose(cell.mean.numpy(), views["good"][both].mean(0), rtol=1e-5)


def test_shuffled_labels_give_about_chance():
    views, y = _views(400, 0, shuffle=True)
    (cell,) = train_grid({"good": views["good"][:200]}, y[:200], 2, lrs=[0.1], epochs=20)
    accuracy = np.mean(cell.probabilities(views["good"][200:]).argmax(1) == y[200:])
    assert 0.38 < accuracy < 0.62


def test_the_same_seed_gives_the_same_cells():
    views, y = _views(40, 0)
    a = train_grid(views, y, 2, lrs=[0.1], epochs=5, seed=3)
    b = train_grid(views, y, 2, lrs=[0.1], epochs=5, seed=3)
    for p, q in zip(a, b, strict=True):
        np.testing.assert_array_equal(p.layer.weight.detach(), q.layer.weight.detach())
