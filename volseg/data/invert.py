"""Map a prediction from the preprocessed grid back onto the input file's grid.

The validation pipeline (:func:`volseg.data.transforms.build_transforms` with ``train=False``)
records every invertible step on its MetaTensors; MONAI's ``Invertd`` undoes them in reverse.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd


def invert_prediction(
    pred: torch.Tensor | np.ndarray,
    data: Mapping[Hashable, Any],
    transforms: Compose,
    key: str = "image",
    *,
    nearest: bool | None = None,
) -> torch.Tensor:
    """Map a prediction from the preprocessed grid back onto the input file's grid.

    Undoes, through MONAI's ``Invertd``, every invertible step recorded on ``data[key]``
    (foreground crop, spacing, orientation), in reverse.

    Args:
        pred: ``(K, X', Y', Z')`` probabilities/logits or ``(1, X', Y', Z')`` label map on the
            grid of ``data[key]``.
        data: one (un-batched; see ``monai.data.decollate_batch``) dict output by the
            validation pipeline (``train=False``).
        transforms: that pipeline.
        key: the key whose recorded transforms are undone.
        nearest: nearest-neighbour resampling (label maps) or the recorded linear one
            (probabilities); None picks nearest for integer ``pred``.

    Returns:
        ``(K or 1, X, Y, Z)`` MetaTensor on the original grid (its ``affine`` is the file's),
        with ``pred``'s dtype; write it with :func:`volseg.io.write_like`.
    """
    reference = data[key]
    pred = torch.as_tensor(pred)
    if not isinstance(reference, MetaTensor) or pred.shape[1:] != reference.shape[1:]:
        raise ValueError(
            f"pred {tuple(pred.shape)} must lie on the grid of the MetaTensor data['{key}'] "
            f"{tuple(getattr(reference, 'shape', ()))} output by the validation pipeline"
        )
    dtype = pred.dtype
    if nearest is None:
        nearest = not pred.is_floating_point()
    # A plain tensor would make Invertd look for a legacy trace key and silently do nothing.
    pred = MetaTensor(pred.float())
    inverter = Invertd("pred", transform=transforms, orig_keys=key, nearest_interp=nearest)
    out = inverter({key: reference, "pred": pred})["pred"]
    return out.to(dtype)
