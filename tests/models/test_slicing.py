"""Input scaling geometry: resized slices, token grids, tokens landing on the voxels they saw."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from volseg.models.encoder import SliceEncoder
from volseg.models.slicing import (
    feature_grid,
    pool_to_feature_grid,
    resize_slices,
    resized_extent,
    tokens_to_grid,
)


def test_resized_extent_keeps_the_aspect_and_sets_the_longer_side():
    assert resized_extent((110, 80), 224) == (224, 163)  # 80 * 224 / 110 = 162.9
    assert resized_extent((80, 110), 224) == (163, 224)
    assert resized_extent((512, 512), 224) == (224, 224)
    assert resized_extent((110, 80), None) == (110, 80)


@pytest.mark.parametrize("slice_axis", ["axial", "coronal", "sagittal"])
def test_feature_grid_with_input_size_on_every_axis(slice_axis):
    shape = (30, 21, 5)
    dim = {"sagittal": 0, "coronal": 1, "axial": 2}[slice_axis]
    plane = [n for d, n in enumerate(shape) if d != dim]
    resized = resized_extent(plane, 224)
    expected = [math.ceil(r / 14) for r in resized]
    got = feature_grid(shape, slice_axis, 14, 224)
    assert [g for d, g in enumerate(got) if d != dim] == expected
    assert got[dim] == shape[dim]


@pytest.mark.parametrize("slice_axis", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("input_size", [None, 56, 98])
def test_encoder_features_have_the_announced_grid(slice_axis, input_size):
    encoder = SliceEncoder("vit_test_patch14_dinov2", slice_axis=slice_axis, input_size=input_size)
    image = torch.rand(1, 1, 23, 17, 9)
    features = encoder(image)
    assert tuple(features.shape[1:]) == encoder.feature_shape((23, 17, 9))
    assert tuple(features.shape[2:]) == feature_grid((23, 17, 9), slice_axis, 14, input_size)


def test_stacked_blocks_are_kept_side_by_side():
    encoder = SliceEncoder("vit_test_patch14_dinov2", layers=[0, 2], fusion="stack")
    single = SliceEncoder("vit_test_patch14_dinov2", layers=[2])
    single.load_state_dict(encoder.state_dict())
    image = torch.rand(1, 1, 20, 20, 2)
    with torch.no_grad():
        both, last = encoder(image), single(image)
    assert encoder.out_channels == 2 * encoder.embed_dim == both.shape[1]
    torch.testing.assert_close(both[:, encoder.embed_dim :], last)


@pytest.mark.parametrize("n, input_size", [(32, 224), (30, 56), (110, 224), (300, 224)])
def test_a_token_lands_on_the_voxels_it_saw(n, input_size):
    """Encode a ramp the way the encoder does (resize, pad, one value per patch: the mean of the
    pixels it covers), resample the tokens back: every voxel gets back its own position."""
    ramp = torch.arange(n, dtype=torch.float64)
    image = ramp.view(1, 1, n, 1).expand(1, 1, n, n).clone()
    resized = resize_slices(image, input_size)
    h = resized.shape[-2]
    assert resized_extent((n, n), input_size) == (h, h)
    tokens = F.avg_pool2d(F.pad(resized, (0, -h % 14, 0, -h % 14), mode="replicate"), 14)
    volume = tokens[..., None]  # (1, 1, x, y, 1): one "axial" slice
    back = tokens_to_grid(volume, (n, n, 1), "axial", patch_size=14, input_size=input_size)
    got = back[0, 0, :, 0, 0]
    # Away from the borders (where a token's mean and linear interpolation are clamped), each
    # voxel reads its own coordinate: a half-token shift would be off by ~7 * n / h voxels.
    scale = n / h
    margin = int(math.ceil(21 * scale)) + 1
    inner = slice(margin, n - margin)
    assert (got[inner] - ramp[inner]).abs().max() < 0.05 * max(scale, 1.0)
    nearest = tokens_to_grid(
        volume, (n, n, 1), "axial", patch_size=14, input_size=input_size, mode="nearest"
    )[0, 0, :, 0, 0]
    # The nearest token of voxel u is the one its centre falls into after resizing.
    saw = torch.floor((ramp + 0.5) * h / n / 14).long().clamp(max=tokens.shape[-2] - 1)
    torch.testing.assert_close(nearest, tokens[0, 0, saw, 0])


def test_tokens_to_grid_is_the_identity_on_the_patch_grid_without_scaling():
    features = torch.randn(2, 3, 3, 2, 4)  # the token grid of (30, 17, 4) at patch 14
    same = tokens_to_grid(features, (30, 17, 4), "axial", patch_size=14, stride=14)
    torch.testing.assert_close(same, features)


def test_strided_levels_have_ceil_sizes():
    features = torch.randn(1, 2, *feature_grid((33, 21, 5), "coronal", 14, 56))
    level = tokens_to_grid(features, (33, 21, 5), "coronal", input_size=56, stride=4)
    assert tuple(level.shape[2:]) == (9, 21, 2)


@pytest.mark.parametrize("input_size", [None, 56])
def test_mask_pooling_follows_the_encoder_resize(input_size):
    mask = torch.ones(1, 1, 30, 20, 3)
    pooled = pool_to_feature_grid(mask, "axial", 14, input_size)
    assert tuple(pooled.shape[2:]) == feature_grid((30, 20, 3), "axial", 14, input_size)
    assert pooled[0, 0, 0, 0, 0] == 1.0  # a patch inside the slice is fully covered
    h, w = resized_extent((30, 20), input_size)
    assert math.isclose(
        float(pooled[0, 0, -1, -1, 0]), (h % 14 or 14) * (w % 14 or 14) / 196, rel_tol=1e-6
    )
