"""Several runs as one (probabilities averaged on the case's grid), and --roi-subset."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.conftest import GEOMETRIES
from tests.inference.conftest import (
    CLASSES,
    body_ct,
    write_grading_checkpoint,
    write_segmentation_checkpoint,
)
from tests.inference.test_predict import grading_case
from volseg.errors import VolsegError
from volseg.inference import (
    Ensemble,
    InferenceOptions,
    as_predictor,
    predict_cohort,
    predict_volume,
)
from volseg.inference.roi import keep_labels, roi_values
from volseg.io import Geometry, write_image


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two segmentation runs with the same labels (different seeds and slab sizes)."""
    folder = tmp_path_factory.mktemp("runs")
    a = write_segmentation_checkpoint(folder / "a/checkpoints/best.pt", seed=0)
    b = write_segmentation_checkpoint(folder / "b/checkpoints/best.pt", "data.slab=3", seed=7)
    return a.parents[1], b.parents[1]


def ct():
    g = GEOMETRIES["oblique"]
    return body_ct(Geometry((20, 17, 6), g.spacing, g.origin, g.direction), 3)


def test_ensemble_averages_probabilities_on_the_input_grid(runs):
    image = ct()
    a, b = (as_predictor(run) for run in runs)
    probs = [a.predict(image, probabilities=True).probabilities for a in (a, b)]
    ensemble = as_predictor(list(runs))
    assert isinstance(ensemble, Ensemble)
    result = ensemble.predict(image, probabilities=True)
    mean = (probs[0].astype(np.float32) + probs[1].astype(np.float32)) / 2
    np.testing.assert_allclose(result.probabilities.astype(np.float32), mean, atol=2e-3)
    clear = np.sort(mean, axis=0)[-1] - np.sort(mean, axis=0)[-2] > 1e-2  # no near-tie
    values = np.array([0, 1, 4])
    expected = values[np.argmax(mean, axis=0)]
    np.testing.assert_array_equal(result.labels.array[clear], expected[clear])
    assert result.labels.geometry.matches(image.geometry)
    single = predict_volume(runs[0], image)
    assert not np.array_equal(single.array, result.labels.array)  # the second run counted


def test_runs_with_other_labels_or_tasks_are_refused_naming_both(runs, tmp_path):
    other = write_segmentation_checkpoint(
        tmp_path / "spleen.pt", labels={0: "background", 1: "spleen", 4: "tumour"}
    )
    with pytest.raises(VolsegError) as error:
        as_predictor([runs[0], other])
    message = str(error.value)
    assert str(runs[0]) in message and str(other) in message and "label maps differ" in message
    grading = write_grading_checkpoint(tmp_path / "grade.pt")
    with pytest.raises(VolsegError, match="tasks differ"):
        as_predictor([runs[0], grading])


def test_grading_ensemble_averages_class_probabilities(tmp_path):
    first = write_grading_checkpoint(tmp_path / "g1.pt", seed=1)
    second = write_grading_checkpoint(tmp_path / "g2.pt", seed=2)
    images = grading_case()
    options = InferenceOptions(top_slices=2)
    alone = [as_predictor(c, options=options).predict(images) for c in (first, second)]
    both = as_predictor([first, second], options=options).predict(images)
    for c in CLASSES:
        mean = (alone[0].probabilities[c] + alone[1].probabilities[c]) / 2
        assert both.probabilities[c] == pytest.approx(mean, abs=1e-6)
    assert both.predicted == max(both.probabilities, key=both.probabilities.get)
    for m in ("T1", "FLAIR"):
        assert len(both.top_slices[m]) == 2
        assert set(both.top_slices[m]) <= set(alone[0].top_slices[m] + alone[1].top_slices[m])
    for m in ("T1", "FLAIR"):  # the same through a cohort: a folder of modality-named files
        write_image(images[m], tmp_path / "in" / f"p1_{m}.nii.gz")
    result = predict_cohort([first, second], tmp_path / "in", tmp_path / "out", options=options)
    assert result.exit_code == 0
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["case_id"] == "p1" and row["predicted"] == both.predicted
    assert float(row["prob_high"]) == pytest.approx(both.probabilities["high"], abs=1e-5)


def test_roi_subset_writes_only_the_named_labels_with_their_values(runs):
    image = ct()
    full = predict_volume(runs[0], image).array
    assert {1, 4} <= set(np.unique(full))  # both labels present, so the subset is tested
    tumour = predict_volume(runs[0], image, options=InferenceOptions(roi_subset="tumour"))
    np.testing.assert_array_equal(tumour.array, np.where(full == 4, 4, 0))
    both = predict_volume(runs[0], image, options=InferenceOptions(roi_subset=("liver", "tumour")))
    np.testing.assert_array_equal(both.array, full)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("livr",), "--roi-subset 'livr' is not a label of run; did you mean 'liver'? its labels"),
        (("LIVER",), "did you mean 'liver'?"),
        (("spleen",), "--roi-subset 'spleen' is not a label of run; its labels are background, "),
    ],
)
def test_roi_subset_names_are_checked_with_a_suggestion(names, message):
    with pytest.raises(VolsegError) as error:
        roi_values(names, {0: "background", 1: "liver", 4: "tumour"}, "run")
    assert message in str(error.value)


def test_roi_subset_is_refused_up_front(runs, tmp_path):
    with pytest.raises(VolsegError, match="did you mean 'tumour'"):
        as_predictor(runs[0], options=InferenceOptions(roi_subset="tumor"))
    with pytest.raises(VolsegError, match="grades cases and writes no labels"):
        as_predictor(
            write_grading_checkpoint(tmp_path / "g.pt"), options=InferenceOptions(roi_subset="x")
        )
    with pytest.raises(VolsegError, match="needs label names"):
        InferenceOptions(roi_subset=",")


def test_keep_labels_keeps_values_and_dtype():
    labels = np.array([[[0, 1, 4, 7]]], dtype=np.uint8)
    out = keep_labels(labels, [4, 7])
    assert out.dtype == np.uint8 and out.tolist() == [[[0, 0, 4, 7]]]
    assert labels.tolist() == [[[0, 1, 4, 7]]]  # the input is left as it was
