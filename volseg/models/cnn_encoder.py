"""Any timm backbone as a slice encoder: CNNs (ResNet, DenseNet, VGG, ...) through one path.

A CNN slice encoder is a :class:`~volseg.models.encoder.SliceEncoder` whose network is a timm
CNN read with ``forward_intermediates``: slices are mapped to RGB and normalised exactly as for
the ViT, then the outputs of the chosen feature *levels* (timm's ``feature_info``: ResNet and
DenseNet have 5, at strides 2..32; VGG 6, at strides 1..32) are put on one grid and
concatenated along channels. That grid has the stride ``p`` of the finest chosen level, so the
encoder exposes ``patch_size = p`` and the heads treat the grid like a ViT's token grid: cell
``i`` covers resized pixels ``[p i, p (i + 1))``. Coarser levels are repeated (nearest) onto
it, so a cell only takes the coarse cell that covers it. Slices are padded (mean colour) to a
multiple of the coarsest stride so every level tiles the slice exactly, and the grid is then
cropped to ``ceil(n / p)`` cells.

A timm VisionTransformer name (e.g. ``vit_base_patch16_224.augreg_in21k``) builds the ViT
:class:`SliceEncoder` instead. Nothing is ever downloaded: weights come from a local file
(``model.encoder.weights``), else they are random.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import vision_transformer as vt
from torch import Tensor, nn

from volseg.config.schema import EncoderConfig
from volseg.errors import VolsegError
from volseg.models.encoder import CHANNEL_ADAPTERS, SliceEncoder, _block_indices, _check_choice
from volseg.models.registry import ENCODERS
from volseg.models.throughput import check_chunk

# The backbones of the seed papers' grids, listed by `volseg models`; any other timm name works.
BACKBONES = {
    "ResNet-50": "resnet50",
    "ResNet-152": "resnet152",
    "DenseNet-121": "densenet121",
    "DenseNet-201": "densenet201",
    "VGG-16": "vgg16",
    "VGG-19": "vgg19",
    "ViT-B/16 IN-21k": "vit_base_patch16_224.augreg_in21k",
}
log = logging.getLogger(__name__)
DEFAULT_LEVELS = (-2, -1)  # strides 16 and 32: a stride-16 grid, like a ViT-B/16's tokens
_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "head_drop.", "pre_logits.", "global_pool.")


def is_timm_vit(name: str) -> bool:
    """True when timm model ``name`` is a plain VisionTransformer (built on the meta device)."""
    with torch.device("meta"):
        model = _create(name, num_classes=0)
    return isinstance(model, vt.VisionTransformer)


def _create(name: str, **kwargs) -> nn.Module:
    if not timm.is_model(name):
        raise VolsegError(
            f"encoder name {name!r} is not a timm model; use e.g. vit_small_patch14_dinov2, "
            f"resnet50, densenet121 or vgg16 (see `volseg models`)"
        )
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (RuntimeError, TypeError, ValueError) as err:
        raise VolsegError(f"encoder name {name!r} is not a usable timm model ({err})") from err


class CnnSliceEncoder(SliceEncoder):
    """A timm CNN run over every slice of a volume, its levels on one grid (module docstring).

    Args:
        name: timm CNN name with ``forward_intermediates`` (resnet50, densenet121, vgg16, ...).
        weights: a local timm/torchvision state dict (``.pth/.safetensors``) or HuggingFace
            folder (``config.json`` + ``model.safetensors``/``pytorch_model.bin``); None keeps
            random weights.
        layers: feature-level indices (negative from the end); default the two deepest.
            Levels are always concatenated (their widths differ), so ``fusion`` is ignored.
        Other arguments as :class:`SliceEncoder`.

    Attributes:
        vit: the timm CNN (named like the ViT's, for the shared adaptation/checkpoint code).
        reductions: stride of each chosen level; ``patch_size`` is the smallest.
        level_channels: width of each chosen level; ``out_channels`` is their sum.
    """

    def __init__(
        self,
        name: str,
        *,
        weights: str | Path | None = None,
        in_channels: int = 1,
        slice_axis: str = "axial",
        chunk: int | str = "auto",
        layers: Sequence[int] | None = None,
        channel_adapter: str = "repeat",
        input_size: int | None = None,
    ) -> None:
        nn.Module.__init__(self)
        from volseg.models.slicing import slice_dim

        slice_dim(slice_axis)
        _check_choice("channel_adapter", channel_adapter, CHANNEL_ADAPTERS)
        check_chunk(chunk)
        if channel_adapter == "repeat" and in_channels != 1:
            raise VolsegError(
                f"channel_adapter 'repeat' needs 1 input channel (got {in_channels}): set "
                "channel_adapter: learned, or encode each modality alone (encode_modalities)"
            )
        net = _create(name, num_classes=0)
        if not hasattr(net, "forward_intermediates") or not getattr(net, "feature_info", None):
            raise VolsegError(
                f"encoder name {name!r}: this timm model has no forward_intermediates; use a "
                "ResNet, DenseNet, VGG, ConvNeXt, EfficientNet or a ViT"
            )
        info = list(net.feature_info)
        if layers is not None and any(not -len(info) <= i < len(info) for i in layers):
            # a ViT recipe's block indices (e.g. [2, 5, 8, 11]) say nothing about CNN levels
            log.warning(
                "encoder %s has %d feature levels: layers %s are ViT blocks, using levels %s",
                name, len(info), list(layers), list(DEFAULT_LEVELS),
            )  # fmt: skip
            layers = None
        self.layers = _block_indices(DEFAULT_LEVELS if layers is None else layers, len(info))
        self.reductions = tuple(int(info[i]["reduction"]) for i in self.layers)
        self.level_channels = tuple(int(info[i]["num_chs"]) for i in self.layers)
        net.prune_intermediate_layers(list(self.layers), prune_head=True)
        self.vit = net
        if weights is not None:
            load_cnn_weights(net, name, weights)

        self.name, self.in_channels, self.slice_axis = name, in_channels, slice_axis
        self.chunk = chunk
        self.resolved_chunk: int | None = None
        self.compiled = False
        self.patch_size = min(self.reductions)
        if input_size is not None and input_size < max(self.reductions):
            raise VolsegError(
                f"encoder input_size must be >= {max(self.reductions)} for {name} or native "
                f"(got {input_size})"
            )
        self.input_size = input_size
        self.embed_dim = self.out_channels = sum(self.level_channels)
        self.stack, self.fuse = True, None  # levels concatenated by SliceEncoder._encode_slices
        self.adaptation = "full"
        cfg = getattr(net, "pretrained_cfg", None) or {}
        mean = cfg.get("mean", IMAGENET_DEFAULT_MEAN)
        std = cfg.get("std", IMAGENET_DEFAULT_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.adapter: nn.Conv2d | None = None
        if channel_adapter == "learned":
            self.adapter = nn.Conv2d(in_channels, 3, kernel_size=1)
            nn.init.constant_(self.adapter.weight, 1.0 / in_channels)
            nn.init.zeros_(self.adapter.bias)

    def _vit_maps(self, rgb: Tensor) -> list[Tensor]:
        return self.level_maps(rgb)

    def level_maps(self, rgb: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` (H, W multiples of ``patch_size``) -> levels on the ``H/p`` grid."""
        p, coarse = self.patch_size, max(self.reductions)
        h, w = rgb.shape[-2] // p, rgb.shape[-1] // p
        rgb = F.pad(rgb, (0, -rgb.shape[-1] % coarse, 0, -rgb.shape[-2] % coarse))
        grid = (rgb.shape[-2] // p, rgb.shape[-1] // p)
        maps = self.vit.forward_intermediates(
            rgb, indices=list(self.layers), intermediates_only=True, stop_early=True
        )
        out = []
        for m in maps:
            if tuple(m.shape[-2:]) != grid:
                m = F.interpolate(m, size=grid, mode="nearest")
            out.append(m[..., :h, :w])
        return out


def load_cnn_weights(model: nn.Module, name: str, source: str | Path) -> int:
    """Fill ``model`` (a pruned, head-less timm CNN) from a local file or folder, strictly.

    Classifier tensors (``fc``, ``classifier``, ``head``, ``pre_logits``) and those of levels
    the encoder pruned are dropped; every remaining model tensor must be present with its shape.

    Returns:
        The number of tensors loaded.

    Raises:
        VolsegError: no such file, unreadable file, or tensors that do not fit (one line).
    """
    from volseg.models.weights import _hf_weight_files, _read_file, _unwrap

    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise VolsegError(f"encoder weights {path}: no config.json in the folder")
        state: dict[str, Tensor] = {}
        for file in _hf_weight_files(path):
            state.update(_unwrap(_read_file(file)))
    elif path.is_file():
        state = dict(_unwrap(_read_file(path)))
    else:
        raise VolsegError(
            f"encoder weights {source}: no such file or folder; pass a local timm/torchvision "
            ".pth/.safetensors state dict or a HuggingFace folder (downloads are off)"
        )
    # torchvision's DenseNet files name norm.1 what timm names norm1
    state = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.", r"\1\2.", k): v
             for k, v in state.items()}  # fmt: skip
    with torch.device("meta"):
        full = set(_create(name, num_classes=0).state_dict())
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in full]
    shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shape))
        if keys
    ]
    if problems:
        raise VolsegError(
            f"encoder weights {source} do not fit the encoder {name}: {'; '.join(problems)}; "
            "pick the encoder name matching the checkpoint"
        )
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    return len(expected)


def build_timm_encoder(cfg: EncoderConfig, in_channels: int = 1) -> SliceEncoder:
    """The slice encoder for any timm name: a ViT :class:`SliceEncoder` or a CNN one."""
    size = None if cfg.input_size == "native" else cfg.input_size
    common = dict(
        weights=cfg.weights,
        in_channels=in_channels,
        slice_axis=cfg.slice_axis,
        chunk=cfg.chunk,
        layers=cfg.layers,
        channel_adapter=cfg.channel_adapter,
        input_size=size,
    )
    if is_timm_vit(cfg.name):
        return SliceEncoder(cfg.name, fusion=cfg.fusion, **common)
    if cfg.fusion == "concat":
        raise VolsegError(
            f"encoder fusion 'concat' is for ViT blocks; the {cfg.name} levels are always "
            "concatenated: leave model.encoder.fusion at mean or stack"
        )
    return CnnSliceEncoder(cfg.name, **common)


def build_encoder(cfg: EncoderConfig, in_channels: int = 1) -> nn.Module:
    """A registered encoder by name, else any timm model through :func:`build_timm_encoder`."""
    if cfg.name in ENCODERS.names() or not timm.is_model(cfg.name):
        return ENCODERS.build(cfg.name, cfg=cfg, in_channels=in_channels)
    return build_timm_encoder(cfg, in_channels)


for _label, _name in BACKBONES.items():
    ENCODERS.register(_name)(build_timm_encoder)
