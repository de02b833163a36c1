"""The ``size`` grading head: the no-encoder baseline that grades from the tumour's volume."""

from __future__ import annotations

import pytest
import torch

from volseg.config import Config, load_config
from volseg.config.schema import EncoderConfig, HeadConfig, ModelConfig
from volseg.errors import VolsegError
from volseg.models.build import build_model
from volseg.models.size_head import SizeHead

MODALITIES = ("T1", "T1ce", "T2", "FLAIR")


def volumes(*voxels: int, shape=(6, 6, 4)) -> torch.Tensor:
    """Masks ``(B, 1, *shape)`` with the first ``voxels[i]`` voxels of sample i set."""
    mask = torch.zeros(len(voxels), 1, *shape)
    for i, n in enumerate(voxels):
        mask[i].view(-1)[:n] = 1.0
    return mask


def test_the_grade_depends_on_the_mask_volume_alone():
    torch.manual_seed(0)
    head = SizeHead(1, 2, modalities=MODALITIES)
    head.train()
    head({"T1": torch.zeros(4, 1, 6, 6, 4)}, mask=volumes(3, 10, 40, 100))  # running statistics
    head.eval()
    mask = volumes(10, 100)
    image = {m: torch.randn(2, 1, 6, 6, 4) for m in MODALITIES}
    out = head(image, mask=mask)
    other = {m: 100 * torch.randn(2, 1, 6, 6, 4) for m in ("T2",)}
    assert torch.allclose(head(other, mask=mask).logits, out.logits)  # images do not matter
    moved = torch.roll(mask, shifts=2, dims=2)  # the same volume elsewhere: the same grade
    assert torch.allclose(head(image, mask=moved).logits, out.logits)
    assert not torch.allclose(out.logits[0], out.logits[1])  # ... another volume: another one
    expected = torch.log1p(torch.tensor([[10.0], [100.0]]))
    seen = torch.log1p(torch.tensor([3.0, 10.0, 40.0, 100.0]))
    z = (expected - seen.mean()) / (seen.var(unbiased=False) + 1e-5).sqrt()
    assert torch.allclose(out.embedding, z, atol=1e-5)
    assert torch.allclose(out.logits, head.classify(z), atol=1e-5)


def test_attention_is_the_tumour_share_per_slice_and_equal_per_modality():
    head = SizeHead(1, 2, modalities=MODALITIES).eval()
    mask = torch.zeros(1, 1, 4, 4, 3)
    mask[0, 0, :2, :2, 0] = 1.0  # 4 voxels on slice 0
    mask[0, 0, :3, :4, 2] = 1.0  # 12 on slice 2
    present = torch.tensor([[True, False, True, True]])
    out = head({m: torch.zeros(1, 1, 4, 4, 3) for m in MODALITIES}, mask=mask, present=present)
    assert torch.allclose(out.slice_attention["T2"][0], torch.tensor([0.25, 0.0, 0.75]))
    assert torch.allclose(out.modality_attention[0], torch.tensor([1 / 3, 0.0, 1 / 3, 1 / 3]))


def test_batches_of_one_give_the_moments_of_all_cases_seen_and_gradients_flow():
    """The engine trains uncached grading runs one case per forward when grids differ."""
    head = SizeHead(1, 2, modalities=MODALITIES).train()
    for n in (5, 20, 80):
        out = head({"T1": torch.zeros(1, 1, 6, 6, 4)}, mask=volumes(n))
    seen = torch.log1p(torch.tensor([5.0, 20.0, 80.0]))
    assert torch.allclose(head.volume.mean, seen.mean().view(1), atol=1e-6)
    variance = head.volume.squares / head.volume.seen
    assert torch.allclose(variance, seen.var(unbiased=False).view(1), atol=1e-6)
    out.logits.sum().backward()
    assert head.classify.weight.grad is not None and head.classify.weight.grad.abs().sum() > 0


def test_no_mask_is_a_user_error():
    head = SizeHead(1, 2, modalities=MODALITIES)
    with pytest.raises(VolsegError, match="mask"):
        head({"T1": torch.zeros(1, 1, 6, 6, 4)})


def test_size_builds_with_no_encoder_only():
    cfg = ModelConfig(
        task="classification",
        encoder=EncoderConfig(name="none", weights=None),
        head=HeadConfig(name="size"),
    )
    model = build_model(cfg, num_classes=2, modalities=list(MODALITIES)).eval()
    images = torch.randn(1, 4, 6, 6, 4)
    assert model(images, mask=volumes(7)).logits.shape == (1, 2)
    assert sum(p.numel() for p in model.parameters()) == 4  # one weight and a bias per grade
    vit = ModelConfig(
        task="classification",
        encoder=EncoderConfig(name="vit_test_patch14_dinov2", weights=None),
        head=HeadConfig(name="size"),
    )
    with pytest.raises(VolsegError, match="model.encoder.name=none"):
        build_model(vit, num_classes=2, modalities=list(MODALITIES))


def test_size_needs_a_common_spacing():
    keys = ["model.task=classification", "model.encoder.name=none", "model.head.name=size"]
    with pytest.raises(VolsegError, match="data.spacing"):
        load_config(Config, None, keys)
    cfg = load_config(Config, None, [*keys, "data.spacing=[1.0,1.0,2.0]"])
    assert cfg.data.spacing == (1.0, 1.0, 2.0)


def test_lesion_volume_needs_a_common_spacing_too():
    keys = ["model.task=classification", "model.head.name=mil", "model.head.lesion_volume=true"]
    with pytest.raises(VolsegError, match="data.spacing.*lesion_volume=true"):
        load_config(Config, None, keys)
    assert load_config(Config, None, [*keys, "data.spacing=[1.0,1.0,2.0]"]).model.head.lesion_volume


def test_a_size_checkpoint_of_the_earlier_layout_still_loads():
    """Before LogVolume, the head held its running moments as its own buffers."""
    trained = SizeHead(1, 2, modalities=MODALITIES).train()
    trained({"T1": torch.zeros(3, 1, 6, 6, 4)}, mask=volumes(4, 30, 90))
    old = {k.removeprefix("volume."): v for k, v in trained.state_dict().items()}
    assert set(old) == {"seen", "mean", "squares", "classify.weight", "classify.bias"}
    fresh = SizeHead(1, 2, modalities=MODALITIES)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.volume.mean, trained.volume.mean) and float(fresh.volume.seen) == 3
