"""The pyramid head: image-grid logits on odd and anisotropic sizes, every axis, any input size."""

from __future__ import annotations

import pytest
import torch

from tests.models.test_heads import assert_all_grads
from volseg.config import Config, load_config
from volseg.errors import VolsegError
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


@pytest.mark.parametrize("level", [1, 2])
def test_features_reach_the_logits_through_every_level(level):
    """Every token cell gets a gradient, and so does each level's share of the projection:
    if a change cut the features off the logits, or off one level, this fails."""
    torch.manual_seed(0)
    head = PyramidHead3D(F, 3, channels=4, depth=2).eval()
    shape = (30, 17, 5)
    features = torch.randn(1, F, *feature_grid(shape, "axial"), requires_grad=True)
    head(features, torch.rand(1, 1, *shape)).square().sum().backward()
    per_cell = features.grad.abs().sum(dim=(0, 1))
    assert bool((per_cell > 0).all()), "some token cells do not reach the logits"
    start = sum(head.widths[1:level])
    share = head.project[0].layer.weight.grad[start : start + head.widths[level]]
    assert share.abs().sum() > 0, f"level {level} gets nothing from the features"


def _head_config(encoder: str) -> Config:
    return load_config(
        Config, None,
        [f"model.encoder.name={encoder}", "model.head.name=pyramid", "model.head.channels=4",
         "model.head.depth=2", "model.encoder.layers=[1,2]", "model.encoder.fusion=stack",
         "model.encoder.input_size=native"],
    )  # fmt: skip


def test_encoder_off_pyramid_is_the_same_head_on_the_image_alone():
    """``model.encoder.name=none`` with the pyramid: the same widths and layers, minus the
    projection of the tokens and the ViT channels of the layers that took them."""
    off = build_model(_head_config("none").model, num_classes=3, modalities=["CT"])
    on = build_model(
        _head_config("vit_test_patch14_dinov2").model, num_classes=3, modalities=["CT"]
    )
    assert off.head.project is None and not off.head.uses_features
    assert off.head.widths == on.head.widths
    on_shapes = {k: v.shape for k, v in on.head.named_parameters()}
    off_shapes = {k: v.shape for k, v in off.head.named_parameters()}
    assert set(off_shapes) == {k for k in on_shapes if not k.startswith("project.")}
    widths = on.head.widths  # the layers that took a ViT level lose that level's width
    fed = {"bottom.first.0.layer.weight": widths[2], "decode.1.first.0.layer.weight": widths[1]}
    for name, shape in off_shapes.items():
        if name in fed:
            assert on_shapes[name][1] - shape[1] == fed[name], name
        else:
            assert shape == on_shapes[name], name
    image = torch.rand(1, 1, 20, 18, 6, requires_grad=True)
    logits = off(image)
    assert logits.shape == (1, 3, 20, 18, 6)
    with torch.no_grad():  # the slices-first inference path: the same logits
        torch.testing.assert_close(off(image), logits.detach(), atol=1e-5, rtol=1e-5)
    logits.sum().backward()
    assert image.grad.abs().sum() > 0


def test_token_decoder_adds_the_linear_decoders_logits():
    """The token decoder's logits are the linear decoder on the tokens, resampled onto the
    image grid, added to the pyramid's: with the pyramid's classifier zeroed they are all."""
    from volseg.models.slicing import tokens_to_grid

    torch.manual_seed(0)
    shape = (30, 17, 5)
    head = PyramidHead3D(F, 3, channels=4, depth=2, input_size=56, token_decoder=True).eval()
    features = torch.randn(1, F, *feature_grid(shape, "axial", 14, 56))
    image = torch.rand(1, 1, *shape)
    with torch.no_grad():
        head.classify.weight.zero_()
        head.classify.bias.zero_()
        expected = tokens_to_grid(head.token_logits(features), shape, "axial", input_size=56)
        torch.testing.assert_close(head(features, image), expected)
    head.project[0].layer.weight.data.zero_()  # the pyramid's ViT levels cut off:
    features.requires_grad_(True)
    head(features, image).square().sum().backward()
    assert bool((features.grad.abs().sum(dim=(0, 1)) > 0).all())  # every token still counts


def test_image_dropout_drops_the_coarse_image_levels_in_training_only():
    torch.manual_seed(0)
    shape = (16, 16, 3)
    head = PyramidHead3D(F, 2, channels=4, depth=2, image_dropout=0.999)
    features = torch.randn(2, F, *feature_grid(shape, "axial"))
    head(features, torch.rand(2, 1, *shape)).square().sum().backward()
    down = [p.grad for p in head.down.parameters()]
    assert all(g is None or g.abs().sum() == 0 for g in down)  # dropped: no say in the logits
    assert head.stem.first[0].weight.grad.abs().sum() > 0  # full resolution kept
    head.zero_grad()
    head.eval()  # inference: every level
    head(features, torch.rand(2, 1, *shape)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.down.parameters())


def test_feature_dropout_zeroes_feature_values_in_training_only():
    torch.manual_seed(0)
    shape = (16, 16, 3)
    head = PyramidHead3D(F, 2, channels=4, depth=2, feature_dropout=0.5)
    features = torch.randn(1, F, *feature_grid(shape, "axial"), requires_grad=True)
    image = torch.rand(1, 1, *shape)
    head(features, image).square().sum().backward()
    dropped = (features.grad == 0).float().mean()  # a dropped value has no say in the logits
    assert 0.3 < float(dropped) < 0.7
    features.grad = None
    head.eval()  # inference: every value, deterministic
    head(features, image).square().sum().backward()
    assert bool((features.grad != 0).all())
    assert torch.equal(head(features, image), head(features, image))
    with pytest.raises(ValueError, match="feature_dropout need features"):
        PyramidHead3D(0, 2, feature_dropout=0.5)


def test_token_decoder_and_image_dropout_are_pyramid_options():
    keys = ("token_decoder=true", "image_dropout=0.2", "feature_dropout=0.2")
    for key in keys:
        cfg = load_config(Config, None, ["model.head.name=seg3d", f"model.head.{key}"])
        with pytest.raises(VolsegError, match="pyramid head only"):
            build_model(cfg.model, num_classes=2, modalities=["CT"])
    for key in ("image_dropout", "feature_dropout"):
        with pytest.raises(VolsegError, match=f"model.head.{key}"):
            load_config(Config, None, [f"model.head.{key}=1.0"])
    for key in keys:  # the encoder-off pyramid has no features to act on: one line, no trace
        cfg = load_config(Config, None, ["model.encoder.name=none", f"model.head.{key}"])
        with pytest.raises(VolsegError, match="model.encoder.name=none"):
            build_model(cfg.model, num_classes=2, modalities=["CT"])
    cfg = load_config(Config, None, ["model.head.feature_dropout=0.3"])
    model = build_model(cfg.model, num_classes=2, modalities=["CT"])
    assert model.head.feature_dropout.p == 0.3
