"""Slice geometry shared by the encoder and the heads: which axis is sliced, feature grids.

A feature volume is ``(B, E, x, y, z)``: the slice axis keeps the image's resolution, the two
in-plane axes are the ViT patch grid, ``ceil(n / patch_size)`` (axial: ``(X/14, Y/14, Z)``;
coronal: ``(X/14, Y, Z/14)``; sagittal: ``(X, Y/14, Z/14)``). The encoder pads each slice at the
high end of its in-plane axes to a multiple of the patch size, so patch ``i`` covers image voxels
``[i * patch_size, (i + 1) * patch_size)``; the heads rely on that when they crop or pool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from volseg.errors import VolsegError

SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # slicing axis -> its index in (X, Y, Z)


def slice_dim(slice_axis: str) -> int:
    """Index in ``(X, Y, Z)`` of the axis the slices stack along (sagittal X, coronal Y, axial Z).

    Raises:
        VolsegError: ``slice_axis`` is not ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    """
    if slice_axis not in SLICE_AXES:
        raise VolsegError(f"slice_axis {slice_axis!r} is not one of {', '.join(SLICE_AXES)}")
    return SLICE_AXES[slice_axis]


def along(dim: int, in_plane: int, across: int) -> tuple[int, int, int]:
    """Kernel or stride triple: ``across`` on the slice axis ``dim``, ``in_plane`` on the others."""
    x, y, z = (across if d == dim else in_plane for d in range(3))
    return x, y, z


def feature_grid(shape: Sequence[int], slice_axis: str, patch_size: int = 14) -> tuple[int, ...]:
    """Spatial shape ``(x, y, z)`` of the features the encoder makes from an image ``(X, Y, Z)``."""
    dim = slice_dim(slice_axis)
    return tuple(n if d == dim else math.ceil(n / patch_size) for d, n in enumerate(shape))


def pool_to_feature_grid(mask: Tensor, slice_axis: str, patch_size: int = 14) -> Tensor:
    """Fraction of each ViT patch a mask covers: ``(B, 1, X, Y, Z)`` -> ``(B, 1, x, y, z)``.

    Padding voxels (beyond the image, see module docstring) count as outside the mask.
    """
    dim = slice_dim(slice_axis)
    pad: list[int] = []
    for d in (2, 1, 0):  # F.pad lists the last axis first
        pad += [0, 0 if d == dim else -mask.shape[2 + d] % patch_size]
    return F.avg_pool3d(F.pad(mask.float(), pad), along(dim, patch_size, 1))
