"""Label maps made where the probabilities lie: the voxel map and the chunked inversion give
what inverting every probability volume and taking the argmax on the input grid gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import rotation
from tests.data.test_transforms import ct_pipeline, restored
from volseg.data.invert import invert_prediction, voxel_map
from volseg.data.loading import REFERENCE_KEY
from volseg.inference.postprocess import input_class_index
from volseg.io import Image
from volseg.synth import make_organ_case

K = 5
STORAGE = {  # axis order and flips the phantom is stored with, and an oblique tilt or none
    "synth": ((0, 1, 2), (False, False, False), None),
    "permuted": ((2, 0, 1), (True, False, True), None),
    "oblique": ((1, 0, 2), (True, False, True), rotation(8, -6, 11)),
}


def stored(name: str) -> Image:
    image = make_organ_case(np.random.default_rng(3), (40, 36, 12))[0]
    perm, flips, tilt = STORAGE[name]
    return restored(image, perm, flips, tilt if tilt is not None else np.eye(3))


def preprocessed(image: Image, spacing=None) -> tuple[dict, object]:
    pipeline = ct_pipeline(False, spacing=spacing)
    return pipeline({"image": image}), pipeline


def full_inverse_argmax(probs: torch.Tensor, data: dict, pipeline) -> torch.Tensor:
    """The reference: every class back to the input grid, cropped voxels background, argmax."""
    back = invert_prediction(probs, data, pipeline).as_tensor()
    back[0] += (1 - back.sum(dim=0)).clamp_min(0)
    return back.argmax(dim=0)


def random_probs(shape, seed: int = 0) -> torch.Tensor:
    logits = torch.randn((K, *shape), generator=torch.Generator().manual_seed(seed)) * 3
    return torch.softmax(logits, dim=0)


@pytest.mark.parametrize("name", list(STORAGE))
def test_no_resampling_gives_a_voxel_map_equal_to_the_full_inverse(name) -> None:
    image = stored(name)
    data, pipeline = preprocessed(image)
    shape = tuple(data["image"].shape[1:])
    assert shape != image.shape  # cropped (and for "permuted", reordered)
    moves = voxel_map(data["image"])
    assert moves is not None and moves.shape == image.shape
    probs = random_probs(shape)
    got = input_class_index(probs, data, pipeline)
    assert got.dtype == torch.uint8 and tuple(got.shape) == image.shape
    expected = full_inverse_argmax(probs, data, pipeline)
    assert torch.equal(got.long(), expected)
    # the image itself goes back voxel for voxel: the map is exact, not just label-consistent
    back = moves.to_input(data["image"].as_tensor(), fill=-1)
    inside = back[0] >= 0
    assert 0 < inside.float().mean() < 1  # the crop removed air
    again = invert_prediction(data["image"], data, pipeline, nearest=True).as_tensor()
    assert torch.equal(back[0][inside], again[0][inside])


def test_resampling_has_no_voxel_map_and_chunks_match_the_full_inverse() -> None:
    image = stored("oblique")
    data, pipeline = preprocessed(image, spacing=(1.3, 1.1, 2.5))
    assert voxel_map(data["image"]) is None
    probs = random_probs(tuple(data["image"].shape[1:]), seed=1)
    expected = full_inverse_argmax(probs, data, pipeline)
    for chunk in (1, 3, K):
        got = input_class_index(probs, data, pipeline, chunk=chunk)
        assert got.dtype == torch.uint8
        assert torch.equal(got.long(), expected), chunk
    assert (expected == 0).float().mean() < 0.5  # not all background: the test can fail


def test_cropped_voxels_and_ties_are_background() -> None:
    image = stored("synth")
    data, pipeline = preprocessed(image)
    probs = torch.full((K, *data["image"].shape[1:]), 1.0 / K)  # every class tied
    got = input_class_index(probs, data, pipeline)
    assert not got.any()
    probs = torch.zeros_like(probs)
    probs[2] = 1
    got = input_class_index(probs, data, pipeline)
    ones = got == 2
    assert 0 < ones.float().mean() < 1 and not got[~ones].any()  # crop margin is background


def test_voxel_map_of_a_shift_by_half_a_voxel_is_none() -> None:
    image = stored("synth")
    data, _ = preprocessed(image)
    volume = data["image"].clone()
    shifted = volume.affine.clone()
    shifted[:3, 3] += shifted[:3, 0] * 0.5
    volume.affine = shifted
    assert voxel_map(volume) is None


def test_predictor_label_map_equals_the_probability_path(seg_checkpoint) -> None:
    """``Predictor.run`` without probabilities (index path) == with them (full inverse)."""
    from volseg.inference import InferenceOptions, Predictor, StepTimer

    predictor = Predictor.from_checkpoint(seg_checkpoint, InferenceOptions(device="cpu"))
    image = stored("permuted")
    timer = StepTimer()
    prepared = predictor.prepare(image, timer=timer)
    fast = predictor.run(prepared, timer=timer)
    full = predictor.run(prepared, timer=timer, probabilities=True)
    assert full.probabilities is not None and fast.probabilities is None
    np.testing.assert_array_equal(fast.labels.array, full.labels.array)
    assert len(np.unique(fast.labels.array)) >= 2  # a real map, not one class everywhere
    assert fast.labels.geometry.matches(image.geometry)
    assert prepared.case[REFERENCE_KEY].shape == image.shape


def test_postprocess_seconds_are_counted_once(seg_checkpoint, monkeypatch) -> None:
    """The label-value step runs inside the timed post-processing, not timed a second time."""
    import time

    import volseg.inference.predict as predict_module
    from volseg.inference import InferenceOptions, Predictor, StepTimer

    predictor = Predictor.from_checkpoint(seg_checkpoint, InferenceOptions(device="cpu"))
    plain = predict_module.to_label_values
    monkeypatch.setattr(predict_module, "to_label_values", lambda *a: time.sleep(0.3) or plain(*a))
    for probabilities in (False, True):
        timer = StepTimer()
        predictor.predict(stored("synth"), timer=timer, probabilities=probabilities)
        assert 0.3 <= timer.seconds["postprocess"] < 0.55, probabilities
