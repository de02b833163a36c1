"""Which labels to write: ``--roi-subset`` names checked against a model's label map, and a
label map cut down to them (the other labels become background, the values stay as they are).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import numpy as np

from volseg.errors import VolsegError


def roi_values(
    names: Sequence[str] | None,
    label_map: Mapping[int, str],
    model: str,
    *,
    task: str = "segmentation",
) -> list[int] | None:
    """The label values of ``names`` in ``label_map``, checked before any case is predicted.

    Args:
        names: label names as typed after ``--roi-subset``; None: every label.
        label_map: label value -> name of the model (from its checkpoint).
        model: the run or checkpoint, named in the message.
        task: the model's task; only segmentation writes labels.

    Returns:
        The values of ``names``, ascending; None when ``names`` is None.

    Raises:
        VolsegError: a grading model, or a name the label map does not hold (with the
            closest name, if one is close).
    """
    if names is None:
        return None
    if task != "segmentation":
        raise VolsegError(f"--roi-subset: {model} grades cases and writes no labels; drop it")
    by_name = {name: int(value) for value, name in label_map.items()}
    for name in names:
        if name not in by_name:
            lower = {str(n).lower(): n for n in by_name}
            close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.6)
            hint = f"did you mean {lower[close[0]]!r}? " if close else ""
            raise VolsegError(
                f"--roi-subset {name!r} is not a label of {model}; {hint}its labels are "
                + ", ".join(str(n) for n in by_name.keys())
            )
    return sorted(by_name[name] for name in set(names))


def keep_labels(labels: np.ndarray, values: Sequence[int], *, background: int = 0) -> np.ndarray:
    """``labels`` with every value not in ``values`` set to ``background``.

    Args:
        labels: ``(X, Y, Z)`` integer label map.
        values: label values to keep.
        background: value written where a label is dropped.

    Returns:
        A new label map of the same dtype.
    """
    out = np.array(labels, copy=True)
    out[~np.isin(out, np.asarray(list(values), dtype=out.dtype))] = background
    return out
