"""MONAI baselines go through the same builder as volseg models: any size in, same size out."""

from __future__ import annotations

import pytest
import torch

from volseg.config.schema import EncoderConfig, HeadConfig, ModelConfig
from volseg.errors import VolsegError
from volseg.models import build_model, parameter_counts


def baseline(head: str, channels: int, **encoder) -> ModelConfig:
    return ModelConfig(
        task="segmentation",
        encoder=EncoderConfig(name="none", **encoder),
        head=HeadConfig(name=head, channels=channels, depth=1),
    )


@pytest.mark.parametrize("head, channels", [("monai_unet", 4), ("monai_swinunetr", 12)])
def test_baselines_predict_at_input_size(head, channels):
    torch.manual_seed(0)
    model = build_model(baseline(head, channels), num_classes=3, modalities=["CT"]).eval()
    image = torch.rand(1, 1, 30, 17, 5)
    assert torch.equal(model.encode(image), image)
    assert not model.encoder.cacheable
    with torch.no_grad():
        assert model(image).shape == (1, 3, 30, 17, 5)
    counts = parameter_counts(model)
    assert counts["encoder_total"] == 0 and counts["head_trainable"] == counts["head_total"] > 0


def test_baselines_take_several_modalities():
    model = build_model(baseline("monai_unet", 4), num_classes=2, modalities=["T1", "T2"])
    assert model(torch.rand(2, 2, 16, 20, 6)).shape == (2, 2, 16, 20, 6)


def test_baseline_misuse_is_a_one_line_error():
    with pytest.raises(VolsegError, match="model.encoder.name=none"):
        build_model(
            ModelConfig(
                encoder=EncoderConfig(name="vit_test_patch14_dinov2"),
                head=HeadConfig(name="monai_unet"),
            ),
            num_classes=2,
            modalities=["CT"],
        )
    with pytest.raises(VolsegError, match="no weights"):
        build_model(baseline("monai_unet", 4, mode="lora"), num_classes=2, modalities=["CT"])
    with pytest.raises(VolsegError, match="multiple of 12"):
        build_model(baseline("monai_swinunetr", 16), num_classes=2, modalities=["CT"])
