"""Few-shot sampling: ``n`` training rows per class, seeded, for the few-shot protocol.

Each (n, seed) draw takes exactly ``n`` rows of every class from the training rows, without
replacement, from a generator seeded by ``(seed, n)`` alone: the same seed gives the same rows,
another seed other rows. The classifier is the linear probe (:mod:`volseg.probe.linear`),
trained on the shots only; its grid cell is picked on the validation rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from volseg.errors import VolsegError

DEFAULT_SHOTS = (1, 2, 4, 8, 16)


def sample_shots(
    labels: np.ndarray, candidates: np.ndarray, n: int, seed: int, classes: Sequence[str]
) -> np.ndarray:
    """``n`` rows of every class drawn from ``candidates``.

    Args:
        labels: ``(N,)`` class ids of all rows.
        candidates: row indices to draw from (the training rows).
        n: shots per class, >= 1.
        seed: the draw's seed.
        classes: class names (index = class id); every class must have ``n`` candidates.

    Returns:
        ``n * len(classes)`` row indices, class by class, sorted within a class.

    Raises:
        VolsegError: a class with fewer than ``n`` candidate rows.
    """
    rng = np.random.default_rng([int(seed), int(n)])
    picked = []
    for c, name in enumerate(classes):
        pool = np.sort(candidates[labels[candidates] == c])
        if pool.size < n:
            raise VolsegError(
                f"--shots {n} needs {n} training rows of every class, but class {name!r} has "
                f"{pool.size}; use --shots values up to {_most(labels, candidates, classes)}"
            )
        picked.append(np.sort(rng.choice(pool, size=n, replace=False)))
    return np.concatenate(picked)


def _most(labels: np.ndarray, candidates: np.ndarray, classes: Sequence[str]) -> int:
    return int(min(np.sum(labels[candidates] == c) for c in range(len(classes))))


def parse_shots(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``.

    Raises:
        VolsegError: an empty list, a value that is not a whole number, or one below 1.
    """
    values = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            value = 0
        if value < 1 or str(value) != part.lstrip("+"):
            raise VolsegError(
                f"--shots {text!r}: {part!r} is not a whole number >= 1; give shots per class "
                "as a comma-separated list, e.g. --shots 1,2,4,8,16"
            )
        values.append(value)
    return sorted(set(values))
