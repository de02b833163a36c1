from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.conftest import rotation
from volseg.data import Case, ImageSource, Manifest, save_manifest
from volseg.errors import VolsegError
from volseg.io import Geometry, write_like
from volseg.metrics import SEGMENTATION_METRICS, evaluate_classification, evaluate_segmentation

GEOMETRY = Geometry((20, 16, 10), (0.8, 0.9, 2.0), (10.0, -5.0, 3.0), rotation(12, -20, 33))
FAST = {"workers": 1, "n_resamples": 200}


def reference(case: str) -> np.ndarray:
    ref = np.zeros(GEOMETRY.shape, np.uint8)
    ref[4:10, 4:10, 2:6] = 1  # 6 x 6 x 4 voxels
    if case == "case_a":
        ref[12:16, 3:8, 3:7] = 2
    return ref


def prediction(case: str) -> np.ndarray:
    if case == "case_a":
        return reference(case)  # perfect
    pred = np.zeros(GEOMETRY.shape, np.uint8)
    pred[6:12, 4:10, 2:6] = 1  # shifted 2 voxels along X: overlap 4 x 6 x 4
    pred[15, 12, 8] = 2  # a false positive of a label this reference lacks
    return pred


@pytest.fixture
def folders(tmp_path):
    preds, refs = tmp_path / "pred", tmp_path / "ref"
    for case in ("case_a", "case_b"):
        write_like(reference(case), GEOMETRY, refs / f"{case}.nii.gz", label=True)
        write_like(prediction(case), GEOMETRY, preds / f"{case}.nii.gz", label=True)
    write_like(prediction("case_b"), GEOMETRY, preds / "case_z.nii.gz", label=True)
    return preds, refs


def test_folder_evaluation_values_and_files(folders, tmp_path):
    preds, refs = folders
    out = tmp_path / "eval"
    summary = evaluate_segmentation(preds, refs, out, **FAST)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["labels"] == {"1": "1", "2": "2"} and summary["n_cases"] == 2
    assert summary["unmatched_predictions"] == ["case_z"] and summary["missing_predictions"] == []
    assert summary["tolerance_mm"] == {"1": 2.0, "2": 2.0}
    assert "both_empty" in summary["conventions"]
    a, b = summary["metric_per_case"]
    assert a["case"] == "case_a" and a["prediction_file"].endswith("pred/case_a.nii.gz")
    assert a["metrics"]["1"]["Dice"] == 1.0 and a["metrics"]["2"]["HD95"] == 0.0
    assert b["metrics"]["1"]["Dice"] == pytest.approx(2 * 96 / (144 + 144))
    assert b["metrics"]["1"]["HD95"] == pytest.approx(1.6, abs=1e-4)  # 2 voxels x 0.8 mm
    assert b["metrics"]["2"]["Dice"] == 0.0 and b["metrics"]["2"]["HD95"] is None
    assert summary["mean"]["1"]["Dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert summary["mean"]["2"]["Dice"] == pytest.approx(0.5)
    assert summary["mean"]["2"]["HD95"] == 0.0  # the undefined case is left out ...
    assert summary["undefined_count"]["2"]["HD95"] == 1  # ... and counted
    assert summary["foreground_mean"]["Dice"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert summary["median"]["1"]["TP"] == pytest.approx((144 + 96) / 2)
    low, high = summary["ci95"]["1"]["Dice"]
    assert 2 / 3 - 1e-9 <= low <= summary["mean"]["1"]["Dice"] <= high <= 1.0
    assert set(summary["ci95_foreground"]) == {"Dice", "IoU", "NSD", "HD95", "ASSD"}

    with (out / "per_case.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["label"]) for r in rows] == [
        ("case_a", "1"),
        ("case_a", "2"),
        ("case_b", "1"),
        ("case_b", "2"),
    ]
    assert set(SEGMENTATION_METRICS) <= set(rows[0])
    assert float(rows[2]["Dice"]) == pytest.approx(2 / 3) and rows[3]["HD95"] == ""


def test_explicit_labels_and_parallel_workers_agree(folders, tmp_path):
    preds, refs = folders
    one = evaluate_segmentation(preds, refs, tmp_path / "one", labels={1: "liver"}, **FAST)
    assert one["labels"] == {"1": "liver"}
    assert list(one["metric_per_case"][1]["metrics"]) == ["1"]
    two = evaluate_segmentation(
        preds, refs, tmp_path / "two", labels={0: "bg", 1: "liver"}, workers=2, n_resamples=200
    )
    assert two["metric_per_case"] == one["metric_per_case"] and two["ci95"] == one["ci95"]


def test_geometry_mismatch_is_an_error(folders):
    preds, refs = folders
    moved = Geometry(GEOMETRY.shape, GEOMETRY.spacing, GEOMETRY.origin + 1.0, GEOMETRY.direction)
    write_like(prediction("case_a"), moved, preds / "case_a.nii.gz", label=True)
    with pytest.raises(VolsegError, match="case case_a: .*origin"):
        evaluate_segmentation(preds, refs, preds.parent / "out", **FAST)


def test_missing_prediction_is_an_error_unless_allowed(folders, tmp_path):
    preds, refs = folders
    write_like(reference("case_c"), GEOMETRY, refs / "case_c.nii.gz", label=True)
    with pytest.raises(VolsegError, match="no prediction for 1 reference case.*case_c"):
        evaluate_segmentation(preds, refs, tmp_path / "out", **FAST)
    summary = evaluate_segmentation(preds, refs, tmp_path / "out", allow_missing=True, **FAST)
    assert summary["missing_predictions"] == ["case_c"] and summary["n_cases"] == 2


def test_manifest_as_reference(folders, tmp_path):
    preds, refs = folders
    cases = [
        Case(c, {"CT": ImageSource(refs / f"{c}.nii.gz")}, label=refs / f"{c}.nii.gz")
        for c in ("case_a", "case_b")
    ]
    manifest = Manifest("toy", "segmentation", ["CT"], cases, {0: "bg", 1: "liver", 2: "kidney"})
    path = save_manifest(manifest, tmp_path / "dataset" / "manifest.json")
    summary = evaluate_segmentation(preds, path.parent, tmp_path / "out", **FAST)
    assert summary["labels"] == {"1": "liver", "2": "kidney"}
    assert summary["metric_per_case"][1]["metrics"]["1"]["Dice"] == pytest.approx(2 / 3)


def test_fractional_prediction_is_an_error(folders, tmp_path):
    preds, refs = folders
    write_like(prediction("case_a") * 0.5, GEOMETRY, preds / "case_a.nii.gz")
    with pytest.raises(VolsegError, match="case_a.nii.gz: holds fractional values"):
        evaluate_segmentation(preds, refs, tmp_path / "out", **FAST)


def write_csv(path, header, rows):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def grading(tmp_path):
    scores = {"p1": 0.1, "p2": 0.4, "p3": 0.35, "p4": 0.8, "extra": 0.5}
    predictions = write_csv(
        tmp_path / "predictions.csv",
        ["case_id", "prob_low", "prob_high", "predicted"],
        [[c, 1 - s, s, "high" if s >= 0.5 else "low"] for c, s in scores.items()],
    )
    truth = {"p1": "low", "p2": "low", "p3": "high", "p4": "high"}
    ref = write_csv(tmp_path / "truth.csv", ["case_id", "label"], list(truth.items()))
    return predictions, ref, truth


def test_classification_with_csv_reference(grading, tmp_path):
    predictions, ref, _ = grading
    out = tmp_path / "eval"
    summary = evaluate_classification(predictions, ref, out, classes=["low", "high"])
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["metrics"]["AUC"] == pytest.approx(0.75)
    assert summary["confusion_matrix"] == [[2, 0], [1, 1]]
    assert summary["unmatched_predictions"] == ["extra"] and summary["n_cases"] == 4
    assert summary["roc_curve"]["high"]["thresholds"][0] is None  # +inf -> null
    assert len(summary["ci95"]["AUC"]) == 2
    with (out / "per_case.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == ["p1", "p2", "p3", "p4"]
    assert rows[2]["true"] == "high" and rows[2]["predicted"] == "low" and rows[2]["correct"] == "0"


def test_classification_with_manifest_reference(grading, tmp_path):
    predictions, _, truth = grading
    cases = [
        Case(c, {"T1": ImageSource(tmp_path / f"{c}.nii.gz")}, target=t) for c, t in truth.items()
    ]
    manifest = Manifest("g", "classification", ["T1"], cases, classes=["low", "high"])
    path = save_manifest(manifest, tmp_path / "manifest.json")
    summary = evaluate_classification(predictions, path, tmp_path / "out", n_resamples=100)
    assert summary["classes"] == ["low", "high"]
    assert summary["metrics"]["AUC"] == pytest.approx(0.75)


def test_classification_input_errors(grading, tmp_path):
    predictions, ref, truth = grading
    write_csv(ref, ["case_id", "label"], [*truth.items(), ("p5", "low")])
    with pytest.raises(VolsegError, match="no prediction for 1 reference case.*p5"):
        evaluate_classification(predictions, ref, tmp_path / "out")
    bad = write_csv(tmp_path / "bad.csv", ["case_id", "prob_low", "prob_high"], [["p1", 0.5, 0.7]])
    with pytest.raises(VolsegError, match="bad.csv: line 2 .*sum to 1.2"):
        evaluate_classification(bad, ref, tmp_path / "out")
    with pytest.raises(VolsegError, match="do not match the classes"):
        evaluate_classification(predictions, ref, tmp_path / "out", classes=["a", "b"])
