"""SliceEncoder: a timm DINOv2 ViT applied to every 2D slice of a volume.

A volume batch ``(B, C, X, Y, Z)`` (MONAI order, after ``Orientationd("RAS")``) is cut into
whole slices along the slice axis, each slice is mapped to 3 normalised RGB channels, resized to
the encoder's ``input_size`` (optional), padded to a multiple of the patch size and encoded; the
patch tokens are put back into a feature volume that keeps the axis order ``(X, Y, Z)``: the
slice axis keeps full resolution, the two in-plane axes hold the token grid
(:func:`~volseg.models.slicing.feature_grid`; without scaling ``ceil(n / 14)``).

Conventions:

- Input intensities are expected scaled to ``[0, 1]`` (CT windowed, MRI normalised); the
  encoder applies its own ImageNet mean/std (from timm's ``pretrained_cfg``) after mapping the
  channels to RGB.
- Resizing (``input_size``: the longer in-plane side becomes that many pixels, aspect kept,
  bilinear) and padding happen *after* normalisation. Padding is at the high end of both
  in-plane axes, with zeros: the padded pixels hold the normalised value 0, i.e. the ImageNet
  mean colour, the most neutral input a DINOv2 has seen. Patch ``i`` covers resized pixels
  ``[14 i, 14 (i + 1))``; :mod:`volseg.models.slicing` maps tokens back onto voxels.
- Slices are never cropped: DINOv2 attends globally inside an image, so a slice is one image.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from einops import rearrange
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import register_model
from timm.models import vision_transformer as vt
from torch import Tensor, nn

from volseg.config.schema import EncoderConfig
from volseg.errors import VolsegError
from volseg.models.registry import ENCODERS
from volseg.models.slicing import SLICING, feature_grid, resize_slices, slice_dim
from volseg.models.throughput import check_chunk, chunk_size, compile_failed, is_compile_error

__all__ = ["SliceEncoder", "build_vit"]  # timm's register_model appends the test-size ViTs

CHANNEL_ADAPTERS = ("repeat", "learned")
FUSIONS = ("mean", "concat", "stack")

_TINY = dict(embed_dim=48, depth=3, num_heads=2)  # DINOv2-S blocks, a CPU-test size


def _tiny_cfg(name: str) -> dict:
    return dict(
        architecture=name,
        url="",
        hf_hub_id=None,
        num_classes=0,
        input_size=(3, 518, 518),
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        interpolation="bicubic",
        crop_pct=1.0,
        fixed_input_size=True,
        first_conv="patch_embed.proj",
        classifier="head",
    )


@register_model
def vit_test_patch14_dinov2(pretrained: bool = False, **kwargs) -> vt.VisionTransformer:
    """DINOv2 ViT-S/14 architecture at test size (48 wide, 3 blocks, 2 heads); no weights."""
    if pretrained:
        raise ValueError("vit_test_patch14_dinov2 has no pretrained weights")
    kwargs["pretrained_cfg"] = _tiny_cfg("vit_test_patch14_dinov2")
    return vt.vit_small_patch14_dinov2(pretrained=False, **{**_TINY, **kwargs})


@register_model
def vit_test_patch14_reg4_dinov2(pretrained: bool = False, **kwargs) -> vt.VisionTransformer:
    """DINOv2 ViT-S/14 with 4 registers at test size (48 wide, 3 blocks, 2 heads); no weights."""
    if pretrained:
        raise ValueError("vit_test_patch14_reg4_dinov2 has no pretrained weights")
    kwargs["pretrained_cfg"] = _tiny_cfg("vit_test_patch14_reg4_dinov2")
    return vt.vit_small_patch14_reg4_dinov2(pretrained=False, **{**_TINY, **kwargs})


def build_vit(name: str, img_size: int | None = None) -> vt.VisionTransformer:
    """Randomly initialised timm ViT ``name`` with dynamic input size and no classifier.

    ``img_size`` (default: the model's native size, 518 for DINOv2) only sets the size of the
    stored position-embedding grid, so checkpoints load unchanged; any input size works.

    Raises:
        VolsegError: ``name`` is not a timm model, or not a plain VisionTransformer.
    """
    extra = {} if img_size is None else {"img_size": img_size}
    try:
        vit = timm.create_model(
            name, pretrained=False, num_classes=0, dynamic_img_size=True, **extra
        )
    except (RuntimeError, TypeError, ValueError) as err:
        raise VolsegError(
            f"encoder name {name!r} is not a usable timm model ({err}); use e.g. "
            "vit_small_patch14_dinov2 or vit_base_patch14_reg4_dinov2"
        ) from err
    if not isinstance(vit, vt.VisionTransformer):
        raise VolsegError(f"encoder name {name!r} is not a timm VisionTransformer; use a DINOv2")
    return vit


class SliceEncoder(nn.Module):
    """A 2D ViT run over every slice of a volume, giving a feature volume.

    Args:
        name: timm model name, e.g. ``vit_small_patch14_dinov2``, ``vit_base_patch14_reg4_dinov2``
            or the CPU-test size ``vit_test_patch14_dinov2``.
        weights: local file/folder or hub name loaded with
            :func:`~volseg.models.weights.load_encoder_weights`; None keeps random weights.
        in_channels: channels C of the input volume.
        slice_axis: ``"axial"`` (slices along Z), ``"coronal"`` (Y) or ``"sagittal"`` (X).
        chunk: slices per ViT call, or ``"auto"``: sized from free GPU memory when no gradient
            flows through the ViT, else 32 (:mod:`volseg.models.throughput`); bounds memory,
            does not change the result.
        layers: block indices whose outputs are fused (negative counts from the end); None uses
            the last block. Every block output goes through the final LayerNorm first.
        fusion: how several ``layers`` are fused: ``"mean"`` (average, no parameters),
            ``"concat"`` (concatenate, then a learned 1x1 projection back to E, initialised to
            the average) or ``"stack"`` (concatenate and keep: ``len(layers) * E`` channels,
            block by block, for multi-scale heads).
        channel_adapter: ``"repeat"`` copies a single channel to RGB; ``"learned"`` is a
            ``Conv2d(C, 3, 1)`` initialised to the channel mean repeated (exactly ``"repeat"``
            for C = 1). Both are followed by the ImageNet normalisation.
        img_size: size of the stored position-embedding grid; default the model's native size.
        input_size: pixels of the longer in-plane side the ViT sees (slices are resized, aspect
            kept); None encodes slices at their own size.

    Attributes:
        vit: the timm VisionTransformer.
        embed_dim: width E of one block's features.
        out_channels: feature channels, E (or ``len(layers) * E`` with ``fusion="stack"``).
        patch_size: in-plane shrink factor (14 for DINOv2).
        adaptation: training mode set by :func:`~volseg.models.adapt.apply_adaptation`
            (``"full"`` until then).
        resolved_chunk: the chunk the last forward used (an int; None before any forward).
        compiled: the ViT blocks are compiled (:func:`~volseg.models.throughput.compile_encoder`).
    """

    def __init__(
        self,
        name: str = "vit_small_patch14_dinov2",
        *,
        weights: str | Path | None = None,
        in_channels: int = 1,
        slice_axis: str = "axial",
        chunk: int | str = "auto",
        layers: Sequence[int] | None = None,
        fusion: str = "mean",
        channel_adapter: str = "repeat",
        img_size: int | None = None,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        slice_dim(slice_axis)  # raises for an unknown axis
        _check_choice("fusion", fusion, FUSIONS)
        _check_choice("channel_adapter", channel_adapter, CHANNEL_ADAPTERS)
        check_chunk(chunk)
        if input_size is not None and input_size < 14:
            raise VolsegError(f"encoder input_size must be >= 14 or native (got {input_size})")
        if channel_adapter == "repeat" and in_channels != 1:
            raise VolsegError(
                f"channel_adapter 'repeat' needs 1 input channel (got {in_channels}): set "
                "channel_adapter: learned, or encode each modality alone (encode_modalities)"
            )
        self.vit = build_vit(name, img_size)
        if weights is not None:
            from volseg.models.weights import load_encoder_weights

            load_encoder_weights(self.vit, weights)

        self.name = name
        self.in_channels = in_channels
        self.slice_axis = slice_axis
        self.chunk = chunk
        self.resolved_chunk: int | None = None
        self.compiled = False
        self.input_size = input_size
        self.embed_dim = int(self.vit.embed_dim)
        self.patch_size = int(self.vit.patch_embed.patch_size[0])
        self.layers = _block_indices(layers, len(self.vit.blocks))
        self.stack = fusion == "stack"
        self.out_channels = self.embed_dim * (len(self.layers) if self.stack else 1)
        self.adaptation = "full"

        cfg = self.vit.pretrained_cfg or {}
        mean = cfg.get("mean", IMAGENET_DEFAULT_MEAN)
        std = cfg.get("std", IMAGENET_DEFAULT_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

        self.adapter: nn.Conv2d | None = None
        if channel_adapter == "learned":
            self.adapter = nn.Conv2d(in_channels, 3, kernel_size=1)
            nn.init.constant_(self.adapter.weight, 1.0 / in_channels)
            nn.init.zeros_(self.adapter.bias)

        self.fuse: nn.Conv2d | None = None
        if fusion == "concat" and len(self.layers) > 1:
            n, e = len(self.layers), self.embed_dim
            self.fuse = nn.Conv2d(n * e, e, kernel_size=1)
            with torch.no_grad():  # start as the average of the layers
                self.fuse.weight.copy_(torch.eye(e).repeat(1, n).view(e, n * e, 1, 1) / n)
                self.fuse.bias.zero_()

    @property
    def chunk(self) -> int | str:
        """Slices per ViT call: an int >= 1, or ``"auto"`` (see the class docstring)."""
        return self._chunk

    @chunk.setter
    def chunk(self, value: int | str) -> None:
        self._chunk = check_chunk(value)

    @property
    def cacheable(self) -> bool:
        """True when nothing in the encoder trains, so its features may be computed once."""
        return not any(p.requires_grad for p in self.parameters())

    def train(self, mode: bool = True) -> SliceEncoder:
        """Set training mode; a frozen ViT stays in eval mode whatever the parent asks."""
        super().train(mode)
        if self.adaptation == "frozen":
            self.vit.eval()
        return self

    def feature_shape(self, spatial_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """Feature-volume shape ``(F, x, y, z)`` for an input of spatial shape ``(X, Y, Z)``."""
        grid = feature_grid(spatial_shape, self.slice_axis, self.patch_size, self.input_size)
        return (self.out_channels, *grid)

    def forward(self, x: Tensor) -> Tensor:
        """Encode every slice of ``x``.

        Args:
            x: ``(B, C, X, Y, Z)`` intensities scaled to ``[0, 1]``.

        Returns:
            ``(B, F, *feature_shape((X, Y, Z))[1:])``, e.g. ``(B, E, ceil(X/14), ceil(Y/14), Z)``
            for axial slicing without input scaling.

        Raises:
            VolsegError: ``x`` is not 5D or has a channel count other than ``in_channels``.
        """
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise VolsegError(
                f"encoder input must be (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}; "
                "check the number of input channels/modalities in the config"
            )
        if not x.is_floating_point():
            x = x.float()
        to_slices, to_volume = SLICING[self.slice_axis]
        slices = rearrange(x, to_slices)
        track = torch.is_grad_enabled() and (
            slices.requires_grad or any(p.requires_grad for p in self._input_path_params())
        )
        self.resolved_chunk = chunk = chunk_size(self, slices, tracked=track)
        feats = torch.cat([self._encode_slices(s, track) for s in slices.split(chunk)], dim=0)
        return rearrange(feats, to_volume, b=x.shape[0])

    def encode_modalities(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Encode each modality with this one shared encoder.

        Args:
            inputs: modality name -> ``(B, 1, X, Y, Z)``; any subset of modalities.

        Returns:
            modality name -> ``(B, E, x, y, z)`` features, same keys as ``inputs``.
        """
        if self.in_channels != 1:
            raise VolsegError(
                f"encode_modalities needs an encoder with in_channels=1 (got {self.in_channels})"
            )
        return {name: self(volume) for name, volume in inputs.items()}

    def _input_path_params(self) -> Iterator[nn.Parameter]:
        yield from self.vit.parameters()
        if self.adapter is not None:
            yield from self.adapter.parameters()

    def _encode_slices(self, slices: Tensor, track: bool) -> Tensor:
        """``(N, C, H, W)`` slices -> ``(N, F, h', w')`` patch features (the token grid)."""
        with torch.set_grad_enabled(track):  # frozen: no graph, features are cacheable
            maps = self._vit_maps(self.vit_input(slices))
        if len(maps) == 1:
            return maps[0]
        if self.stack:
            return torch.cat(maps, dim=1)
        if self.fuse is not None:
            return self.fuse(torch.cat(maps, dim=1))
        return torch.stack(maps).mean(dim=0)

    def vit_input(self, slices: Tensor) -> Tensor:
        """``(N, C, H, W)`` slices -> ``(N, 3, h, w)`` normalised RGB, resized and padded to a
        multiple of the patch size: exactly what the ViT sees (``volseg probe`` reads its
        class tokens from the same input)."""
        # Resizing is linear and weights sum to 1, so it commutes with the adapter and the
        # normalisation: resize the C input channels, not the 3 RGB ones.
        slices = resize_slices(slices, self.input_size)
        rgb = self.adapter(slices) if self.adapter is not None else slices.expand(-1, 3, -1, -1)
        rgb = (rgb - self.mean) / self.std
        h, w = rgb.shape[-2:]
        p = self.patch_size
        return F.pad(rgb, (0, -w % p, 0, -h % p))  # zeros after normalisation = mean colour

    def _vit_maps(self, rgb: Tensor) -> list[Tensor]:
        """The normalised ``(N, E, h', w')`` outputs of the blocks in ``layers``."""
        n = rgb.shape[0]
        if self.compiled and n == 1:  # a batch of 1 would compile a second graph
            rgb = torch.cat([rgb, rgb])
        try:
            maps = self.vit.forward_intermediates(
                rgb,
                indices=list(self.layers),
                norm=True,
                stop_early=True,
                output_fmt="NCHW",
                intermediates_only=True,
            )
        except Exception as err:
            if self.compiled and is_compile_error(err):
                raise compile_failed(err) from err
            raise
        return [m[:n] for m in maps] if rgb.shape[0] != n else maps


def _check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise VolsegError(f"encoder {key} {value!r} is not one of {', '.join(choices)}")


def _block_indices(layers: Sequence[int] | None, depth: int) -> tuple[int, ...]:
    """Block indices in ``[0, depth)``, negatives counted from the end, sorted, unique."""
    if layers is None:
        return (depth - 1,)
    if len(layers) == 0 or any(not -depth <= i < depth for i in layers):
        raise VolsegError(
            f"encoder layers {list(layers)} must be block indices in [-{depth}, {depth - 1}]"
        )
    return tuple(sorted({i % depth for i in layers}))


# Embedding width of every DINOv2 architecture volseg builds by name (patch size 14).
DINOV2_EMBED_DIMS = {
    "vit_small_patch14_dinov2": 384,
    "vit_base_patch14_dinov2": 768,
    "vit_large_patch14_dinov2": 1024,
    "vit_giant_patch14_dinov2": 1536,
    "vit_small_patch14_reg4_dinov2": 384,
    "vit_base_patch14_reg4_dinov2": 768,
    "vit_large_patch14_reg4_dinov2": 1024,
    "vit_giant_patch14_reg4_dinov2": 1536,
    "vit_test_patch14_dinov2": _TINY["embed_dim"],
    "vit_test_patch14_reg4_dinov2": _TINY["embed_dim"],
}


def _dinov2_builder(name: str):
    def build(cfg: EncoderConfig, in_channels: int = 1) -> SliceEncoder:
        return SliceEncoder(
            name,
            weights=cfg.weights,
            in_channels=in_channels,
            slice_axis=cfg.slice_axis,
            chunk=cfg.chunk,
            layers=cfg.layers,
            fusion=cfg.fusion,
            channel_adapter=cfg.channel_adapter,
            input_size=None if cfg.input_size == "native" else cfg.input_size,
        )

    build.__qualname__ = f"dinov2_encoder[{name}]"
    return build


for _name in DINOV2_EMBED_DIMS:
    ENCODERS.register(_name)(_dinov2_builder(_name))
