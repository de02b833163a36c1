"""Slice encoder (2D DINOv2 over every slice), light 3D heads, and the builder from config."""

from __future__ import annotations

from volseg.models.adapt import LoRALinear, apply_adaptation, merge_lora
from volseg.models.build import (
    GradingModel,
    SegmentationModel,
    build_model,
    head_parameter_table,
    parameter_counts,
)
from volseg.models.cls_head import ClsHead, GradeOutput
from volseg.models.encoder import SliceEncoder, build_vit
from volseg.models.registry import ENCODERS, HEADS, count_parameters
from volseg.models.seg_head import SegHead3D
from volseg.models.weights import LoadedWeights, load_encoder_weights

__all__ = [
    "ENCODERS",
    "HEADS",
    "ClsHead",
    "GradeOutput",
    "GradingModel",
    "LoRALinear",
    "LoadedWeights",
    "SegHead3D",
    "SegmentationModel",
    "SliceEncoder",
    "apply_adaptation",
    "build_model",
    "build_vit",
    "count_parameters",
    "head_parameter_table",
    "load_encoder_weights",
    "merge_lora",
    "parameter_counts",
]
