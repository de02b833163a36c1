"""The ``pool`` grading head: mask-weighted pooling, late modality fusion, missing modalities."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from volseg.config.schema import EncoderConfig, HeadConfig, ModelConfig
from volseg.errors import VolsegError
from volseg.models.build import build_model
from volseg.models.cls_head import mask_on_grid
from volseg.models.pool_head import PoolHead

E = 8
MODALITIES = ("T1", "T1ce", "T2", "FLAIR")


def head(**kwargs) -> PoolHead:
    torch.manual_seed(0)
    return PoolHead(E, 2, modalities=MODALITIES, **kwargs)


def test_pooling_reads_only_the_masked_patches():
    """The pooled vector is the mean over the tumour's patches, weighted by their coverage."""
    features = torch.randn(2, E, 2, 2, 3)
    mask = torch.zeros(2, 1, 28, 28, 3)
    mask[0, :, :14, :14, 1] = 1.0  # patch (0, 0) of slice 1, fully covered
    mask[0, :, :7, 14:, 2] = 1.0  # half of patch (0, 1) of slice 2
    pooled, per_slice = head().pool(features, mask_on_grid(mask, (2, 2, 3), "axial", 14, None))
    expected = (features[0, :, 0, 0, 1] + 0.5 * features[0, :, 0, 1, 2]) / 1.5
    assert torch.allclose(pooled[0], expected, atol=1e-6)
    assert torch.allclose(per_slice[0], torch.tensor([0.0, 1 / 1.5, 0.5 / 1.5]), atol=1e-6)
    # sample 1's mask is empty: the whole volume, every slice alike
    assert torch.allclose(pooled[1], features[1].flatten(1).mean(1), atol=1e-6)
    assert torch.allclose(per_slice[1], torch.full((3,), 1 / 3))


def test_features_outside_the_mask_do_not_change_the_grade():
    model = head(modality_dropout=0.0).eval()
    features = {m: torch.randn(1, E, 2, 2, 3) for m in MODALITIES}
    mask = torch.zeros(1, 1, 2, 2, 3)  # already on the feature grid
    mask[..., 0, 0, :] = 1.0
    out = model(features, mask=mask)
    noisy = {m: f.clone() for m, f in features.items()}
    for f in noisy.values():
        f[..., 1, :, :] = 100.0 * torch.randn_like(f[..., 1, :, :])
    assert torch.allclose(model(noisy, mask=mask).logits, out.logits, atol=1e-5)
    inside = {m: f.clone() for m, f in features.items()}
    inside["T2"][..., 0, 0, :] += 3.0
    assert not torch.allclose(model(inside, mask=mask).logits, out.logits, atol=1e-3)


def test_logits_are_the_mean_vote_of_the_modalities_present():
    model = head(modality_dropout=0.0).eval()
    features = {m: torch.randn(2, E, 2, 2, 3) for m in MODALITIES}
    present = torch.tensor([[True, False, False, True], [True, True, True, True]])
    out = model(features, present=present)
    alone = {m: model({m: features[m][:1]}).logits for m in ("T1", "FLAIR")}
    assert torch.allclose(out.logits[0], (alone["T1"][0] + alone["FLAIR"][0]) / 2, atol=1e-5)
    assert torch.allclose(out.modality_attention[0], torch.tensor([0.5, 0.0, 0.0, 0.5]))
    garbage = {m: f.clone() for m, f in features.items()}
    garbage["T1ce"][0] = 50.0 * torch.randn_like(garbage["T1ce"][0])  # absent: ignored
    assert torch.allclose(model(garbage, present=present).logits, out.logits, atol=1e-5)
    with pytest.raises(ValueError, match="at least one present"):
        model(features, present=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(VolsegError, match="T1c"):
        model({"T1c": features["T1"]})


def test_absent_samples_stay_out_of_the_standardisation_and_gradients_flow():
    features = {"T1": torch.randn(3, E, 2, 2, 3), "FLAIR": torch.randn(3, E, 2, 2, 3)}
    features["FLAIR"][1] = 0.0
    present = torch.tensor([[True, False, False, True], [True, False, False, False]] + [[True] * 4])
    model = head(modality_dropout=0.0).train()
    out = model(features, present=present)
    flair = features["FLAIR"][[0, 2]].flatten(2).mean(2)
    norm = model.norms[3]
    assert torch.allclose(norm.running_mean, 0.1 * flair.mean(0), atol=1e-6)
    out.logits.sum().backward()
    for i in (0, 3):
        assert model.classify[i].weight.grad.abs().sum() > 0
    for i in (1, 2):  # never given: no gradient
        assert model.classify[i].weight.grad is None


def test_pool_head_builds_from_config_and_grades_a_volume():
    cfg = ModelConfig(
        task="classification",
        encoder=EncoderConfig(name="vit_test_patch14_dinov2"),
        head=HeadConfig(name="pool"),
    )
    model = build_model(cfg, num_classes=2, modalities=list(MODALITIES)).eval()
    assert isinstance(model.head, PoolHead)
    volume = torch.rand(1, 1, 28, 28, 4)
    mask = torch.zeros(1, 1, 28, 28, 4)
    mask[..., 3:10, 3:10, 1:3] = 1.0
    out = model({"T2": volume, "FLAIR": volume}, mask=mask)
    assert out.logits.shape == (1, 2)
    assert torch.allclose(out.slice_attention["T2"], torch.tensor([[0.0, 0.5, 0.5, 0.0]]))
    bad = replace(cfg, head=HeadConfig(name="pool", lesion_contrast=True))
    with pytest.raises(VolsegError, match="lesion_contrast applies to the grading mil head only"):
        build_model(bad, num_classes=2, modalities=list(MODALITIES))


def test_a_grading_head_for_segmentation_and_the_reverse_are_refused():
    encoder = EncoderConfig(name="vit_test_patch14_dinov2")
    for task, name in (("segmentation", "pool"), ("segmentation", "mil"),
                       ("classification", "pyramid")):  # fmt: skip
        cfg = ModelConfig(task=task, encoder=encoder, head=HeadConfig(name=name))
        with pytest.raises(VolsegError, match=f"model.head.name={name} does not fit"):
            build_model(cfg, num_classes=2, modalities=["CT"])
