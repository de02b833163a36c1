"""Frozen-feature cache: keys, reuse, and that the head learns the same from cached features."""

from __future__ import annotations

import os

import pytest
import torch

from tests.engine.conftest import tiny_config
from volseg.data.transforms import build_transforms
from volseg.engine.cache import FeatureCache, cache_identity
from volseg.engine.datasets import finish_sample
from volseg.engine.losses import segmentation_loss
from volseg.engine.plan import make_plan
from volseg.engine.sources import build_run_data, data_items, volume_encoder
from volseg.engine.state import build_session
from volseg.models import build_model
from volseg.runtime import DistContext, Precision


def setup(organs, tmp_path, *overrides):
    config = tiny_config(organs, tmp_path, *overrides)
    plan = make_plan(config)
    torch.manual_seed(0)
    model = build_model(config.model, num_classes=5, modalities=plan.modalities)
    return config, plan, model


def head_gradients(model, features, image, label):
    model.zero_grad()
    segmentation_loss()(model.decode(features, image), label).backward()
    return {n: p.grad.clone() for n, p in model.head.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cached_features_give_the_head_gradients_of_recomputed_ones(organs, tmp_path, dtype):
    config, plan, model = setup(organs, tmp_path)
    case = plan.train_cases[0]
    item = data_items(plan, [case])
    preprocess = build_transforms(config.data, task="segmentation", modalities=["CT"], train=False)
    cache = FeatureCache(tmp_path / "cache", cache_identity(config, model.encoder, ["CT"]), dtype)
    encode = volume_encoder(model, plan, torch.device("cpu"), Precision(None, "cpu"))
    cache.fill([case], item, kind="val", preprocess=preprocess, encode=encode)
    entry = finish_sample(cache.load(cache.key(case, "val")), lut=None)

    sample = finish_sample(preprocess(dict(item[0])), lut=None)
    image, label = sample["image"][None], sample["label"][None].long()
    assert torch.equal(entry["image"][None], image) and torch.equal(entry["label"][None], label)
    recomputed = model.encode(image)
    cached = entry["features"][None].float()
    assert entry["features"].dtype == dtype
    expected = head_gradients(model, recomputed, image, label)
    got = head_gradients(model, cached, image, label)
    for name, grad in expected.items():
        if dtype == torch.float32:  # the same numbers: bit-identical gradients
            assert torch.equal(got[name], grad), name
        else:  # fp16 keeps 11 significant bits: features and gradients agree to ~1e-3
            torch.testing.assert_close(got[name], grad, rtol=2e-2, atol=2e-3 * grad.abs().max())
    if dtype == torch.float16:  # and exactly when the recomputed features are rounded alike
        rounded = head_gradients(model, recomputed.half().float(), image, label)
        assert all(torch.equal(got[n], g) for n, g in rounded.items())


def test_cached_and_file_samples_draw_the_same_slabs(organs, tmp_path):
    config, plan, model = setup(organs, tmp_path, "data.mirror=true")  # flips too
    ctx = DistContext()
    data = build_run_data(
        plan, model, cache_dir=tmp_path / "cache", ctx=ctx, precision=Precision(None, "cpu")
    )
    assert data.fill is not None and data.fill.computed == len(plan.train_cases) + 2
    for index in range(len(plan.train_cases)):
        cached, files = data.cached[(3, index)], data.files[(3, index)]
        assert torch.equal(cached["image"], files["image"])
        assert torch.equal(cached["label"], files["label"])
        assert cached["features"].shape == model.encoder.feature_shape(files["image"].shape[1:])
    # the next run with the same encoder and preprocessing reuses every entry
    again = build_run_data(
        plan, model, cache_dir=tmp_path / "cache", ctx=ctx, precision=Precision(None, "cpu")
    )
    assert (again.fill.computed, again.fill.reused) == (0, data.fill.computed)


def test_grading_entries_hold_no_image_and_sample_like_files(glioma, tmp_path):
    """The MIL head reads features, mask and presence; the 4-channel image is not stored,
    and the binary mask is stored as bytes."""
    config = tiny_config(glioma, tmp_path, "data.mirror=true", task="classification")
    plan = make_plan(config)
    torch.manual_seed(0)
    model = build_model(config.model, num_classes=2, modalities=plan.modalities)
    data = build_run_data(
        plan,
        model,
        cache_dir=tmp_path / "cache",
        ctx=DistContext(),
        precision=Precision(None, "cpu"),
    )
    entries = [torch.load(p, weights_only=True) for p in sorted((tmp_path / "cache").glob("*.pt"))]
    assert len(entries) == len(plan.train_cases) + len(plan.val_cases)
    assert all("image" not in e and {"features", "mask", "presence"} <= set(e) for e in entries)
    assert all(e["mask"].dtype == torch.uint8 for e in entries)  # binary: a byte per voxel
    for index in range(len(plan.train_cases)):
        cached, files = data.cached[(2, index)], data.files[(2, index)]
        assert "image" not in cached
        assert cached["mask"].dtype == files["mask"].dtype == torch.float32
        assert torch.equal(cached["mask"], files["mask"])  # the same slab, flips and turns
        assert torch.equal(cached["presence"], files["presence"])
        width, *grid = model.encoder.feature_shape(files["image"].shape[1:])
        assert cached["features"].shape == (len(plan.modalities) * width, *grid)


def test_cache_key_follows_files_encoder_and_preprocessing(organs, tmp_path):
    config, plan, model = setup(organs, tmp_path)
    case = plan.train_cases[0]
    cache = FeatureCache(tmp_path, cache_identity(config, model.encoder, ["CT"]))
    key = cache.key(case, "train:8")
    assert key == FeatureCache(tmp_path, cache_identity(config, model.encoder, ["CT"])).key(
        case, "train:8"
    )
    assert cache.key(case, "val") != key
    other_window = tiny_config(organs, tmp_path, "data.ct_window=[-100,200]")
    assert (
        FeatureCache(tmp_path, cache_identity(other_window, model.encoder, ["CT"])).key(
            case, "train:8"
        )
        != key
    )
    torch.manual_seed(1)  # another random encoder
    other = build_model(config.model, num_classes=5, modalities=["CT"])
    assert (
        FeatureCache(tmp_path, cache_identity(config, other.encoder, ["CT"])).key(case, "train:8")
        != key
    )
    image = case.images["CT"].path
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:  # an edited image file is a new entry
        assert cache.key(case, "train:8") != key
    finally:
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize(
    ("overrides", "cached"),
    [((), True), (("model.encoder.mode=lora",), False), (("data.cache_features=false",), False)],
)
def test_only_a_frozen_encoder_is_cached(organs, tmp_path, overrides, cached):
    plan = make_plan(tiny_config(organs, tmp_path, *overrides))
    assert build_session(plan, DistContext()).cached is cached


def test_run_training_without_progress_draws_no_cache_bar(organs, tmp_path, monkeypatch):
    """``run_training(progress=False)`` reaches the feature-cache fill with its bar off."""
    from volseg.engine import cache as cache_module
    from volseg.engine import run_training

    bars = []
    original = cache_module.track

    def track(items, label, *, enabled, **kwargs):
        bars.append((label, enabled))
        return original(items, label, enabled=enabled, **kwargs)

    monkeypatch.setattr(cache_module, "track", track)
    run_training(tiny_config(organs, tmp_path, "train.epochs=1"), progress=False)
    assert [label for label, _ in bars] == ["feature cache (train:8)", "feature cache (val)"]
    assert not any(enabled for _, enabled in bars)
