"""The linear probe: a grid of logistic-regression layers trained together on frozen features.

Each grid cell is one learning rate x one feature variant (:func:`volseg.probe.features.views_of`:
last 1 or 4 blocks, with or without the mean patch token). All cells see the same mini-batches
in one loop (their parameters are disjoint, so one backward pass trains them all, as in
DINOv2's linear evaluation): SGD with momentum 0.9, a cosine learning-rate decay, no weight
decay, cross-entropy weighted by inverse class frequency (so the minority class counts, as
balanced accuracy does). Features are standardised with the training rows' mean and standard
deviation first: a fixed affine map, so the probe stays linear, and one learning-rate grid fits
encoders whose features differ in scale.

:func:`select_and_refit` picks the cell with the best validation balanced accuracy (then AUC,
then the smaller learning rate), retrains it from scratch on train + validation and scores the
test rows once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

LEARNING_RATES = (1e-3, 1e-2, 1e-1, 1.0)
EPOCHS = 100
BATCH_SIZE = 256


@dataclass
class LinearProbe:
    """One trained cell: standardisation and a linear layer."""

    view: str
    lr: float
    mean: torch.Tensor
    std: torch.Tensor
    layer: nn.Linear

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``(N, D)`` rows of this cell's view -> ``(N, G)`` class probabilities."""
        with torch.no_grad():
            z = (torch.as_tensor(x, dtype=torch.float32) - self.mean) / self.std
            return torch.softmax(self.layer(z), dim=1).double().numpy()


def train_grid(
    views: Mapping[str, np.ndarray],
    labels: np.ndarray,
    n_classes: int,
    *,
    lrs: Sequence[float] = LEARNING_RATES,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
) -> list[LinearProbe]:
    """Train every (view, learning rate) cell on the same rows, together.

    Args:
        views: feature variant -> ``(N, D_v)`` training rows (same rows in every view).
        labels: ``(N,)`` class ids.
        n_classes: number of classes ``G``.
        lrs: learning rates of the grid.
        epochs: passes over the rows.
        batch_size: rows per step.
        seed: initialisation and batch order; the same seed gives the same cells.

    Returns:
        The cells, view-major in ``views`` order, then by learning rate.
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.as_tensor(labels, dtype=torch.long)
    counts = torch.bincount(y, minlength=n_classes).float()
    weight = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp_min(1)), 0.0)
    cells, inputs, groups = [], [], []
    for view, x in views.items():
        x = torch.as_tensor(x, dtype=torch.float32)
        mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        z = (x - mean) / std
        for lr in lrs:
            layer = nn.Linear(z.shape[1], n_classes)
            with torch.no_grad():  # seeded init: the same cells for the same seed
                bound = 1.0 / max(1, z.shape[1]) ** 0.5
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.zero_()
            cells.append(LinearProbe(view, float(lr), mean, std, layer))
            inputs.append(z)
            groups.append({"params": layer.parameters(), "lr": float(lr)})
    optimizer = torch.optim.SGD(groups, momentum=0.9, weight_decay=0.0)
    n = y.numel()
    steps = epochs * max(1, -(-n // batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + np.cos(np.pi * min(step, steps) / steps))
    )
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for batch in order.split(batch_size):
            loss = sum(
                loss_fn(c.layer(z[batch]), y[batch]) for c, z in zip(cells, inputs, strict=True)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return cells


def select_and_refit(
    views: Mapping[str, np.ndarray],
    labels: np.ndarray,
    n_classes: int,
    *,
    train: np.ndarray,
    val: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], tuple[float, float]],
    refit: bool = True,
    lrs: Sequence[float] = LEARNING_RATES,
    epochs: int = EPOCHS,
    seed: int = 0,
) -> tuple[LinearProbe, list[dict]]:
    """Train the grid on ``train`` rows, pick the best cell on ``val``, optionally refit it.

    Args:
        views: feature variant -> ``(N, D_v)`` rows of all cases.
        labels: ``(N,)`` class ids.
        n_classes: number of classes.
        train, val: row indices.
        score: ``(y_true, probs) -> (balanced accuracy, AUC)`` (NaN allowed) for selection.
        refit: retrain the chosen cell from scratch on train + val (False: keep it as trained
            on ``train``, e.g. for few-shot, where the shots are the whole training set).
        lrs, epochs, seed: as :func:`train_grid`.

    Returns:
        ``(the chosen cell, the grid: one {"view", "lr", "val_balanced_accuracy", "val_AUC"}
        per cell)``.
    """
    cells = train_grid(
        {v: x[train] for v, x in views.items()}, labels[train], n_classes,
        lrs=lrs, epochs=epochs, seed=seed,
    )  # fmt: skip
    grid = []
    for cell in cells:
        bacc, auc = score(labels[val], cell.probabilities(views[cell.view][val]))
        grid.append(
            {"view": cell.view, "lr": cell.lr, "val_balanced_accuracy": bacc, "val_AUC": auc}
        )

    def rank(i: int) -> tuple:
        g = grid[i]
        return (_finite(g["val_balanced_accuracy"]), _finite(g["val_AUC"]), -g["lr"])

    best = cells[max(range(len(cells)), key=rank)]
    if not refit:
        return best, grid
    both = np.concatenate([train, val])
    (chosen,) = train_grid(
        {best.view: views[best.view][both]}, labels[both], n_classes,
        lrs=[best.lr], epochs=epochs, seed=seed,
    )  # fmt: skip
    return chosen, grid


def _finite(value: float) -> float:
    return value if np.isfinite(value) else -np.inf
