"""`volseg report` on a summary.json of another schema (issue 14, finding 12): one line naming
the file and the key, instead of a traceback from deep inside the report."""

from __future__ import annotations

import json

import pytest

from tests.reliability.conftest import changed, error_line, snapshot, volseg

SEGMENTATION = {
    "task": "segmentation",
    "labels": {"1": "liver"},
    "mean": {"1": {"Dice": 0.5}},
    "foreground_mean": {"Dice": 0.5},
    "metric_per_case": [{"case": "a", "metrics": {"1": {"Dice": 0.5}}}],
}


def without(key: str) -> dict:
    return {k: v for k, v in SEGMENTATION.items() if k != key}


@pytest.mark.parametrize(
    ("summary", "message"),
    [
        (
            {"task": "classification", "metrics": 3},
            "key 'metrics' is a number (3), not an object as in a classification summary",
        ),
        (
            {"task": "classification", "metrics": {"AUC": 0.7}},
            "classification summary lacks key 'ci95'",
        ),
        (without("mean"), "segmentation summary lacks key 'mean'"),
        (
            {**SEGMENTATION, "metric_per_case": {"a": 1}},
            "key 'metric_per_case' is an object, not a list as in a segmentation summary",
        ),
        (
            {**SEGMENTATION, "mean": {"1": 0.5}},
            "key 'mean' entry '1' is a number (0.5), not an object",
        ),
        (
            {**SEGMENTATION, "metric_per_case": [{"case": "a", "metrics": {"1": 0.5}}]},
            "key 'metric_per_case' entry 0 ('a') has 'metrics' that are not label -> metric",
        ),
    ],
)
def test_report_names_the_summary_and_the_key(tmp_path, summary, message):
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    path = evaluation / "summary.json"
    path.write_text(json.dumps(summary))
    before = snapshot(tmp_path)
    result = volseg("report", evaluation, "--out", tmp_path / "report", timeout=60)
    assert result.returncode != 0
    line = error_line(result)
    assert line.startswith(f"error: {path}: {message}"), line
    assert line.endswith("re-run volseg evaluate to write it again"), line
    assert changed(before, tmp_path, inside=tmp_path / "report") == []


def test_a_summary_of_the_right_shape_makes_a_report(tmp_path):
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "summary.json").write_text(json.dumps(SEGMENTATION))
    result = volseg("report", evaluation, "--out", tmp_path / "report", timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report" / "report.html").is_file()
