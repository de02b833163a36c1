"""Inputs that are not regular files: a FIFO must never make volseg wait forever (issue 14,
finding 3). Each command runs under a timeout; a hang fails the test."""

from __future__ import annotations

import os

import pytest

from tests.reliability.conftest import changed, edit_manifest, error_line, snapshot, volseg

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
TIMEOUT = 60


def fifo(path):
    os.mkfifo(path)
    return path


def fifo_image_manifest(organs):
    """The organ manifest with case organs_000's image replaced by a FIFO."""
    image = fifo(organs.parent / "imagesTr" / "pipe.nii.gz")

    def edit(doc):
        doc["cases"][0]["images"]["CT"] = "imagesTr/pipe.nii.gz"

    return edit_manifest(organs, edit), image


def test_check_names_a_fifo_image_instead_of_hanging(organs):
    manifest, image = fifo_image_manifest(organs)
    result = volseg("check", manifest, timeout=TIMEOUT)
    assert result.returncode == 2
    assert (
        f"  problem: case organs_000: image 'CT' unreadable: {image}: image is a named pipe "
        "(FIFO), not a regular file; save it as a regular file and pass that" in result.stdout
    )
    assert error_line(result).startswith("error: 1 problem in ")


def test_check_names_a_fifo_manifest(tmp_path):
    manifest = fifo(tmp_path / "manifest.json")
    result = volseg("check", manifest, timeout=TIMEOUT)
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: {manifest}: manifest is a named pipe (FIFO), not a regular file; save it as a "
        "regular file and pass that"
    )


def test_predict_fails_the_fifo_case_and_predicts_the_others(organs, seg_model, tmp_path):
    manifest, image = fifo_image_manifest(organs)
    out = tmp_path / "pred"
    before = snapshot(tmp_path)
    result = volseg(
        "predict", "--model", seg_model, "--input", manifest, "--output", out, "--quiet",
        timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"  failed organs_000: {image}: image is a named pipe (FIFO)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["organs_001.nii.gz", "timings.csv"]
    assert changed(before, tmp_path, inside=out) == []


def test_predict_refuses_a_fifo_input(seg_model, tmp_path):
    pipe = fifo(tmp_path / "scan.nii.gz")
    out = tmp_path / "pred"
    result = volseg(
        "predict", "--model", seg_model, "--input", pipe, "--output", out, timeout=TIMEOUT
    )
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: {pipe}: input is a named pipe (FIFO), not a regular file; save it as a regular "
        "file and pass that"
    )
    assert not out.exists()


def test_evaluate_refuses_a_fifo_predictions_table(tmp_path):
    table = fifo(tmp_path / "predictions.csv")
    reference = tmp_path / "reference.csv"
    reference.write_text("case_id,label\na,low\nb,high\n")
    result = volseg(
        "evaluate", "--pred", table, "--ref", reference, "--out", tmp_path / "eval",
        timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 2
    assert error_line(result).startswith(f"error: {table}: predictions table is a named pipe")
    assert not (tmp_path / "eval").exists()
