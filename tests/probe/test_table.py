"""Probe scores: known values, case-level bootstrap, spread across seeds; the written table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from volseg.probe.table import patch_scores, score_predictions, table_rows, write_tables


def test_patch_scores_known_values():
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])  # label 2 absent and never predicted
    s = patch_scores(cm)
    assert s["balanced_accuracy"] == pytest.approx((8 / 10 + 3 / 4) / 2)
    assert s["patch_dice"] == pytest.approx(2 * 3 / (4 + 5))


def test_perfect_grading_scores_one_with_a_degenerate_interval():
    y = np.array([0, 1, 0, 1, 1, 0])
    probs = np.eye(2)[y] * 0.8 + 0.1
    s = score_predictions("classification", y, np.arange(6), [probs], 2, n_resamples=200)
    assert s["balanced_accuracy"] == {"value": 1.0, "ci95_low": 1.0, "ci95_high": 1.0}
    assert s["AUC"]["value"] == 1.0 and "std" not in s["AUC"]


def test_seeds_are_averaged_and_their_spread_reported():
    y = np.array([0, 1, 0, 1])
    right, wrong = np.eye(2)[y], np.eye(2)[1 - y]
    s = score_predictions("classification", y, np.arange(4), [right, wrong], 2, n_resamples=0)
    assert s["balanced_accuracy"]["value"] == 0.5
    assert (s["balanced_accuracy"]["min"], s["balanced_accuracy"]["max"]) == (0.0, 1.0)
    assert s["balanced_accuracy"]["std"] == 0.5


def test_segmentation_bootstrap_resamples_cases_not_patches():
    # case 0: all 10 patches right; case 1: all 10 wrong -> a resample is all-right, all-wrong
    # or mixed, so the interval spans [0, 1] however many patches a case has
    labels = np.tile([0, 1], 10)
    groups = np.repeat([0, 1], 10)
    pred = np.where(groups == 0, labels, 1 - labels)
    s = score_predictions("segmentation", labels, groups, [np.eye(2)[pred]], 2, n_resamples=500)
    assert s["balanced_accuracy"]["value"] == 0.5
    assert s["balanced_accuracy"]["ci95_low"] == 0.0 and s["balanced_accuracy"]["ci95_high"] == 1.0


def test_write_tables(tmp_path):
    scores = {"balanced_accuracy": {"value": 0.75, "ci95_low": 0.5, "ci95_high": float("nan")}}
    rows = table_rows({"protocol": "knn", "setting": "k=10", "k": 10, "n_train": 8}, scores)
    csv_path, json_path = write_tables(tmp_path, rows, {"pooling": "p"})
    (row,) = list(csv.DictReader(csv_path.open()))
    assert (row["protocol"], row["metric"], row["value"], row["ci95_high"]) == (
        "knn", "balanced_accuracy", "0.75", ""
    )  # fmt: skip
    doc = json.loads(json_path.read_text())
    assert doc["pooling"] == "p" and doc["rows"][0]["ci95_high"] is None
