"""Pyramid head: a light U-Net on the image whose coarse levels are fed ViT features.

The default segmentation head. ``seg3d`` (:mod:`volseg.models.seg_head`) has only the 1/14
feature grid and two thin full-resolution convolutions; this head puts the ViT features into
a convolutional pyramid on the image itself, so boundaries come from the voxels and context from
the foundation features::

    image (C_img, X, Y, Z) -> conv -> e0 (c0, full) -> down -> e1 (2 c0, 1/2) -> ... -> eL
    tokens (F, x, y, z)    -> 1x1 per level l >= 1 -> resampled onto level l (tokens_to_grid)
    bottom:  dL = conv(cat(eL, vL))
    up:      d_l = conv(cat(up(d_{l+1}), e_l, v_l))  for l = L-1 .. 0 (no v_0)
    logits = 1x1x1 conv(d0)

- Levels shrink the two in-plane axes by 2 each (``ceil(n / 2**l)`` voxels); the slice axis
  keeps its resolution, as in the encoder, so windows along the slices stay exact.
- The features of several ViT blocks (``fusion: stack``, ``F = blocks * E``) reach every level
  through a learned 1x1 projection on the token grid (cheap: it runs before resampling, which is
  linear and commutes with it), so each level picks its own mix of shallow and deep blocks.
- Resampling follows :mod:`volseg.models.slicing`: a token's features land on the voxels it saw,
  whatever the encoder's ``input_size``.
- Each stage is two convolutions with a residual path around the second; without it the
  deep path (about 35 layers) learned the organ phantoms half as fast (validation Dice 0.42
  vs 0.72 after 10 epochs).
- Every convolution is factorised (``anisotropic``, the default): an in-plane 3 x 3 conv run as
  2D over the slices, then a cross-slice conv of 3, each with InstanceNorm and GELU. It sees
  what a 3x3x3 conv sees, never mixes thick slices like in-plane neighbours, and trains 4x
  faster on CPU. ``anisotropic=False`` uses 3x3x3 convs. The width doubles per level.
- Inference (no gradients) runs the same weights in a *slices-first* layout
  (:attr:`PyramidHead3D.slices_first`): the slice axis is moved next to the channels once,
  in-plane convolutions become 3D ones of depth 1 and cross-slice ones 2D convolutions over
  (slices, in-plane voxels) on a view, and the logits are moved back at the end. That drops
  the two full-resolution copies each in-plane convolution otherwise pays for stacking slices;
  the head ran 1.5x faster on one CPU thread (two 256 x 256 x 16 windows, same logits) and
  1.22-1.24x in a whole 512 x 512 x 150 case on two threads (docs/PERFORMANCE.md).
  Training keeps the stacked-2D path, whose backward is faster on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from volseg.models.registry import HEADS
from volseg.models.slicing import SLICING, along, check_feature_grid, slice_dim, tokens_to_grid


class _InPlane(nn.Module):
    """A 2D layer applied to every slice: ``(B, C, X, Y, Z) -> (B, C', X', Y', Z)`` (axial).

    On CPU a 2D convolution (and its backward) over stacked slices is 4-8x faster than the
    equivalent 3D one with a size-1 kernel on the slice axis, which falls back to a slow path.
    """

    def __init__(self, layer: nn.Module, slice_axis: str) -> None:
        super().__init__()
        self.layer = layer
        self.to_slices, self.to_volume = SLICING[slice_axis]

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.layer(rearrange(x, self.to_slices)), self.to_volume, b=x.shape[0])


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm3d(channels, affine=True), nn.GELU()]


def _conv(
    cin: int, cout: int, slice_axis: str, *, factorised: bool, stride: int = 1, kernel: int = 3
) -> nn.Sequential:
    """Conv + norm + GELU: in-plane ``k x k`` then cross-slice ``k`` (``factorised``), or a
    ``k x k x k`` conv; ``stride`` shrinks the in-plane axes only."""
    dim = slice_dim(slice_axis)
    if not factorised or kernel == 1:
        k = kernel if kernel == 1 else (kernel,) * 3
        conv = nn.Conv3d(cin, cout, k, along(dim, stride, 1), padding=kernel // 2, bias=False)
        if kernel == 1 and stride == 1:  # a 1x1x1 conv is the same per slice: the fast path
            conv = _InPlane(nn.Conv2d(cin, cout, 1, bias=False), slice_axis)
        return nn.Sequential(conv, *_norm_act(cout))
    plane = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)
    across = nn.Conv3d(cout, cout, along(dim, 1, kernel), padding=along(dim, 0, kernel // 2),
                       bias=False)  # fmt: skip
    return nn.Sequential(_InPlane(plane, slice_axis), *_norm_act(cout), across, *_norm_act(cout))


class _Block(nn.Module):
    """Two convolutions with a residual path around the second: ``y = a(x); y + b(y)``."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: Tensor) -> Tensor:
        y = self.first(x)
        return y + self.second(y)


def _slices_first(module: nn.Module, x: Tensor, dim: int) -> Tensor:
    """``module(x)`` for ``x`` in slices-first layout ``(B, C, S, A, B')`` (slice axis ``dim``
    of ``(X, Y, Z)`` moved to the front), the module's weights used as they are stored."""
    if isinstance(module, _Block):
        y = _slices_first(module.first, x, dim)
        return y + _slices_first(module.second, y, dim)
    if isinstance(module, nn.Sequential):
        for layer in module:
            x = _slices_first(layer, x, dim)
        return x
    if isinstance(module, _InPlane):  # a 2D conv per slice is a 3D conv with depth 1
        conv = module.layer
        return F.conv3d(x, conv.weight[:, :, None], conv.bias, (1, *conv.stride),
                        (0, *conv.padding))  # fmt: skip
    if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
        assert isinstance(module.padding, tuple)
        weight = module.weight.movedim(2 + dim, 2)
        stride, padding = _to_front(module.stride, dim), _to_front(module.padding, dim)
        if isinstance(module, nn.ConvTranspose3d):
            return F.conv_transpose3d(x, weight, module.bias, stride, padding)
        if weight.shape[3:] == (1, 1) and stride == (1, 1, 1):  # across slices only: a 2D
            b, _, n, h, w = x.shape  # conv over (slices, in-plane voxels), on a view
            flat = F.conv2d(x.reshape(b, -1, n, h * w), weight.flatten(3),
                            module.bias, 1, (padding[0], 0))  # fmt: skip
            return flat.view(b, -1, n, h, w)
        return F.conv3d(x, weight, module.bias, stride, padding)
    return module(x)  # norms, activations, dropout: layout-free


def _to_front(values: tuple[int, ...], dim: int) -> tuple[int, ...]:
    return (values[dim], *(v for d, v in enumerate(values) if d != dim))


@HEADS.register("pyramid")
class PyramidHead3D(nn.Module):
    """Voxel logits from an image pyramid fused with multi-block ViT features.

    Args:
        in_channels: feature channels ``F`` (``blocks * E`` for stacked blocks); 0 builds the
            same pyramid on the image alone (no ViT levels, same widths): the encoder-off
            ablation ``model.encoder.name=none model.head.name=pyramid``, whose ``features``
            are ignored.
        num_classes: ``K``, background included.
        image_channels: channels ``C_img`` of the image the encoder saw.
        channels: width ``c0`` at full resolution; level ``l`` is ``c0 * 2**l`` wide.
        depth: pyramid levels below full resolution (``L``; 3: full, 1/2, 1/4, 1/8).
        patch_size: ViT patch size.
        input_size: the encoder's input size (None: slices encoded at their own size).
        slice_axis: ``"axial"`` (Z), ``"coronal"`` (Y) or ``"sagittal"`` (X).
        anisotropic: in-plane + cross-slice kernel pairs instead of 3x3x3.
        dropout: channel dropout at the bottom level (training only).
        feature_blocks: how many ViT blocks ``in_channels`` stacks (informational: the
            projections read all channels).
        token_decoder: add a linear decoder's logits: a 1x1 conv classifies every token, its
            logits are resampled onto the image grid (linear) and added to the pyramid's.
        image_dropout: probability of dropping a sample's image path below full resolution in
            training (its levels ``1 .. L`` are zeroed where they meet the features).
        feature_dropout: probability of zeroing each feature value before the projections
            in training (inverted dropout; the token decoder reads the same dropped features).

    Attributes:
        slices_first: run inference (no gradients) in the slices-first layout (default True;
            same logits, see the module docstring); False runs the training path, e.g. to
            compare speed on a new device.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        image_channels: int = 1,
        channels: int = 16,
        depth: int = 3,
        patch_size: int = 14,
        input_size: int | None = None,
        slice_axis: str = "axial",
        anisotropic: bool = False,
        dropout: float = 0.0,
        feature_blocks: int = 1,
        token_decoder: bool = False,
        image_dropout: float = 0.0,
        feature_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (token_decoder or image_dropout or feature_dropout) and not in_channels:
            raise ValueError(
                "token_decoder, image_dropout and feature_dropout need features (in_channels > 0)"
            )
        if depth < 1:
            raise ValueError(f"pyramid head needs depth >= 1 level below full resolution: {depth}")
        self.patch_size, self.input_size, self.slice_axis = patch_size, input_size, slice_axis
        self.feature_blocks = feature_blocks
        self.slices_first = True
        dim = slice_dim(slice_axis)
        widths = [channels * 2**level for level in range(depth + 1)]
        self.widths = widths

        def conv(cin: int, cout: int, **kw) -> nn.Sequential:
            return _conv(cin, cout, slice_axis, factorised=anisotropic, **kw)

        self.stem = _Block(conv(image_channels, widths[0]), conv(widths[0], widths[0]))
        self.down = nn.ModuleList(
            _Block(conv(widths[i], widths[i + 1], stride=2), conv(widths[i + 1], widths[i + 1]))
            for i in range(depth)
        )
        # One 1x1 projection of the tokens for all levels (split per level after it).
        self.uses_features = in_channels > 0
        self.project = conv(in_channels, sum(widths[1:]), kernel=1) if in_channels else None
        has_vit = 1 if in_channels else 0  # ViT channels at a level, in units of its width
        bottom_in = (1 + has_vit) * widths[-1]
        self.bottom = _Block(conv(bottom_in, widths[-1]), conv(widths[-1], widths[-1]))
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        up = along(dim, 2, 1)
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(widths[i + 1], widths[i], up, stride=up, bias=False)
            for i in range(depth)
        )
        self.decode = nn.ModuleList(
            _Block(
                conv((2 + (has_vit if i > 0 else 0)) * widths[i], widths[i]),
                conv(widths[i], widths[i]),
            )
            for i in range(depth)
        )
        self.classify = nn.Conv3d(widths[0], num_classes, 1)
        self.image_dropout = image_dropout
        self.feature_dropout = nn.Dropout(feature_dropout) if feature_dropout else nn.Identity()
        self.token_logits = (
            _InPlane(nn.Conv2d(in_channels, num_classes, 1), slice_axis) if token_decoder else None
        )

    def forward(self, features: Tensor, image: Tensor) -> Tensor:
        """Segment.

        Args:
            features: ``(B, F, x, y, z)`` on the token grid of ``image``
                (:func:`~volseg.models.slicing.feature_grid` with the encoder's input size).
            image: ``(B, C_img, X, Y, Z)``, the full-resolution input the encoder saw.

        Returns:
            Logits ``(B, K, X, Y, Z)``.
        """
        size = tuple(image.shape[2:])
        if self.project is None:  # the encoder-off ablation: the image alone
            vit: list[Tensor | None] = [None] * (len(self.widths) - 1)
            return self._run(image, vit)
        check_feature_grid(features, size, self.slice_axis, self.patch_size, self.input_size)
        features = self.feature_dropout(features)
        projected = self.project(features).split(self.widths[1:], dim=1)
        vit = [
            tokens_to_grid(
                tokens,
                size,
                self.slice_axis,
                patch_size=self.patch_size,
                input_size=self.input_size,
                stride=2**level,
            )
            for level, tokens in enumerate(projected, start=1)
        ]
        logits = self._run(image, vit)
        if self.token_logits is None:
            return logits
        tokens = self.token_logits(features)
        return logits + tokens_to_grid(
            tokens, size, self.slice_axis, patch_size=self.patch_size, input_size=self.input_size
        )

    def _run(self, image: Tensor, vit: list[Tensor | None]) -> Tensor:
        """The U-Net in the layout for this call: stacked slices when training, else
        slices-first."""
        if torch.is_grad_enabled() or not self.slices_first:
            return self._forward(image, vit, lambda module, x: module(x))
        dim = 2 + slice_dim(self.slice_axis)
        logits = self._forward(
            image.movedim(dim, 2),
            [None if v is None else v.movedim(dim, 2) for v in vit],
            lambda module, x: _slices_first(module, x, dim - 2),
        )
        return logits.movedim(2, dim)

    def _forward(self, image: Tensor, vit: list[Tensor | None], run) -> Tensor:
        """The U-Net on ``image`` with the ViT levels ``vit`` (None: none at that level);
        ``run(module, x)`` applies a layer (plainly, or in the slices-first layout)."""
        skips = [run(self.stem, image)]
        for down in self.down:
            skips.append(run(down, skips[-1]))
        if self.training and self.image_dropout > 0:  # coarse levels from the features alone
            keep = torch.rand(image.shape[0], 1, 1, 1, 1, device=image.device)
            keep = (keep >= self.image_dropout).to(image.dtype)
            skips[1:] = [skip * keep for skip in skips[1:]]
        x = self.dropout(run(self.bottom, _cat(skips[-1], vit[-1])))
        for level in reversed(range(len(self.up))):
            skip = skips[level]
            sx, sy, sz = skip.shape[2:]
            x = run(self.up[level], x)[:, :, :sx, :sy, :sz]  # a level's odd size was rounded up
            extra = vit[level - 1] if level > 0 else None
            x = run(self.decode[level], _cat(x, skip, extra))
        return run(self.classify, x)


def _cat(*parts: Tensor | None) -> Tensor:
    """Channel concatenation of the parts that are there."""
    present = [p for p in parts if p is not None]
    return present[0] if len(present) == 1 else torch.cat(present, dim=1)
