"""Segmentation head: voxel logits at image resolution from slice-wise ViT features.

The feature grid and its padding convention are described in :mod:`volseg.models.heads`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from volseg.models.registry import HEADS
from volseg.models.slicing import along, check_feature_grid, slice_dim, tokens_to_grid


def _conv_norm_act(cin: int, cout: int, kernel: tuple[int, int, int]) -> nn.Sequential:
    padding = tuple(k // 2 for k in kernel)
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, padding=padding, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.GELU(),
    )


class _ResBlock(nn.Module):
    """``gelu(x + norm(conv2(gelu(norm(conv1(x))))))`` with kernels ``k1`` then ``k2``."""

    def __init__(self, channels: int, k1: tuple[int, int, int], k2: tuple[int, int, int]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_norm_act(channels, channels, k1),
            nn.Conv3d(channels, channels, k2, padding=tuple(k // 2 for k in k2), bias=False),
            nn.InstanceNorm3d(channels, affine=True),
        )
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))


@HEADS.register("seg3d")
class SegHead3D(nn.Module):
    """Voxel logits at image resolution from a feature volume and the image the encoder saw.

    1. 1x1x1 projection ``E -> channels`` and ``depth`` residual blocks on the feature grid that
       mix across slices. ``anisotropic`` (default) pairs an in-plane 3x3x1 conv with a
       cross-slice 1x1x3 conv: on the feature grid an in-plane step spans ``patch_size`` image
       voxels and a slice step one, and thick slices should not be mixed like in-plane
       neighbours; ``anisotropic=False`` uses 3x3x3 convs throughout.
    2. Learned in-plane upsampling by ``patch_size`` in two transposed convs (kernel = stride,
       so no checkerboard overlap): ``patch_size / 2`` then 2 (14 = 7 x 2) for an even patch
       size, with a 3x3 in-plane refinement conv between them; a single step for an odd one.
       Widths go ``channels -> channels/2 -> channels/4``. The result is cropped to ``(X, Y, Z)``.
    3. A two-conv stem on the full-resolution image (``channels/4`` wide) is concatenated, so
       boundaries follow the voxels; one conv fuses, a 1x1x1 conv gives the ``K`` logits.

    Args:
        in_channels: encoder embedding width ``E``.
        num_classes: ``K``, background included.
        image_channels: channels ``C_img`` of the image the encoder saw.
        channels: width on the feature grid.
        depth: number of residual blocks on the feature grid.
        patch_size: ViT patch size; the in-plane downsampling of the features.
        slice_axis: ``"axial"`` (Z), ``"coronal"`` (Y) or ``"sagittal"`` (X).
        anisotropic: in-plane + cross-slice kernel pairs instead of 3x3x3.
        dropout: channel dropout on the feature grid (training only).
        input_size: the encoder's input size; with one, the token grid is first resampled onto
            the image's patch grid (``ceil(X / patch_size)``), see :mod:`volseg.models.slicing`.
        feature_blocks: ViT blocks stacked in ``in_channels`` (the projection reads them all).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        image_channels: int = 1,
        channels: int = 64,
        depth: int = 2,
        patch_size: int = 14,
        slice_axis: str = "axial",
        anisotropic: bool = True,
        dropout: float = 0.0,
        input_size: int | None = None,
        feature_blocks: int = 1,
    ) -> None:
        super().__init__()
        self.patch_size, self.slice_axis = patch_size, slice_axis
        self.input_size = input_size
        dim = slice_dim(slice_axis)
        k1, k2 = (along(dim, 3, 1), along(dim, 1, 3)) if anisotropic else ((3, 3, 3),) * 2
        mid, fine = max(channels // 2, 8), max(channels // 4, 8)
        self.project = _conv_norm_act(in_channels, channels, (1, 1, 1))
        self.blocks = nn.Sequential(*(_ResBlock(channels, k1, k2) for _ in range(depth)))
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        steps = [patch_size // 2, 2] if patch_size % 2 == 0 and patch_size > 2 else [patch_size]
        up: list[nn.Module] = []
        cin = channels
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            cout = fine if last else mid
            kernel = along(dim, step, 1)
            up += [
                nn.ConvTranspose3d(cin, cout, kernel, stride=kernel, bias=False),
                nn.InstanceNorm3d(cout, affine=True),
                nn.GELU(),
            ]
            if not last:
                up.append(_conv_norm_act(cout, cout, along(dim, 3, 1)))
            cin = cout
        self.upsample = nn.Sequential(*up)
        self.stem = nn.Sequential(
            _conv_norm_act(image_channels, fine, k1), _conv_norm_act(fine, fine, k2)
        )
        self.fuse = _conv_norm_act(2 * fine, fine, k1)
        self.classify = nn.Conv3d(fine, num_classes, 1)

    def forward(self, features: Tensor, image: Tensor) -> Tensor:
        """Segment.

        Args:
            features: ``(B, E, x, y, z)`` on the feature grid of ``image``
                (:func:`~volseg.models.slicing.feature_grid`).
            image: ``(B, C_img, X, Y, Z)``, the full-resolution input the encoder saw.

        Returns:
            Logits ``(B, K, X, Y, Z)``.
        """
        size = tuple(image.shape[2:])
        check_feature_grid(features, size, self.slice_axis, self.patch_size, self.input_size)
        x = self.project(features)
        if self.input_size is not None:  # tokens -> the image's own patch grid
            x = tokens_to_grid(
                x, size, self.slice_axis, patch_size=self.patch_size,
                input_size=self.input_size, stride=self.patch_size,
            )  # fmt: skip
        x = self.dropout(self.blocks(x))
        x = self.upsample(x)[:, :, : size[0], : size[1], : size[2]]  # drop the in-plane padding
        x = self.fuse(torch.cat([x, self.stem(image)], dim=1))
        return self.classify(x)
