"""The pyramid head: image-grid logits on odd and anisotropic sizes, every axis, any input size."""

from __future__ import annotations

import pytest
import torch

from tests.models.test_heads import assert_all_grads
from volseg.config import Config, load_config
from volseg.models import build_model
from volseg.models.pyramid_head import PyramidHead3D, _InPlane
from volseg.models.registry import count_parameters
from volseg.models.slicing import feature_grid

F = 24  # e.g. two stacked blocks of a 12-wide test encoder


@pytest.mark.parametrize("anisotropic", [True, False])
@pytest.mark.parametrize("input_size", [None, 56])
@pytest.mark.parametrize("slice_axis", ["axial", "coronal", "sagittal"])
def test_pyramid_logits_have_the_image_grid(slice_axis, input_size, anisotropic):
    torch.manual_seed(0)
    image_shape = (23, 17, 9)  # odd, none a multiple of 14 or of 2**depth
    head = PyramidHead3D(
        F, 3, image_channels=2, channels=4, depth=2, input_size=input_size,
        slice_axis=slice_axis, anisotropic=anisotropic,
    )  # fmt: skip
    features = torch.randn(2, F, *feature_grid(image_shape, slice_axis, 14, input_size))
    logits = head(features, torch.randn(2, 2, *image_shape))
    assert logits.shape == (2, 3, *image_shape)
    assert torch.isfinite(logits).all()
    (logits * torch.randn_like(logits)).mean().backward()
    assert_all_grads(head)


def test_pyramid_on_a_thin_anisotropic_slab_and_tiny_slices():
    head = PyramidHead3D(F, 2, channels=4, depth=3, input_size=224)
    for shape in [(5, 3, 2), (64, 40, 1)]:
        features = torch.randn(1, F, *feature_grid(shape, "axial", 14, 224))
        assert head(features, torch.rand(1, 1, *shape)).shape == (1, 2, *shape)


def test_pyramid_rejects_features_of_another_grid():
    head = PyramidHead3D(F, 2, channels=4, depth=1, input_size=56)
    with pytest.raises(ValueError, match="expected grid"):
        head(torch.randn(1, F, 3, 2, 5), torch.randn(1, 1, 30, 17, 5))  # the native grid


def test_pyramid_uses_the_features_and_the_voxels():
    torch.manual_seed(0)
    head = PyramidHead3D(F, 2, channels=4, depth=2).eval()
    image = torch.rand(1, 1, 30, 17, 5)
    features = torch.randn(1, F, *feature_grid((30, 17, 5), "axial"))
    base = head(features, image)
    other_features = head(features + torch.randn_like(features), image)
    poked = image.clone()
    poked[0, 0, 5, 5, 2] += 5.0
    assert not torch.allclose(base, other_features)
    assert not torch.allclose(base[..., 5, 5, 2], head(features, poked)[..., 5, 5, 2])


def test_default_segmentation_head_is_light_on_vit_b_features():
    """Four stacked ViT-B blocks (3072 channels): at most 5 M parameters."""
    cfg = load_config(Config, "configs/synthetic_organs.yaml", [])
    assert cfg.model.head.name == "pyramid"
    head = build_model(cfg.model, num_classes=5, modalities=["CT"]).head
    assert count_parameters(head) <= 5_000_000
    blocks = len(cfg.model.encoder.layers)
    vit_b = PyramidHead3D(
        768 * blocks, 5, channels=cfg.model.head.channels, depth=cfg.model.head.depth
    )
    assert count_parameters(vit_b) <= 5_000_000


@pytest.mark.parametrize("anisotropic", [True, False])
@pytest.mark.parametrize("slice_axis", ["axial", "coronal", "sagittal"])
def test_inference_layout_gives_the_training_path_logits(slice_axis, anisotropic, monkeypatch):
    """No gradients: the slices-first layout, same weights, same logits, no stacked 2D path."""
    torch.manual_seed(1)
    image_shape = (23, 17, 9)
    head = PyramidHead3D(
        F, 3, image_channels=2, channels=4, depth=2, slice_axis=slice_axis,
        anisotropic=anisotropic, input_size=None,
    ).eval()  # fmt: skip
    features = torch.randn(2, F, *feature_grid(image_shape, slice_axis, 14, None))
    image = torch.randn(2, 2, *image_shape)
    trained = head(features, image).detach()
    with torch.no_grad():
        head.slices_first = False
        torch.testing.assert_close(head(features, image), trained, atol=1e-6, rtol=1e-6)
        head.slices_first = True
        stacked = []  # the stacked-slices path; only the token projection may take it
        plain = _InPlane.forward
        monkeypatch.setattr(_InPlane, "forward", lambda m, x: stacked.append(m) or plain(m, x))
        fast = head(features, image)
    assert stacked == [head.project[0]]
    assert fast.shape == trained.shape
    torch.testing.assert_close(fast, trained, atol=1e-5, rtol=1e-5)
