"""Map a prediction from the preprocessed grid back onto the input file's grid.

The validation pipeline (:func:`volseg.data.transforms.build_transforms` with ``train=False``)
records every invertible step on its MetaTensors; MONAI's ``Invertd`` undoes them in reverse
(:func:`invert_prediction`). When no step resampled (orientation, flips, crops, pads only),
:func:`voxel_map` says where every preprocessed voxel lies on the input grid, and a prediction
goes back by indexing alone (:class:`VoxelMap`): no interpolation, on any device.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd
from monai.utils import MetaKeys


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


@dataclass(frozen=True)
class VoxelMap:
    """Where the preprocessed grid's voxels lie on the input grid when no step resampled.

    Orientation, flips, crops and pads only move voxels: preprocessed voxel ``p`` is input voxel
    ``o`` with ``o[i] = sign[i] * p[axes[i]] + offsets[i]``. Moving a prediction back is then a
    permute, flips and a copy into a blank input-sized volume, exact for label maps and
    probabilities alike, on whatever device the prediction lives.

    Attributes:
        axes: the preprocessed axis that runs along each input axis.
        signs: +1, or -1 where that axis is flipped.
        offsets: input index of preprocessed index 0 along each input axis.
        shape: the input grid ``(X, Y, Z)``.
    """

    axes: tuple[int, int, int]
    signs: tuple[int, int, int]
    offsets: tuple[int, int, int]
    shape: tuple[int, int, int]

    def to_input(self, pred: torch.Tensor, fill: float = 0) -> torch.Tensor:
        """``(C, X', Y', Z')`` on the preprocessed grid -> ``(C, X, Y, Z)`` on the input grid.

        Input voxels the preprocessing cropped away get ``fill``; the result has ``pred``'s
        dtype and device.
        """
        moved = pred.permute(0, *(1 + a for a in self.axes))
        flips = [1 + i for i, s in enumerate(self.signs) if s < 0]
        if flips:
            moved = moved.flip(flips)
        out = moved.new_full((moved.shape[0], *self.shape), fill)
        source, target = [slice(None)], [slice(None)]
        for i, size in enumerate(self.shape):
            n = int(moved.shape[1 + i])
            start = self.offsets[i] - (n - 1 if self.signs[i] < 0 else 0)
            lo, hi = max(start, 0), min(start + n, size)
            if lo >= hi:
                return out  # nothing of the prediction lies on the input grid
            source.append(slice(lo - start, hi - start))
            target.append(slice(lo, hi))
        out[tuple(target)] = moved[tuple(source)]
        return out


def voxel_map(volume: MetaTensor, *, atol: float = 1e-4) -> VoxelMap | None:
    """The :class:`VoxelMap` of a preprocessed volume, or None when a step resampled it.

    Reads the volume's current ``affine`` and its meta's ``original_affine`` and
    ``spatial_shape`` (the input file's, see :mod:`volseg.data.loading`): the preprocessed
    voxel centres are input voxel centres exactly when ``inv(original) @ affine`` is a signed
    permutation with whole-voxel shifts (within ``atol`` voxels).
    """
    meta = volume.meta
    if MetaKeys.ORIGINAL_AFFINE not in meta or MetaKeys.SPATIAL_SHAPE not in meta:
        return None
    original = np.asarray(meta[MetaKeys.ORIGINAL_AFFINE], dtype=np.float64).reshape(4, 4)
    affine = np.asarray(torch.as_tensor(volume.affine).cpu(), dtype=np.float64).reshape(4, 4)
    shape = tuple(int(s) for s in np.asarray(meta[MetaKeys.SPATIAL_SHAPE]).reshape(-1)[:3])
    step = np.linalg.solve(original, affine)
    rotation, shift = np.rint(step[:3, :3]), np.rint(step[:3, 3])
    if not (np.allclose(step[:3, :3], rotation, atol=atol, rtol=0)
            and np.allclose(step[:3, 3], shift, atol=atol, rtol=0)):  # fmt: skip
        return None
    magnitude = np.abs(rotation)
    if not ((magnitude.sum(0) == 1).all() and (magnitude.sum(1) == 1).all()):
        return None  # a zoom or shear that happens to land on whole numbers
    axes = tuple(int(np.argmax(row)) for row in magnitude)
    signs = tuple(int(rotation[i, a]) for i, a in enumerate(axes))
    return VoxelMap(axes, signs, tuple(int(s) for s in shift), shape)  # type: ignore[arg-type]
