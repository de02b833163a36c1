"""Weighted k-nearest-neighbour classification on frozen features (DINOv2's kNN protocol).

Rows are L2-normalised; a query's ``k`` most cosine-similar training rows vote for their
classes with weights ``exp(similarity / T)`` (``T = 0.07``, as DINOv2 and Baharoon et al.);
the class probabilities are the normalised votes. ``k`` is capped at the number of training
rows.
"""

from __future__ import annotations

import numpy as np
import torch

TEMPERATURE = 0.07
KS = (10, 20, 100, 200)
QUERY_CHUNK = 4096  # query rows per similarity block: bounds memory on patch-level sets


def knn_probabilities(
    train_x: np.ndarray,
    train_y: np.ndarray,
    query_x: np.ndarray,
    *,
    k: int,
    n_classes: int,
    temperature: float = TEMPERATURE,
) -> np.ndarray:
    """Class probabilities of the query rows by a weighted vote of their ``k`` neighbours.

    Args:
        train_x: ``(N, D)`` training rows.
        train_y: ``(N,)`` their class ids in ``0..n_classes-1``.
        query_x: ``(Q, D)`` rows to classify.
        k: neighbours per query, capped at ``N``.
        n_classes: number of classes ``G``.
        temperature: the vote weight is ``exp(cosine similarity / temperature)``.

    Returns:
        ``(Q, G)`` probabilities (rows sum to 1); the argmax is the predicted class (ties go
        to the lower class id).
    """
    train = torch.nn.functional.normalize(torch.as_tensor(train_x, dtype=torch.float32), dim=1)
    labels = torch.as_tensor(train_y, dtype=torch.long)
    k = max(1, min(int(k), train.shape[0]))
    out = []
    for chunk in torch.as_tensor(query_x, dtype=torch.float32).split(QUERY_CHUNK):
        query = torch.nn.functional.normalize(chunk, dim=1)
        sim, idx = (query @ train.T).topk(k, dim=1)
        # exp(sim / T) / exp(1 / T): the same weights up to a factor, without overflow
        weights = torch.exp((sim - 1.0) / temperature)
        votes = torch.zeros(query.shape[0], n_classes).scatter_add_(1, labels[idx], weights)
        out.append(votes / votes.sum(dim=1, keepdim=True).clamp_min(1e-30))
    if not out:
        return np.zeros((0, n_classes))
    return torch.cat(out).double().numpy()


def capped_ks(n_train: int, ks: tuple[int, ...] = KS) -> list[int]:
    """The ``k`` values to report: each of ``ks`` capped at ``n_train``, repeats dropped."""
    return sorted({min(k, n_train) for k in ks})
