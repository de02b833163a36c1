"""The 3D heads: shapes on odd grids for every slice axis, gradients, sizes, MIL attention."""

from __future__ import annotations

import pytest
import torch

from volseg.errors import VolsegError
from volseg.models.cls_head import ClsHead, GatedAttention
from volseg.models.registry import HEADS, count_parameters
from volseg.models.seg_head import SegHead3D
from volseg.models.slicing import feature_grid, pool_to_feature_grid

E = 16
MODALITIES = ("T1", "T1ce", "T2", "FLAIR")
IMAGE = (30, 17, 5)  # X, Y not multiples of 14
GRIDS = {"axial": (3, 2, 5), "coronal": (3, 17, 1), "sagittal": (30, 2, 1)}


def features_for(slice_axis: str, batch: int = 1, image: tuple[int, ...] = IMAGE) -> torch.Tensor:
    return torch.randn(batch, E, *feature_grid(image, slice_axis))


def assert_all_grads(module: torch.nn.Module) -> None:
    # The bias of an attention score layer (``*.w.bias``) shifts every score of a softmax alike:
    # its gradient is 0 in exact arithmetic, so only rounding ever made it nonzero.
    missing = [
        n
        for n, p in module.named_parameters()
        if (p.grad is None or not p.grad.any()) and not n.endswith("attention.w.bias")
    ]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("slice_axis", sorted(GRIDS))
def test_feature_grid_shrinks_the_in_plane_axes_only(slice_axis):
    assert feature_grid(IMAGE, slice_axis) == GRIDS[slice_axis]


@pytest.mark.parametrize("anisotropic", [True, False])
@pytest.mark.parametrize("slice_axis", sorted(GRIDS))
def test_seg_head_logits_have_the_image_grid(slice_axis, anisotropic):
    torch.manual_seed(0)
    head = SegHead3D(
        E, 3, image_channels=2, channels=16, slice_axis=slice_axis, anisotropic=anisotropic
    )
    image = torch.randn(2, 2, *IMAGE)
    logits = head(torch.randn(2, E, *GRIDS[slice_axis]), image)
    assert logits.shape == (2, 3, *IMAGE)
    assert torch.isfinite(logits).all()
    ((logits * torch.randn_like(logits)).mean()).backward()
    assert_all_grads(head)


def test_seg_head_rejects_features_of_another_grid():
    head = SegHead3D(E, 2, channels=16)
    with pytest.raises(ValueError, match="expected grid"):
        head(torch.randn(1, E, 3, 3, 5), torch.randn(1, 1, *IMAGE))


def test_seg_head_logits_depend_on_the_image_voxels():
    """The full-resolution stem makes logits vary within one patch."""
    torch.manual_seed(0)
    head = SegHead3D(E, 2, channels=16).eval()
    features = features_for("axial")
    image = torch.zeros(1, 1, *IMAGE)
    image[:, :, 5, 5, 2] = 10.0
    base = head(features, torch.zeros_like(image))
    changed = head(features, image)
    assert not torch.allclose(base[..., 5, 5, 2], changed[..., 5, 5, 2])


def test_pool_to_feature_grid_counts_patch_coverage_with_high_end_padding():
    pooled = pool_to_feature_grid(torch.ones(1, 1, *IMAGE), "axial")
    assert pooled.shape == (1, 1, 3, 2, 5)
    expected = torch.tensor([[1.0, 3 / 14], [1.0, 3 / 14], [2 / 14, 2 * 3 / 196]])
    assert torch.allclose(pooled[0, 0, :, :, 0], expected)


def test_registry_builds_by_name_and_suggests_close_names():
    assert {"seg3d", "mil"} <= set(HEADS.names())
    assert isinstance(HEADS.build("seg3d", in_channels=E, num_classes=2), SegHead3D)
    mil = HEADS.build("mil", in_channels=E, num_classes=2, modalities=MODALITIES)
    assert isinstance(mil, ClsHead)
    with pytest.raises(VolsegError, match="did you mean 'seg3d'"):
        HEADS.build("seg3", in_channels=E, num_classes=2)


def test_head_sizes_for_vit_b():
    assert count_parameters(SegHead3D(768, 4)) <= 5_000_000
    assert count_parameters(ClsHead(768, 2, modalities=MODALITIES)) <= 2_000_000


def test_gated_attention_masks_invalid_instances_to_exactly_zero():
    pool = GatedAttention(8, 4)
    h = torch.randn(2, 5, 8)
    valid = torch.tensor([[True, False, True, False, False], [False, False, False, False, True]])
    pooled, attention = pool(h, valid)
    assert torch.equal(attention[~valid], torch.zeros(int((~valid).sum())))
    assert torch.allclose(attention.sum(1), torch.ones(2))
    assert torch.allclose(pooled[1], h[1, 4], atol=1e-6)


def cls_head(**kwargs) -> ClsHead:
    torch.manual_seed(0)
    return ClsHead(E, 3, modalities=MODALITIES, hidden=16, **kwargs)


def test_cls_head_with_a_subset_of_modalities():
    head = cls_head().eval()
    out = head({"T2": features_for("axial", 2), "FLAIR": features_for("axial", 2)})
    assert out.logits.shape == (2, 3)
    assert set(out.slice_attention) == {"T2", "FLAIR"}
    for attention in out.slice_attention.values():
        assert attention.shape == (2, 5)
        assert torch.allclose(attention.sum(1), torch.ones(2))
    assert out.modality_attention.shape == (2, 4)
    assert torch.equal(out.modality_attention[:, :2], torch.zeros(2, 2))
    assert (out.modality_attention[:, 2:] > 0).all()
    assert torch.allclose(out.modality_attention.sum(1), torch.ones(2))


def test_cls_head_per_sample_presence():
    head = cls_head().eval()
    features = {m: features_for("axial", 2) for m in MODALITIES}
    present = torch.tensor([[True, False, False, True], [False, True, True, True]])
    out = head(features, present=present)
    assert torch.equal(out.modality_attention > 0, present)
    alone = head({"T1": features["T1"][:1], "FLAIR": features["FLAIR"][:1]})
    assert torch.allclose(out.logits[0], alone.logits[0], atol=1e-5)
    with pytest.raises(ValueError, match="at least one present"):
        head(features, present=torch.zeros(2, 4, dtype=torch.bool))


def test_absent_modalities_stay_out_of_the_batchnorm_statistics():
    """Zero-filled volumes of samples lacking a modality must not move the batch statistics."""
    features = {m: features_for("axial", 3) for m in ("T1", "FLAIR")}
    features["FLAIR"][1] = 0.0  # sample 1 has no FLAIR: the loader fills zeros
    present = torch.tensor([[True, False, False, True], [True, False, False, False]] + [[True] * 4])
    head = cls_head(modality_dropout=0.0).train()
    out = head(features, present=present)
    # running statistics = those of T1 (all 3 samples), then of FLAIR of samples 0 and 2 only
    reference = cls_head(modality_dropout=0.0).train()
    reference({"T1": features["T1"]})
    tokens, _ = reference.slice_tokens(features["FLAIR"][[0, 2]])
    reference.embed_tokens(tokens)
    assert torch.allclose(head.norm.running_mean, reference.norm.running_mean, atol=1e-6)
    assert torch.allclose(head.norm.running_var, reference.norm.running_var, atol=1e-5)
    # whatever fills the absent volume changes no sample's logits
    garbage = {m: f.clone() for m, f in features.items()}
    garbage["FLAIR"][1] = 50.0 * torch.randn_like(garbage["FLAIR"][1])
    again = cls_head(modality_dropout=0.0).train()(garbage, present=present)
    assert torch.allclose(out.logits, again.logits, atol=1e-5)
    out.logits.sum().backward()
    assert torch.isfinite(head.embed[0].weight.grad).all()


def test_cls_head_rejects_unknown_modalities():
    with pytest.raises(VolsegError, match="T1c"):
        cls_head()({"T1c": features_for("axial")})


def test_modality_dropout_is_per_sample_and_never_drops_all():
    head = cls_head(modality_dropout=0.9).train()
    batch = 64
    features = {m: features_for("axial", batch) for m in ("T1", "T2", "FLAIR")}
    attention = head(features).modality_attention
    kept = attention > 0
    assert kept.any(1).all()
    assert not kept[:, 1].any()  # T1ce was never given
    assert len({tuple(row.tolist()) for row in kept}) > 1  # samples have different subsets
    assert kept.sum() < 3 * batch
    assert torch.allclose(attention.sum(1), torch.ones(batch))


def test_eval_is_deterministic():
    head = cls_head(modality_dropout=0.5, dropout=0.5).eval()
    features = {m: features_for("axial", 4) for m in MODALITIES}
    first, second = head(features), head(features)
    assert torch.equal(first.logits, second.logits)
    assert torch.equal(first.modality_attention, second.modality_attention)


def one_patch_lesion() -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a 30 x 17 x 8 image and a mask covering exactly patch (0, 0) of slices 3-4."""
    image = (30, 17, 8)
    features = torch.randn(1, E, *feature_grid(image, "axial"))
    mask = torch.zeros(1, 1, *image)
    mask[:, :, :14, :14, 3:5] = 1.0
    return features, mask


def test_mask_weighting_pools_and_attends_to_the_masked_slices():
    head = cls_head().eval()
    features, mask = one_patch_lesion()
    tokens, coverage = head.slice_tokens(features, mask)
    assert tokens.shape == (1, 8, 2 * E + 1)
    mean, std, area = tokens[0, :, :E], tokens[0, :, E : 2 * E], tokens[0, :, -1]
    assert torch.allclose(mean[3:5], features[0, :, 0, 0, 3:5].T)
    assert torch.equal(std[3:5], torch.zeros(2, E))  # one patch: no spread
    assert torch.allclose(mean[:3], features[0, :, :, :, :3].mean((1, 2)).T)
    assert torch.allclose(std[:3], features[0, :, :, :, :3].flatten(1, 2).std(1, correction=0).T)
    assert torch.equal(coverage[0] > 0, torch.arange(8).ge(3) & torch.arange(8).lt(5))
    assert torch.allclose(area, torch.log1p(coverage[0]))

    plain = head({"T1": features}).slice_attention["T1"][0, 3:5].sum()
    masked = head({"T1": features}, mask=mask).slice_attention["T1"][0, 3:5].sum()
    assert masked > plain
    assert masked > 0.5


def test_slice_tokens_see_texture_and_extent_not_only_the_mean():
    """Two lesions with the same mean feature but other spread or size give other tokens."""
    head = cls_head().eval()
    grid = feature_grid(IMAGE, "axial")
    smooth = torch.ones(1, E, *grid)
    checker = (torch.arange(grid[0])[:, None] + torch.arange(grid[1])).remainder(2) * 2 - 1
    rough = smooth + checker[:, :, None].float()  # +-1 around the same mean (6 patches)
    small = torch.zeros(1, 1, *grid)
    small[..., :1, :1, :] = 1
    large = torch.ones(1, 1, *grid)
    smooth_tokens, _ = head.slice_tokens(smooth, large)
    rough_tokens, _ = head.slice_tokens(rough, large)
    assert torch.allclose(smooth_tokens[..., :E], rough_tokens[..., :E], atol=1e-5)
    assert torch.allclose(rough_tokens[..., E : 2 * E], torch.ones(1, IMAGE[2], E))
    assert torch.equal(smooth_tokens[..., E : 2 * E], torch.zeros(1, IMAGE[2], E))
    small_tokens, _ = head.slice_tokens(smooth, small)
    assert (large_area := smooth_tokens[..., -1]).gt(small_tokens[..., -1]).all()
    assert torch.allclose(large_area, torch.log1p(torch.tensor(float(grid[0] * grid[1]))))
    logits = [head({"T1": f}, mask=m).logits for f, m in ((smooth, large), (rough, large))]
    assert not torch.allclose(logits[0], logits[1])


def test_cls_head_trains_with_a_single_slice_token():
    """Batch statistics need two values; one sample of one slice uses the running ones."""
    head = cls_head(modality_dropout=0.0).train()
    out = head({"T1": torch.randn(1, E, 2, 2, 1)})
    out.logits.sum().backward()
    assert head.embed[0].weight.grad is not None


def test_a_mask_of_another_grid_is_refused():
    head = cls_head().eval()
    wrong = torch.ones(1, 1, IMAGE[0], IMAGE[1], IMAGE[2] + 1)  # one slice too many
    with pytest.raises(ValueError, match=r"does not fit the feature grid \(3, 2, 5\)"):
        head({"T1": features_for("axial")}, mask=wrong)
    with pytest.raises(ValueError, match="does not fit"):
        head.slice_tokens(features_for("axial"), wrong)


def test_empty_mask_falls_back_to_the_plain_means():
    head = cls_head().eval()
    features = {"T2": features_for("axial")}
    plain = head(features)
    empty = head(features, mask=torch.zeros(1, 1, *IMAGE))
    assert torch.allclose(plain.logits, empty.logits, atol=1e-6)


@pytest.mark.parametrize("slice_axis", sorted(GRIDS))
def test_cls_head_gradients_and_slice_axes(slice_axis):
    head = cls_head(slice_axis=slice_axis, modality_dropout=0.0).train()
    features = {m: features_for(slice_axis, 2) for m in MODALITIES}
    mask = (torch.rand(2, 1, *IMAGE) > 0.5).float()
    out = head(features, mask=mask)
    n_slices = IMAGE[{"sagittal": 0, "coronal": 1, "axial": 2}[slice_axis]]
    assert out.slice_attention["T1"].shape == (2, n_slices)
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])).backward()
    assert_all_grads(head)


def test_lesion_contrast_tokens_are_the_lesion_minus_its_surroundings():
    head = cls_head(lesion_contrast=True).eval()
    features, mask = one_patch_lesion()
    tokens, _ = head.slice_tokens(features, mask)
    assert tokens.shape == (1, 8, 3 * E + 1)
    contrast = tokens[0, :, 2 * E + 1 :]
    rest = features[0, :, :, :, 3:5].flatten(1, 2)[:, 1:].mean(1)  # every patch but (0, 0)
    assert torch.allclose(contrast[3:5], (features[0, :, 0, 0, 3:5] - rest).T, atol=1e-5)
    assert torch.equal(contrast[:3], torch.zeros(3, E))  # slices the mask misses
    # A gain on the whole slice moves the lesion's mean but not its contrast to the rest.
    shifted, _ = head.slice_tokens(features + 5.0, mask)
    assert torch.allclose(shifted[0, :, 2 * E + 1 :], contrast, atol=1e-4)
    assert not torch.allclose(shifted[0, 3:5, :E], tokens[0, 3:5, :E])
    plain, _ = cls_head().eval().slice_tokens(features, mask)
    assert torch.equal(tokens[..., : 2 * E + 1], plain)  # the first 2E + 1 values as before


def test_lesion_contrast_head_trains():
    head = cls_head(lesion_contrast=True, modality_dropout=0.0).train()
    features = {m: features_for("axial", 2) for m in MODALITIES}
    mask = (torch.rand(2, 1, *IMAGE) > 0.5).float()
    logits = head(features, mask=mask).logits
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert_all_grads(head)


def test_lesion_volume_adds_the_standardised_log_volume_term_to_the_logits():
    head = cls_head(lesion_volume=True, modality_dropout=0.0).train()
    features = {m: features_for("axial", 3) for m in MODALITIES}
    masks = torch.zeros(3, 1, *IMAGE)
    for i, n in enumerate((20, 200, 2000)):
        masks[i].view(-1)[:n] = 1.0
    head(features, mask=masks)  # training: the running moments learn the three volumes
    seen = torch.log1p(torch.tensor([20.0, 200.0, 2000.0]))
    assert torch.allclose(head.volume.mean, seen.mean().view(1), atol=1e-5)
    head.eval()
    out = head(features, mask=masks)
    z = (seen - seen.mean()) / (seen.var(unbiased=False) + 1e-5).sqrt()
    volume_term = head.volume_logits(z[:, None])
    plain = head.classify(out.embedding)
    assert torch.allclose(out.logits, plain + volume_term, atol=1e-5)
    assert not torch.allclose(volume_term[0], volume_term[2])  # another volume, another term
    torch.nn.functional.cross_entropy(head.train()(features, mask=masks).logits,
                                      torch.tensor([0, 1, 2])).backward()  # fmt: skip
    assert_all_grads(head)
    with pytest.raises(VolsegError, match="lesion_volume=true grades partly from the tumour"):
        head.eval()(features)  # no mask


def test_without_lesion_volume_the_head_has_no_volume_term():
    head = cls_head()
    assert head.volume is None and head.volume_logits is None
    assert not any(k.startswith("volume") for k in head.state_dict())
