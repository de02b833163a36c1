"""MONAI baselines (UNet, SwinUNETR) that the same engine trains, predicts and benchmarks.

A baseline is a head over the identity encoder ``none``: the "features" are the image itself
(``patch_size`` 1), and the head runs a whole MONAI network on them. So a baseline goes through
exactly the code a volseg model does — transforms, losses, checkpoints, sliding windows over
slabs of slices, metrics — and a benchmark compares architectures, not pipelines::

    model.encoder.name=none model.head.name=monai_unet

Networks need sizes divisible by their total downsampling (16 for the UNet, 32 for
SwinUNETR); the heads pad at the high end (to at least twice that) and crop back, so any
volume and slab size works.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from volseg.config.schema import EncoderConfig
from volseg.errors import VolsegError
from volseg.models.registry import ENCODERS, HEADS
from volseg.models.slicing import slice_dim


@ENCODERS.register("none")
class IdentityEncoder(nn.Module):
    """No encoder: the image is its own feature volume (for the MONAI baselines).

    Its "features" are never cached (``cacheable`` is False), so a baseline trains with the
    full augmentation pipeline.
    """

    patch_size = 1
    input_size = None  # the image is never resized
    cacheable = False

    def __init__(self, cfg: EncoderConfig, in_channels: int = 1) -> None:
        super().__init__()
        self.slice_axis = cfg.slice_axis
        slice_dim(self.slice_axis)
        self.embed_dim = self.out_channels = in_channels
        self.chunk = cfg.chunk
        if cfg.mode != "frozen" or cfg.weights is not None:
            raise VolsegError(
                "model.encoder.name=none (no encoder) takes no weights and no adaptation "
                "mode: leave model.encoder.weights null and model.encoder.mode frozen"
            )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, X, Y, Z)`` -> the same tensor."""
        return x


class _PaddedNet(nn.Module):
    """Run ``net`` on features padded to a multiple of ``factor``; crop the logits back.

    Every axis is padded to at least ``2 * factor`` so the bottleneck keeps more than one
    voxel (instance norm needs two).
    """

    def __init__(self, net: nn.Module, factor: int) -> None:
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, features: Tensor, image: Tensor | None = None) -> Tensor:
        size = features.shape[2:]
        pad: list[int] = []
        for n in reversed(size):
            pad += [0, max(n + -n % self.factor, 2 * self.factor) - n]
        logits = self.net(F.pad(features, pad))
        return logits[:, :, : size[0], : size[1], : size[2]]


def _require_identity(in_channels: int, image_channels: int, patch_size: int, name: str) -> None:
    if patch_size != 1 or in_channels != image_channels:
        raise VolsegError(
            f"model.head.name={name} is a whole MONAI network: use it with model.encoder.name=none"
        )


@HEADS.register("monai_unet")
def monai_unet(
    in_channels: int,
    num_classes: int,
    *,
    image_channels: int = 1,
    channels: int = 16,
    depth: int = 2,
    dropout: float = 0.0,
    patch_size: int = 1,
    input_size: int | None = None,
    feature_blocks: int = 1,
    slice_axis: str = "axial",
    anisotropic: bool = True,
) -> nn.Module:
    """MONAI ``UNet``: 5 levels, widths ``channels * (1, 2, 4, 8, 16)``, ``depth`` residual units.

    ``slice_axis``, ``anisotropic``, ``input_size`` and ``feature_blocks`` (part of every
    segmentation head's call) do not apply: the network is isotropic 3D over the image.
    """
    from monai.networks.nets import UNet

    _require_identity(in_channels, image_channels, patch_size, "monai_unet")
    net = UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=[channels * 2**i for i in range(5)],
        strides=[2, 2, 2, 2],
        num_res_units=depth,
        dropout=dropout,
    )
    return _PaddedNet(net, 16)


@HEADS.register("monai_swinunetr")
def monai_swinunetr(
    in_channels: int,
    num_classes: int,
    *,
    image_channels: int = 1,
    channels: int = 24,
    dropout: float = 0.0,
    patch_size: int = 1,
    input_size: int | None = None,
    feature_blocks: int = 1,
    slice_axis: str = "axial",
    depth: int = 2,
    anisotropic: bool = True,
) -> nn.Module:
    """MONAI ``SwinUNETR`` with feature size ``channels`` (a multiple of 12).

    ``slice_axis``, ``depth``, ``anisotropic``, ``input_size`` and ``feature_blocks`` do not
    apply (SwinUNETR's own depths are used, over the image).
    """
    from monai.networks.nets import SwinUNETR

    _require_identity(in_channels, image_channels, patch_size, "monai_swinunetr")
    if channels % 12:
        raise VolsegError(
            f"model.head.channels must be a multiple of 12 for SwinUNETR, got {channels}"
        )
    net = SwinUNETR(
        in_channels=in_channels, out_channels=num_classes, feature_size=channels, drop_rate=dropout
    )
    return _PaddedNet(net, 32)
