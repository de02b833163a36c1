"""A whole model from config: slice encoder + head, for segmentation or grading.

``volseg train`` and ``volseg predict`` both call :func:`build_model`. Encoders and heads are
looked up by name in :data:`~volseg.models.registry.ENCODERS` and
:data:`~volseg.models.registry.HEADS`, so a new one is a single decorated function:

- an encoder builder takes ``(cfg: EncoderConfig, in_channels: int)`` and returns a module with
  ``embed_dim``, ``patch_size``, ``slice_axis``, ``cacheable`` and
  ``forward((B, C, X, Y, Z)) -> (B, E, x, y, z)`` (see :class:`SliceEncoder`);
- a segmentation head is called with ``in_channels, num_classes, image_channels, channels,
  depth, anisotropic, dropout, patch_size, input_size, feature_blocks, slice_axis`` and maps
  ``(features, image) -> (B, K, X, Y, Z)`` logits;
- a grading head is called with ``in_channels, num_classes, modalities, hidden, dropout,
  modality_dropout, patch_size, input_size, slice_axis`` and maps ``(features per modality,
  mask, present)`` to a :class:`~volseg.models.cls_head.GradeOutput`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn

from volseg.config.schema import ModelConfig
from volseg.errors import VolsegError

# ENCODERS and HEADS members register themselves on import: these modules (build_model reaches
# them only through the registries), cls_head and encoder.
from volseg.models import baselines, pool_head, pyramid_head, seg_head, size_head  # noqa: F401
from volseg.models.adapt import apply_adaptation
from volseg.models.cls_head import GradeOutput
from volseg.models.cnn_encoder import BACKBONES, build_encoder
from volseg.models.encoder import DINOV2_EMBED_DIMS, SliceEncoder
from volseg.models.registry import HEADS, count_parameters

log = logging.getLogger(__name__)

# Heads that, with no encoder (``model.encoder.name=none``), are built without their feature
# inputs: the same head on the image alone, the row that says what the encoder contributes.
IMAGE_ONLY_HEADS = ("pyramid",)
# heads of one task, refused for the other (a newly registered head is not checked)
GRADING_HEADS = ("mil", "pool", "size")
SEGMENTATION_HEADS = ("pyramid", "seg3d", "monai_unet", "monai_swinunetr")

VIT_SIZES = {
    "ViT-S/14": "vit_small_patch14_dinov2",
    "ViT-B/14": "vit_base_patch14_dinov2",
    "ViT-L/14": "vit_large_patch14_dinov2",
    "ViT-g/14": "vit_giant_patch14_dinov2",
}


class SegmentationModel(nn.Module):
    """Volume -> voxel logits through slice features.

    With several input channels (modalities) and a ``repeat`` channel adapter, every channel is
    encoded by the shared encoder and the features are concatenated (``C * E`` channels); with a
    ``learned`` adapter the channels are mixed into RGB and encoded once.

    Args:
        encoder: the slice encoder.
        head: segmentation head.
        per_channel: encode each input channel on its own.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, *, per_channel: bool) -> None:
        super().__init__()
        self.encoder, self.head, self.per_channel = encoder, head, per_channel

    def encode(self, image: Tensor) -> Tensor:
        """``(B, C, X, Y, Z)`` -> features ``(B, E or C*E, x, y, z)`` (cacheable when frozen)."""
        if self.per_channel:
            return torch.cat([self.encoder(image[:, c : c + 1]) for c in range(image.shape[1])], 1)
        return self.encoder(image)

    def decode(self, features: Tensor, image: Tensor) -> Tensor:
        """Head only: features and the image they came from -> ``(B, K, X, Y, Z)`` logits."""
        return self.head(features, image)

    def forward(self, image: Tensor) -> Tensor:
        """``(B, C, X, Y, Z)`` -> ``(B, K, X, Y, Z)`` logits."""
        return self.decode(self.encode(image), image)


class GradingModel(nn.Module):
    """Modalities -> patient grade, each modality encoded by the shared encoder.

    Args:
        encoder: the slice encoder (1 input channel).
        head: grading head.
        modalities: modality names in channel order.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, modalities: Sequence[str]) -> None:
        super().__init__()
        self.encoder, self.head, self.modalities = encoder, head, list(modalities)

    def encode(self, inputs: Mapping[str, Tensor] | Tensor) -> dict[str, Tensor]:
        """Modality -> ``(B, 1, X, Y, Z)`` (or a ``(B, M, X, Y, Z)`` stack) -> features."""
        return {name: self.encoder(volume) for name, volume in self._split(inputs).items()}

    def decode(
        self,
        features: Mapping[str, Tensor],
        mask: Tensor | None = None,
        present: Tensor | None = None,
    ) -> GradeOutput:
        """Head only; ``present`` ``(B, M)`` bool marks the modalities each sample really has."""
        return self.head(features, mask=mask, present=present)

    def forward(
        self,
        inputs: Mapping[str, Tensor] | Tensor,
        mask: Tensor | None = None,
        present: Tensor | None = None,
    ) -> GradeOutput:
        """Grade a batch: a dict with any subset of modalities, or a stack with ``present``."""
        return self.decode(self.encode(inputs), mask=mask, present=present)

    def _split(self, inputs: Mapping[str, Tensor] | Tensor) -> Mapping[str, Tensor]:
        if isinstance(inputs, Tensor):
            if inputs.shape[1] != len(self.modalities):
                raise VolsegError(
                    f"grading input has {inputs.shape[1]} channels, the model expects "
                    f"{len(self.modalities)} modalities ({', '.join(self.modalities)})"
                )
            return {m: inputs[:, i : i + 1] for i, m in enumerate(self.modalities)}
        unknown = set(inputs) - set(self.modalities)
        if unknown:
            raise VolsegError(
                f"unknown modalities {sorted(unknown)}; the model knows {self.modalities}"
            )
        return inputs


def build_model(
    cfg: ModelConfig, *, num_classes: int, modalities: Sequence[str]
) -> SegmentationModel | GradingModel:
    """Build encoder (weights loaded, adaptation mode applied) and head from ``cfg``.

    Args:
        cfg: the ``model`` section of the config.
        num_classes: segmentation labels including background, or grade classes.
        modalities: input modality names in channel order.

    Returns:
        A :class:`SegmentationModel` or :class:`GradingModel`.

    Raises:
        VolsegError: unknown encoder or head name, unreadable weights, bad options.
    """
    enc = cfg.encoder
    segmentation = cfg.task == "segmentation"
    learned = enc.channel_adapter == "learned"
    in_channels = len(modalities) if segmentation and learned else 1
    encoder = build_encoder(enc, in_channels)
    if isinstance(encoder, SliceEncoder):  # the baselines' identity encoder has nothing to adapt
        apply_adaptation(
            encoder,
            enc.mode,
            last_n=enc.last_n,
            lora_rank=enc.lora.rank,
            lora_alpha=enc.lora.alpha,
            lora_dropout=enc.lora.dropout,
        )
    if segmentation:
        per_channel = len(modalities) > 1 and not learned
        in_features = encoder.out_channels * (len(modalities) if per_channel else 1)
        if image_only(cfg):
            in_features = 0  # the encoder-off ablation: the head on the image alone
        kwargs = head_kwargs(
            cfg, in_features, num_classes, modalities, encoder.patch_size, encoder.input_size
        )
        model: SegmentationModel | GradingModel = SegmentationModel(
            encoder, HEADS.build(cfg.head.name, **kwargs), per_channel=per_channel
        )
    else:
        kwargs = head_kwargs(
            cfg, encoder.out_channels, num_classes, modalities, encoder.patch_size,
            encoder.input_size,
        )  # fmt: skip
        model = GradingModel(encoder, HEADS.build(cfg.head.name, **kwargs), modalities)
    log.info("model: %s", format_counts(parameter_counts(model)))
    return model


def image_only(cfg: ModelConfig) -> bool:
    """True for the encoder-off ablation: a feature head (``pyramid``) with no encoder
    (``model.encoder.name=none``), built and trained on the image alone."""
    return (
        cfg.task == "segmentation"
        and cfg.encoder.name == "none"
        and cfg.head.name in IMAGE_ONLY_HEADS
    )


def encoder_off(cfg: ModelConfig) -> bool:
    """True for a model that is the encoder-off row of a benchmark: the image-only ablation
    (:func:`image_only`) or the grading ``size`` head (the tumour's volume, no encoder)."""
    return image_only(cfg) or (cfg.task == "classification" and cfg.head.name == "size")


def head_kwargs(
    cfg: ModelConfig,
    in_channels: int,
    num_classes: int,
    modalities: Sequence[str],
    patch_size: int = 14,
    input_size: int | None = None,
) -> dict[str, object]:
    """The keyword arguments a head of ``cfg.task`` is built with (see the module docstring).

    ``patch_size`` and ``input_size`` are the encoder's (:attr:`SliceEncoder.input_size`).
    """
    head, enc = cfg.head, cfg.encoder
    other = SEGMENTATION_HEADS if cfg.task == "classification" else GRADING_HEADS
    if head.name in other:
        wanted = "mil, pool or size" if cfg.task == "classification" else "pyramid or seg3d"
        raise VolsegError(
            f"model.head.name={head.name} does not fit model.task={cfg.task}; "
            f"use a {cfg.task} head ({wanted})"
        )
    common = dict(
        in_channels=in_channels,
        num_classes=num_classes,
        dropout=head.dropout,
        patch_size=patch_size,
        input_size=input_size,
        slice_axis=enc.slice_axis,
    )
    mil_only = [k for k in ("lesion_contrast", "lesion_volume") if getattr(head, k)]
    if mil_only and head.name != "mil":
        where = "segmentation" if cfg.task == "segmentation" else repr(head.name)
        raise VolsegError(
            f"model.head.{mil_only[0]} applies to the grading mil head only, not {where}; "
            "leave it at false"
        )
    if cfg.task == "segmentation":
        stacked = enc.fusion == "stack" and enc.layers is not None
        if (head.token_decoder or head.image_dropout or head.feature_dropout) and (
            head.name != "pyramid" or enc.name == "none"
        ):
            without = repr(head.name) if head.name != "pyramid" else "model.encoder.name=none"
            raise VolsegError(
                "model.head.token_decoder, image_dropout and feature_dropout act on encoder "
                f"features and apply to the pyramid head only, not {without}; leave them at "
                "false and 0"
            )
        pyramid = {}
        if head.name == "pyramid":
            pyramid = dict(
                token_decoder=head.token_decoder,
                image_dropout=head.image_dropout,
                feature_dropout=head.feature_dropout,
            )
        return dict(
            common,
            **pyramid,
            image_channels=len(modalities),
            channels=head.channels,
            depth=head.depth,
            anisotropic=head.anisotropic,
            feature_blocks=len(set(enc.layers)) if stacked else 1,
        )
    if head.name == "size" and enc.name != "none":
        raise VolsegError(
            "model.head.name=size reads only the tumour mask, so an encoder would run for "
            f"nothing: set model.encoder.name=none (not {enc.name!r})"
        )
    mil = {}
    if head.name == "mil":
        mil = dict(
            hidden=head.channels,
            lesion_contrast=head.lesion_contrast,
            lesion_volume=head.lesion_volume,
        )
    return dict(common, **mil, modalities=list(modalities), modality_dropout=head.modality_dropout)


def parameter_counts(model: SegmentationModel | GradingModel) -> dict[str, int]:
    """Total and trainable parameters of the encoder, the head and the whole model."""
    counts = {}
    for part, module in (("encoder", model.encoder), ("head", model.head), ("model", model)):
        counts[f"{part}_total"] = count_parameters(module)
        counts[f"{part}_trainable"] = count_parameters(module, trainable_only=True)
    return counts


def format_counts(counts: Mapping[str, int]) -> str:
    """One line: trainable / total per part."""
    return ", ".join(
        f"{part} {counts[f'{part}_trainable']:,} / {counts[f'{part}_total']:,} trainable"
        for part in ("encoder", "head", "model")
    )


@functools.cache
def encoder_parameter_count(name: str) -> int:
    """Parameters of a registered encoder, counted without allocating them (meta device)."""
    return _meta_encoder(name)[0]


@functools.cache
def _meta_encoder(name: str, layers: tuple[int, ...] | None = None) -> tuple[int, int, int]:
    """``(parameters, out_channels, patch_size)`` of encoder ``name`` built on the meta device
    (CNN levels from ``layers``; DINOv2 ViTs with their last block)."""
    from volseg.config.schema import EncoderConfig

    cfg = EncoderConfig(name=name, layers=None if name in DINOV2_EMBED_DIMS else layers)
    with torch.device("meta"):
        encoder = build_encoder(cfg)
    return count_parameters(encoder), int(encoder.out_channels), int(encoder.patch_size)


SLAB = (512, 512, 16)  # the slab `volseg models` counts head FLOPs on (a CT's in-plane size)


def head_gflops(head: nn.Module, cfg: ModelConfig, in_channels: int, patch_size: int = 14) -> float:
    """GFLOP of one segmentation-head forward on a ``SLAB`` of 1 channel.

    ``head`` should live on the meta device (shapes only, no memory).

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (a multiply-add is 2 FLOP).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from volseg.models.slicing import feature_grid

    size = None if cfg.encoder.input_size == "native" else cfg.encoder.input_size
    grid = feature_grid(SLAB, cfg.encoder.slice_axis, patch_size, size)
    with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        head(torch.empty(1, in_channels, *grid), torch.empty(1, 1, *SLAB))
    return counter.get_total_flops() / 1e9


def head_parameter_table(
    encoders: Mapping[str, str] = {**VIT_SIZES, **BACKBONES},
    *,
    num_classes: int = 4,
    num_grades: int = 2,
    modalities: Sequence[str] = ("T1", "T1ce", "T2", "FLAIR"),
    model: ModelConfig | None = None,
) -> list[dict[str, object]]:
    """Parameters (and segmentation GFLOP per slab) of the heads volseg has, per encoder.

    Args:
        encoders: label -> registered encoder name.
        num_classes: segmentation classes ``K`` (background included).
        num_grades: grade classes ``G``.
        modalities: modalities of the grading head.
        model: head and encoder settings to use (``model.head``, and ``model.encoder``'s
            input size and stacked ``layers``); the defaults when None.

    Returns:
        One row per (encoder, head) for the heads ``pyramid``, ``seg3d`` and ``mil``:
        ``encoder, embed_dim, encoder_params, task, head, head_params, gflops_per_slab``
        (segmentation heads on a ``SLAB`` at the configured input size; None for ``mil``).
    """
    model = model or ModelConfig()
    enc = model.encoder
    blocks = len(set(enc.layers)) if enc.fusion == "stack" and enc.layers else 1
    rows: list[dict[str, object]] = []
    for label, name in encoders.items():
        vit = name in DINOV2_EMBED_DIMS
        levels = None if vit or enc.layers is None else tuple(enc.layers)
        params, out, patch = _meta_encoder(name, levels)
        dim = DINOV2_EMBED_DIMS[name] if vit else out
        blocks_here = blocks if vit or name.startswith("vit") else 1
        for task, head, classes, mods in (
            ("segmentation", "pyramid", num_classes, ["CT"]),
            ("segmentation", "seg3d", num_classes, ["CT"]),
            ("classification", "mil", num_grades, list(modalities)),
        ):
            cfg = ModelConfig(task=task, encoder=enc, head=replace(model.head, name=head))
            width = dim * (blocks_here if task == "segmentation" else 1)
            size = None if enc.input_size == "native" else enc.input_size
            with torch.device("meta"):  # counted, never allocated
                module = HEADS.build(head, **head_kwargs(cfg, width, classes, mods, patch, size))
            seg = task == "segmentation"
            rows.append(
                {
                    "encoder": label,
                    "embed_dim": dim,
                    "encoder_params": params,
                    "patch_size": patch,
                    "task": task,
                    "head": head,
                    "head_params": count_parameters(module),
                    "gflops_per_slab": (
                        round(head_gflops(module, cfg, width, patch), 1) if seg else None
                    ),
                }
            )
    return rows
