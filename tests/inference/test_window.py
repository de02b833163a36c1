"""Slab sliding windows: cached features vs the whole model per window, blending, TTA, AMP."""

from __future__ import annotations

import pytest
import torch

from tests.inference.conftest import segmentation_model
from volseg.errors import VolsegError
from volseg.inference.window import (
    segment_probabilities,
    slab_weights,
    sliding_window_logits,
)


@pytest.fixture(scope="module")
def axial():
    return segmentation_model()[1]


@pytest.mark.parametrize(
    "roi, overlap, batch, mode",
    [(4, 0.5, 1, "gaussian"), (3, 0.25, 3, "constant"), (None, 0.25, 1, "gaussian")],
)
def test_cached_windows_equal_naive_windows(axial, roi, overlap, batch, mode):
    torch.manual_seed(0)
    image = torch.rand(1, 1, 30, 17, 9)  # in-plane 30 -> 3 patches, the last one padded
    kw = dict(roi_slices=roi, overlap=overlap, sw_batch_size=batch, mode=mode)
    cached = sliding_window_logits(axial, image, **kw)
    naive = sliding_window_logits(axial, image, naive=True, **kw)
    assert cached.shape == (1, 3, 30, 17, 9) and cached.dtype == torch.float32
    torch.testing.assert_close(cached, naive, atol=1e-5, rtol=1e-5)


def test_one_window_is_the_whole_model(axial):
    image = torch.rand(1, 1, 16, 15, 6)
    with torch.no_grad():
        expected = axial(image)
    for roi in (None, 6, 50):  # more slices than the volume has: one window
        got = sliding_window_logits(axial, image, roi_slices=roi, overlap=0.5, sw_batch_size=2)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_coronal_slicing_and_two_channels_agree():
    model = segmentation_model("model.encoder.slice_axis=coronal", modalities=("T1", "T2"))[1]
    image = torch.rand(1, 2, 15, 7, 16)  # slices along Y
    kw = dict(roi_slices=3, overlap=0.5, sw_batch_size=2)
    cached = sliding_window_logits(model, image, **kw)
    torch.testing.assert_close(
        cached, sliding_window_logits(model, image, naive=True, **kw), atol=1e-5, rtol=1e-5
    )
    assert cached.shape == (1, 3, 15, 7, 16)


@pytest.mark.parametrize("slice_axis", ["coronal", "sagittal"])
def test_scaled_input_and_stacked_blocks_keep_cached_equal_to_naive(slice_axis):
    """Input scaling (tokens on their own grid) and stacked blocks, slabs along another axis."""
    model = segmentation_model(
        f"model.encoder.slice_axis={slice_axis}",
        "model.encoder.input_size=42",
        "model.encoder.layers=[0,2]",
        "model.encoder.fusion=stack",
    )[1]
    image = torch.rand(1, 1, 13, 11, 10)
    kw = dict(roi_slices=4, overlap=0.5, sw_batch_size=2)
    cached = sliding_window_logits(model, image, **kw)
    naive = sliding_window_logits(model, image, naive=True, **kw)
    assert cached.shape == (1, 3, 13, 11, 10)
    torch.testing.assert_close(cached, naive, atol=1e-5, rtol=1e-5)


def test_precomputed_features_are_used(axial):
    image = torch.rand(1, 1, 15, 15, 5)
    features = axial.encode(image)
    kw = dict(roi_slices=2, overlap=0.5, sw_batch_size=1)
    with_features = sliding_window_logits(axial, image, features=features, **kw)
    torch.testing.assert_close(with_features, sliding_window_logits(axial, image, **kw))
    half = sliding_window_logits(axial, image, features=features.half(), **kw)  # fp16 cache
    torch.testing.assert_close(half, with_features, atol=1e-2, rtol=1e-2)
    wrong = sliding_window_logits(axial, image, features=torch.zeros_like(features), **kw)
    assert not torch.allclose(wrong, with_features)


def test_stitched_output_device_and_blend_weights(axial):
    out = sliding_window_logits(
        axial,
        torch.rand(1, 1, 15, 15, 5),
        roi_slices=2,
        overlap=0.5,
        sw_batch_size=1,
        stitch_device="cpu",
    )
    assert out.device == torch.device("cpu")
    w = slab_weights(5, 1, "gaussian", "cpu")
    assert w.shape == (1, 5, 1) and w.max() == 1 and w[0, 2, 0] == 1 and w.min() > 0
    assert torch.equal(slab_weights(4, 2, "constant", "cpu"), torch.ones(1, 1, 4))


def test_tta_prediction_is_flip_equivariant(axial):
    torch.manual_seed(1)
    image = torch.rand(1, 1, 16, 15, 8)
    kw = dict(roi_slices=4, overlap=0.5, sw_batch_size=2, tta=True)  # windows at 0, 2, 4
    probs = segment_probabilities(axial, image, **kw)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 16, 15, 8))
    for axis in (2, 3, 4):
        flipped = segment_probabilities(axial, image.flip(axis), **kw)
        torch.testing.assert_close(flipped, probs.flip(axis), atol=1e-5, rtol=1e-5)
    plain = segment_probabilities(axial, image, **{**kw, "tta": False})
    assert not torch.allclose(plain, probs, atol=1e-4)


def test_tta_encodes_four_times_and_naive_tta_agrees(axial, monkeypatch):
    image = torch.rand(1, 1, 15, 15, 4)
    calls = []
    steps = []

    class Timer:
        def __call__(self, step):
            steps.append(step)
            return torch.no_grad()

    original = type(axial).encode
    monkeypatch.setattr(type(axial), "encode", lambda self, x: calls.append(1) or original(self, x))
    kw = dict(roi_slices=2, overlap=0.5, sw_batch_size=1, tta=True)
    cached = segment_probabilities(axial, image, timer=Timer(), **kw)
    assert len(calls) == 4 and steps.count("encode") == 4 and steps.count("head") == 8
    naive = segment_probabilities(axial, image, naive=True, **kw)
    torch.testing.assert_close(cached, naive, atol=1e-5, rtol=1e-5)


def test_window_options_are_checked(axial):  # amp settings: tests/test_runtime.py
    image = torch.rand(1, 1, 15, 15, 4)
    for bad in (dict(overlap=1.0), dict(sw_batch_size=0), dict(roi_slices=0), dict(mode="x")):
        kw = {**dict(roi_slices=2, overlap=0.5, sw_batch_size=1), **bad}
        with pytest.raises(VolsegError):
            sliding_window_logits(axial, image, **kw)
