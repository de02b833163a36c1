"""Slice geometry shared by the encoder and the heads: slice axis, input scaling, feature grids.

**Slicing.** A volume ``(B, C, X, Y, Z)`` is cut into whole 2D slices along the slice axis
(axial: Z, coronal: Y, sagittal: X); a feature volume ``(B, E, x, y, z)`` keeps the slice axis
at the image's resolution and holds the ViT's token grid on the two in-plane axes.

**Input scaling** (``input_size``). DINOv2 was trained on 16 x 16 to 37 x 37 token grids, and a
preprocessed slice is often far smaller (a 110 px slice is 8 x 8 tokens at patch 14). With an
``input_size`` S, every slice of in-plane size ``(H, W)`` is resized bilinearly (antialiased
when shrinking, ``align_corners=False``) to ``(h, w) = round((H, W) * S / max(H, W))``: the
longer side becomes S pixels, the aspect ratio is kept. ``input_size`` None (``native`` in the
config) keeps ``(h, w) = (H, W)``.

**Padding and tokens.** The (resized) slice is padded at the high end of both in-plane axes to a
multiple of the patch size p, so the token grid is ``(ceil(h / p), ceil(w / p))`` and token ``i``
covers resized pixels ``[i p, (i + 1) p)``. Padding only ever adds tokens past the image; none of
the padding is stored beyond those tokens.

**From tokens back to voxels.** Image voxel ``u`` (centre ``u + 0.5`` in voxel units) sits at
resized coordinate ``(u + 0.5) h / H`` and token coordinate ``t = (u + 0.5) h / (H p)``: voxel
``u`` *saw* token ``floor(t)``. :func:`tokens_to_grid` resamples a token grid onto the image grid
or a coarser pyramid level (stride s: cell ``j`` centred at ``(j + 0.5) s`` voxels) with these
coordinates, linearly between token centres (``i + 0.5``) or to the nearest token, clamped at
the borders. Without input scaling and with stride p this is exactly the identity on the
token grid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from volseg.errors import VolsegError

SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # slicing axis -> its index in (X, Y, Z)

# slice axis -> (volume -> stacked slices, stacked slices -> volume); "b" must be given back
SLICING = {
    "axial": ("b c x y z -> (b z) c x y", "(b z) e x y -> b e x y z"),
    "coronal": ("b c x y z -> (b y) c x z", "(b y) e x z -> b e x y z"),
    "sagittal": ("b c x y z -> (b x) c y z", "(b x) e y z -> b e x y z"),
}


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


def resized_extent(sizes: Sequence[int], input_size: int | None) -> tuple[int, ...]:
    """In-plane size ``(h, w)`` the ViT sees for a slice of in-plane size ``(H, W)`` (no padding).

    The longer side becomes ``input_size`` pixels and the aspect ratio is kept (halves round
    up); None keeps the slice's own size.
    """
    if input_size is None:
        return tuple(int(n) for n in sizes)
    scale = input_size / max(sizes)
    return tuple(max(1, math.floor(n * scale + 0.5)) for n in sizes)


def feature_grid(
    shape: Sequence[int], slice_axis: str, patch_size: int = 14, input_size: int | None = None
) -> tuple[int, ...]:
    """Spatial shape ``(x, y, z)`` of the features the encoder makes from an image ``(X, Y, Z)``."""
    dim = slice_dim(slice_axis)
    plane = [d for d in range(3) if d != dim]
    resized = dict(zip(plane, resized_extent([shape[d] for d in plane], input_size), strict=True))
    return tuple(
        int(n) if d == dim else math.ceil(resized[d] / patch_size) for d, n in enumerate(shape)
    )


def check_feature_grid(
    features: Tensor,
    image_shape: Sequence[int],
    slice_axis: str,
    patch_size: int,
    input_size: int | None,
) -> None:
    """Raise ValueError unless ``features`` lie on :func:`feature_grid` of ``image_shape``."""
    expected = feature_grid(image_shape, slice_axis, patch_size, input_size)
    if tuple(features.shape[2:]) != expected:
        raise ValueError(
            f"features {tuple(features.shape)} do not fit an image of {tuple(image_shape)} "
            f"({slice_axis}, patch {patch_size}, input size {input_size}): "
            f"expected grid {expected}"
        )


def resize_slices(slices: Tensor, input_size: int | None) -> Tensor:
    """``(N, C, H, W)`` slices -> ``(N, C, h, w)`` at :func:`resized_extent` (bilinear)."""
    size = resized_extent(slices.shape[-2:], input_size)
    if size == tuple(slices.shape[-2:]):
        return slices
    shrink = size[0] < slices.shape[-2] or size[1] < slices.shape[-1]
    return F.interpolate(slices, size=size, mode="bilinear", align_corners=False, antialias=shrink)


@functools.lru_cache(maxsize=256)  # built once per geometry, not per forward; never mutated
def token_weights(
    n: int,
    resized: int,
    tokens: int,
    *,
    patch_size: int,
    stride: int = 1,
    mode: str = "linear",
) -> Tensor:
    """Interpolation matrix ``(ceil(n / stride), tokens)`` from tokens to grid cells on one axis.

    Args:
        n: image voxels along the axis.
        resized: pixels along the axis after input scaling (:func:`resized_extent`).
        tokens: tokens along the axis.
        patch_size: ViT patch size p.
        stride: cells of the output grid span this many image voxels.
        mode: ``linear`` between token centres or ``nearest`` (the token the cell centre saw).
    """
    cells = math.ceil(n / stride)
    t = (torch.arange(cells, dtype=torch.float64) + 0.5) * stride * resized / (n * patch_size)
    weights = torch.zeros(cells, tokens, dtype=torch.float64)
    rows = torch.arange(cells)
    if mode == "nearest":
        weights[rows, t.floor().long().clamp(0, tokens - 1)] = 1.0
        return weights
    if mode != "linear":
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    q = t - 0.5  # coordinate in units of token centres
    low = q.floor()
    frac = q - low
    low = low.long()
    weights.index_put_((rows, low.clamp(0, tokens - 1)), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, (low + 1).clamp(0, tokens - 1)), frac, accumulate=True)
    return weights


def tokens_to_grid(
    features: Tensor,
    image_shape: Sequence[int],
    slice_axis: str,
    *,
    patch_size: int = 14,
    input_size: int | None = None,
    stride: int = 1,
    mode: str = "linear",
) -> Tensor:
    """Resample a feature volume from the token grid onto the image grid (or a strided level).

    Args:
        features: ``(B, C, x, y, z)`` on :func:`feature_grid` of ``image_shape``.
        image_shape: ``(X, Y, Z)`` of the image the encoder saw.
        slice_axis: the encoder's slice axis (it is left untouched).
        patch_size, input_size: the encoder's patch size and input size.
        stride: in-plane cells of ``stride`` voxels (``ceil(X / stride)`` cells); 1 is the
            image grid.
        mode: ``linear`` or ``nearest`` (see :func:`token_weights`).

    Returns:
        ``(B, C, X', Y', Z')``: in-plane ``ceil(n / stride)``, the slice axis unchanged.
    """
    dim = slice_dim(slice_axis)
    plane = [d for d in range(3) if d != dim]
    resized = resized_extent([image_shape[d] for d in plane], input_size)
    out = features
    for d, r in zip(plane, resized, strict=True):
        w = token_weights(
            int(image_shape[d]),
            r,
            int(features.shape[2 + d]),
            patch_size=patch_size,
            stride=stride,
            mode=mode,
        ).to(device=features.device, dtype=features.dtype)
        out = torch.movedim(torch.movedim(out, 2 + d, -1) @ w.T, -1, 2 + d)
    return out


def pool_to_feature_grid(
    mask: Tensor, slice_axis: str, patch_size: int = 14, input_size: int | None = None
) -> Tensor:
    """Fraction of each ViT patch a mask covers: ``(B, 1, X, Y, Z)`` -> ``(B, 1, x, y, z)``.

    The mask's slices are resized exactly as the encoder resizes the image's, then averaged per
    patch; padding (beyond the slice) counts as outside the mask.
    """
    to_slices, to_volume = SLICING[slice_axis]
    slices = resize_slices(rearrange(mask.float(), to_slices), input_size)
    h, w = slices.shape[-2:]
    pooled = F.avg_pool2d(F.pad(slices, (0, -w % patch_size, 0, -h % patch_size)), patch_size)
    return rearrange(pooled, to_volume, b=mask.shape[0])
