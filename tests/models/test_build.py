"""The builder from config: every part by name, modes applied, weights loaded, shapes right."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from volseg.config import Config, load_config
from volseg.config.schema import EncoderConfig, HeadConfig, LoraConfig, ModelConfig
from volseg.errors import VolsegError
from volseg.models import (
    ENCODERS,
    GradingModel,
    SegmentationModel,
    build_model,
    build_vit,
    head_parameter_table,
    parameter_counts,
)

CONFIGS = Path(__file__).parents[2] / "configs"
TINY = "vit_test_patch14_dinov2"
MODALITIES = ["T1", "T1ce", "T2", "FLAIR"]


def seg_config(**encoder) -> ModelConfig:
    enc = EncoderConfig(name=TINY, **{"input_size": "native", **encoder})
    return ModelConfig(task="segmentation", encoder=enc, head=HeadConfig(channels=16))


def test_encoder_registry_holds_the_dinov2_family():
    names = set(ENCODERS.names())
    for size in ("small", "base", "large", "giant"):
        assert f"vit_{size}_patch14_dinov2" in names
        assert f"vit_{size}_patch14_reg4_dinov2" in names
    with pytest.raises(VolsegError, match="did you mean 'vit_small_patch14_dinov2'"):
        build_model(
            replace(seg_config(), encoder=EncoderConfig(name="vit_smal_patch14_dinov2")),
            num_classes=2,
            modalities=["CT"],
        )


@pytest.mark.parametrize("slice_axis", ["axial", "coronal", "sagittal"])
def test_segmentation_model_shapes_for_every_slice_axis(slice_axis):
    torch.manual_seed(0)
    model = build_model(seg_config(slice_axis=slice_axis), num_classes=5, modalities=["CT"])
    assert isinstance(model, SegmentationModel)
    assert model(torch.rand(1, 1, 30, 17, 5)).shape == (1, 5, 30, 17, 5)


@pytest.mark.parametrize("adapter, per_channel", [("repeat", True), ("learned", False)])
def test_multimodal_segmentation_encodes_per_channel_or_mixes(adapter, per_channel):
    model = build_model(seg_config(channel_adapter=adapter), num_classes=4, modalities=MODALITIES)
    assert model.per_channel is per_channel
    image = torch.rand(2, 4, 15, 29, 3)
    features = model.encode(image)
    assert features.shape == (2, 48 * (4 if per_channel else 1), 2, 3, 3)
    assert model.decode(features, image).shape == (2, 4, 15, 29, 3)


def test_grading_model_with_a_missing_modality():
    torch.manual_seed(0)
    cfg = ModelConfig(
        task="classification", encoder=EncoderConfig(name=TINY), head=HeadConfig(name="mil")
    )
    model = build_model(cfg, num_classes=3, modalities=MODALITIES).eval()
    assert isinstance(model, GradingModel)
    volume = torch.rand(2, 1, 20, 16, 6)
    out = model({"T1": volume, "FLAIR": volume * 0.5})
    assert out.logits.shape == (2, 3)
    torch.testing.assert_close(out.modality_attention.sum(1), torch.ones(2))
    assert out.modality_attention[:, [1, 2]].abs().max() == 0
    for attention in out.slice_attention.values():
        torch.testing.assert_close(attention.sum(1), torch.ones(2))
    # the same cases as a zero-filled stack with a presence mask give the same grade
    stack = torch.cat([volume, torch.zeros_like(volume), torch.zeros_like(volume), volume * 0.5], 1)
    present = torch.tensor([[True, False, False, True]] * 2)
    torch.testing.assert_close(model(stack, present=present).logits, out.logits)
    with pytest.raises(VolsegError, match="unknown modalities"):
        model({"DWI": volume})


def test_lesion_contrast_reaches_the_grading_head_and_is_refused_for_segmentation():
    head = HeadConfig(name="mil", lesion_contrast=True)
    cfg = ModelConfig(task="classification", encoder=EncoderConfig(name=TINY), head=head)
    model = build_model(cfg, num_classes=2, modalities=MODALITIES)
    assert model.head.lesion_contrast and model.head.token_width == 3 * 48 + 1
    seg = replace(seg_config(), head=HeadConfig(lesion_contrast=True))
    with pytest.raises(VolsegError, match="lesion_contrast applies to the grading"):
        build_model(seg, num_classes=2, modalities=["CT"])


def test_lesion_volume_reaches_the_mil_head_only():
    head = HeadConfig(name="mil", lesion_volume=True)
    cfg = ModelConfig(task="classification", encoder=EncoderConfig(name=TINY), head=head)
    model = build_model(cfg, num_classes=2, modalities=MODALITIES)
    assert model.head.volume is not None and model.head.volume_logits.out_features == 2
    for other in (replace(cfg, head=replace(head, name="pool")), seg_config()):
        other = replace(other, head=replace(other.head, lesion_volume=True))
        with pytest.raises(VolsegError, match="lesion_volume applies to the grading mil head"):
            build_model(other, num_classes=2, modalities=list(MODALITIES))


def test_frozen_and_lora_modes_from_config():
    frozen = parameter_counts(build_model(seg_config(), num_classes=2, modalities=["CT"]))
    assert frozen["encoder_trainable"] == 0
    assert frozen["model_trainable"] == frozen["head_total"] == frozen["head_trainable"]
    lora_cfg = seg_config(mode="lora", lora=LoraConfig(rank=4, alpha=8.0))
    lora = parameter_counts(build_model(lora_cfg, num_classes=2, modalities=["CT"]))
    # 3 blocks, each adapting qkv (48 -> 144) and proj (48 -> 48) with rank 4
    assert lora["encoder_trainable"] == 3 * 4 * ((48 + 144) + (48 + 48))
    assert lora["encoder_total"] == frozen["encoder_total"] + lora["encoder_trainable"]


def test_weights_named_in_config_are_loaded(tmp_path):
    torch.manual_seed(1)
    source = build_vit(TINY)
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    model = build_model(seg_config(weights=str(path)), num_classes=2, modalities=["CT"])
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.encoder.vit.state_dict()[key], value)


def test_real_vit_small_builds_from_the_shipped_config_and_runs_on_cpu():
    cfg = load_config(Config, CONFIGS / "synthetic_organs.yaml")
    assert cfg.model.encoder.name == "vit_small_patch14_dinov2"
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=5, modalities=["CT"]).eval()
    with torch.no_grad():
        features = model.encode(torch.rand(1, 1, 112, 84, 8))  # resized to 224 x 168 px
        assert features.shape == (1, 4 * 384, 16, 12, 8)  # 4 stacked blocks, 16 x 12 tokens
        logits = model.decode(features, torch.rand(1, 1, 112, 84, 8))
    assert logits.shape == (1, 5, 112, 84, 8)
    assert torch.isfinite(logits).all()


def test_head_parameter_table_within_budget():
    rows = head_parameter_table()
    by_key = {(r["encoder"], r["head"]): r for r in rows}
    assert by_key[("ViT-S/14", "seg3d")]["encoder_params"] == 22_056_192
    assert by_key[("ViT-B/14", "seg3d")]["head_params"] <= 5_000_000
    assert by_key[("ViT-B/14", "pyramid")]["head_params"] <= 5_000_000
    assert by_key[("ViT-B/14", "mil")]["head_params"] <= 2_000_000
    assert by_key[("ViT-B/14", "mil")]["gflops_per_slab"] is None
    # The pyramid's cost is a small U-Net's on the 512 x 512 x 16 slab: hundreds of GFLOP.
    assert 100 < by_key[("ViT-B/14", "pyramid")]["gflops_per_slab"] < 2000
    assert (
        by_key[("ViT-S/14", "seg3d")]["head_params"] < by_key[("ViT-L/14", "seg3d")]["head_params"]
    )
