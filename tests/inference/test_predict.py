"""One case: geometry of outputs, label values, probabilities, keep-largest, grading, the API."""

from __future__ import annotations

import numpy as np
import pytest

import volseg
from tests.conftest import GEOMETRIES
from tests.inference.conftest import (
    CLASSES,
    GLIOMA,
    body_ct,
    segmentation_model,
    write_segmentation_checkpoint,
)
from volseg.errors import VolsegError
from volseg.inference import (
    InferenceOptions,
    Predictor,
    StepTimer,
    keep_largest_component,
    predict_grade,
    predict_volume,
)
from volseg.inference.postprocess import original_slice_indices, to_label_values
from volseg.io import Geometry, Image, read_image, write_image
from volseg.models.checkpoint import load_checkpoint
from volseg.synth import case_rng, make_glioma_case

SHAPED = {
    name: Geometry((20, 17, 6), g.spacing, g.origin, g.direction) for name, g in GEOMETRIES.items()
}


@pytest.mark.parametrize("name", ["oblique", "ras_flipped", "anisotropic", "left_handed"])
def test_label_map_has_the_input_geometry_in_memory(seg_checkpoint, name):
    image = body_ct(SHAPED[name])
    labels = predict_volume(seg_checkpoint, image)
    assert labels.geometry.matches(image.geometry, atol=0)
    assert labels.array.dtype == np.uint8 and labels.shape == image.shape
    assert set(np.unique(labels.array)) <= {0, 1, 4}


def test_resampling_preprocessing_still_gives_the_input_grid(tmp_path):
    ckpt = write_segmentation_checkpoint(tmp_path / "s.pt", "data.spacing=[1.5,1.5,4.0]")
    image = body_ct(SHAPED["oblique"])
    predictor = Predictor.from_checkpoint(ckpt)
    result = predictor.predict(image, probabilities=True)
    assert result.labels.geometry.matches(image.geometry, atol=0)
    probs = result.probabilities
    assert probs.dtype == np.float16 and probs.shape == (3, *image.shape)
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=2e-3)
    # The labels come from float32 probabilities; the stored ones are fp16, whose rounding can
    # flip a near-tie of this random model: compare where the two best differ by more.
    top2 = np.sort(probs.astype(np.float32), axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 2e-3
    assert clear.mean() > 0.95
    got = to_label_values(probs.argmax(0), [0, 1, 4])
    np.testing.assert_array_equal(got[clear], result.labels.array[clear])


def test_cropped_air_is_background_with_probability_one(seg_checkpoint):
    g = Geometry((30, 28, 6), (0.8, 0.8, 3.0), (5.0, -3.0, 40.0), GEOMETRIES["oblique"].direction)
    hu = np.full(g.shape, -1000, np.int16)
    hu[10:20, 10:18] = 60  # the body; the foreground crop keeps it plus a 3-voxel margin
    hu[12:15, 12:14, 2:4] = 200
    result = Predictor.from_checkpoint(seg_checkpoint).predict(Image(hu, g), probabilities=True)
    outside = np.ones(g.shape, bool)
    outside[7:23, 7:21] = False
    assert (result.labels.array[outside] == 0).all()
    assert (result.probabilities[0][outside] == 1).all()
    assert result.labels.geometry.matches(g, atol=0)


def test_files_and_checkpoint_forms_give_the_same_prediction(seg_checkpoint, tmp_path):
    image = body_ct(SHAPED["oblique"], seed=2)
    path = write_image(image, tmp_path / "ct.nrrd")
    from_path = predict_volume(seg_checkpoint, path)
    from_dict = volseg.predict_volume(load_checkpoint(seg_checkpoint), image)
    from_run_dir = predict_volume(seg_checkpoint.parent.parent, read_image(path))
    assert from_path.geometry.matches(read_image(path).geometry, atol=0)
    np.testing.assert_array_equal(from_path.array, from_dict.array)
    np.testing.assert_array_equal(from_path.array, from_run_dir.array)


def test_a_bare_model_and_its_checkpoint_agree(seg_checkpoint):
    cfg, model = segmentation_model()
    image = body_ct(SHAPED["anisotropic"])
    bare = predict_volume(model, image, config=cfg)  # a bare model writes class i as i
    from_checkpoint = predict_volume(seg_checkpoint, image).array
    np.testing.assert_array_equal(np.array([0, 1, 4])[bare.array], from_checkpoint)


def test_options_and_timer(seg_checkpoint):
    image = body_ct(SHAPED["identity"])
    timer = StepTimer()
    opts = InferenceOptions(roi_slices=0, naive=True, stitch_device="cpu", chunk=2)
    predictor = Predictor.from_checkpoint(seg_checkpoint, opts)
    assert predictor.options.overlap == 0.5 and predictor.model.encoder.chunk == 2
    predictor.predict(image, timer=timer)
    assert set(timer.seconds) == {"read", "preprocess", "head", "postprocess"}  # naive: no encode
    default = Predictor.from_checkpoint(seg_checkpoint)
    options = default.options
    assert options.roi_slices == 4 and options.tta is False and options.device == "cpu"
    assert default.model.encoder.chunk == "auto"  # not the run's training chunk


def test_wrong_modality_count_is_a_user_error(seg_checkpoint):
    g = SHAPED["identity"]
    two = Image(np.zeros((2, *g.shape), np.int16), g)
    with pytest.raises(VolsegError, match="one per modality"):
        predict_volume(seg_checkpoint, two)
    with pytest.raises(VolsegError, match="grading"):
        predict_grade(seg_checkpoint, two)


def test_keep_largest_removes_small_components():
    labels = np.zeros((12, 12, 6), np.uint8)
    labels[1:6, 1:6, 1:4] = 1  # big liver
    labels[9:11, 9:11, 4] = 1  # stray liver island
    labels[8, 1, 1] = 4  # one-voxel tumour: kept (the largest of its label)
    labels[6, 6, 4] = 1  # touches the big one diagonally only: 26-connected, kept
    labels[5, 5, 3] = 1
    out = keep_largest_component(labels)
    assert out[9:11, 9:11, 4].sum() == 0 and out[8, 1, 1] == 4 and out[6, 6, 4] == 1
    assert (out[labels == 1].astype(bool)).sum() == (labels == 1).sum() - 4
    assert out.dtype == np.uint8


def test_keep_largest_option_leaves_one_component_per_label(tmp_path):
    ckpt = write_segmentation_checkpoint(tmp_path / "s.pt")
    image = body_ct(SHAPED["oblique"], seed=5)
    labels = predict_volume(ckpt, image, options=InferenceOptions(keep_largest=True)).array
    from scipy import ndimage

    for value in set(np.unique(labels)) - {0}:
        assert ndimage.label(labels == value, np.ones((3, 3, 3)))[1] == 1


def grading_case(seed: int = 0):
    case = make_glioma_case(case_rng(seed, 0), (28, 30, 10), grade=1)
    image = case.image  # (4, X, Y, Z): T1, T1ce, T2, FLAIR
    return {"T1": image.channel(0), "FLAIR": image.channel(3)}


def test_grading_probabilities_modalities_and_top_slices(grade_checkpoint):
    images = grading_case()
    result = predict_grade(grade_checkpoint, images, options=InferenceOptions(top_slices=2))
    assert list(result.probabilities) == CLASSES
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.predicted == max(result.probabilities, key=result.probabilities.get)
    assert result.modalities_used == GLIOMA
    ref = images["T1"]
    for m in GLIOMA:
        assert len(result.top_slices[m]) == 2
        axis = result.slice_axis[m]
        assert all(0 <= i < ref.shape[axis] for i in result.top_slices[m])
    only_flair = predict_grade(grade_checkpoint, {"T1": None, "FLAIR": images["FLAIR"]})
    assert only_flair.modalities_used == ["FLAIR"] and list(only_flair.top_slices) == ["FLAIR"]
    assert only_flair.modality_attention["T1"] == 0


def test_top_slices_map_back_to_input_slices():
    # Input stored with its slice axis reversed (LPS-like z flipped) and 2 mm slices; the
    # preprocessed grid is RAS at 4 mm and cropped by 2 slices: slice k is input 9 - (2 + 2k).
    original = np.diag([1.0, 1.0, -2.0, 1.0])
    original[2, 3] = 18.0
    pre = np.diag([1.0, 1.0, 4.0, 1.0])
    pre[2, 3] = 4.0
    idx, axis = original_slice_indices(
        [0, 1, 3],
        affine=pre,
        original_affine=original,
        spatial_shape=(4, 4, 4),
        original_shape=(4, 4, 10),
        slice_axis=2,
    )
    assert axis == 2 and idx == [7, 5, 1]


def test_a_4d_file_feeds_a_two_modality_model(tmp_path):
    ckpt = write_segmentation_checkpoint(tmp_path / "s.pt", modalities=("T1", "T2"))
    g = SHAPED["oblique"]
    both = Image(np.stack([body_ct(g, 1).array, body_ct(g, 2).array]), g)
    path = write_image(both, tmp_path / "mr.nii.gz")
    labels = predict_volume(ckpt, path)
    assert labels.array.ndim == 3 and labels.geometry.matches(read_image(path).geometry)
    by_name = predict_volume(ckpt, {"T1": both.channel(0), "T2": both.channel(1)})
    np.testing.assert_array_equal(by_name.array, labels.array)
    with pytest.raises(VolsegError, match="missing"):
        predict_volume(ckpt, {"T1": both.channel(0), "T2": None})


def test_grading_with_a_tumour_mask(grade_checkpoint):
    case = make_glioma_case(case_rng(0, 0), (28, 30, 10), grade=1)
    images = {"T1": case.image.channel(0), "FLAIR": case.image.channel(3)}
    mask = case.label.with_array((case.label.array > 0).astype(np.uint8))
    masked = predict_grade(grade_checkpoint, images, mask=mask)
    plain = predict_grade(grade_checkpoint, images)
    assert masked.probabilities != plain.probabilities
    axis = masked.slice_axis["FLAIR"]  # input axis; the phantom may be stored flipped/oblique
    others = tuple(a for a in range(3) if a != axis)
    tumour_slices = np.flatnonzero(mask.array.any(axis=others))
    # mask_bias (+2 on the attention logits of masked slices) outweighs random attention
    assert masked.top_slices["FLAIR"][0] in tumour_slices


def test_compile_option_compiles_the_encoder_once_it_is_on_its_device(seg_checkpoint, monkeypatch):
    seen = []
    monkeypatch.setattr(
        "volseg.models.throughput.compile_encoder",
        lambda encoder: seen.append(next(encoder.parameters()).device.type),
    )
    Predictor.from_checkpoint(seg_checkpoint, InferenceOptions(device="cpu"))
    assert seen == []
    Predictor.from_checkpoint(seg_checkpoint, InferenceOptions(device="cpu", compile=True))
    assert seen == ["cpu"]


def test_grading_applies_the_checkpoints_temperature(grade_checkpoint, tmp_path):
    from volseg.engine.checkpoint import save_checkpoint

    checkpoint = load_checkpoint(grade_checkpoint)
    checkpoint["metrics"] = {"temperature": 3.0}
    calibrated_ckpt = save_checkpoint(tmp_path / "calibrated.pt", checkpoint)
    images = grading_case()
    raw = predict_grade(grade_checkpoint, images)
    calibrated = predict_grade(calibrated_ckpt, images)
    assert (raw.temperature, calibrated.temperature) == (1.0, 3.0)
    assert calibrated.predicted == raw.predicted  # scaling never changes the decision
    p = np.array([raw.probabilities[c] for c in CLASSES])
    expected = p ** (1 / 3) / np.sum(p ** (1 / 3))  # softmax(z / T) is p^(1/T) renormalised
    got = np.array([calibrated.probabilities[c] for c in CLASSES])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, p, atol=1e-3)
