"""`volseg evaluate` on references that cannot say much (issue 14, finding 10): all empty is an
error, some empty a warning, and predicted labels the label map lacks are named, not dropped."""

from __future__ import annotations

import json

import numpy as np

from tests.reliability.conftest import changed, error_line, snapshot, volseg
from volseg.io import Geometry, Image, write_image

GEOMETRY = Geometry((12, 10, 6), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))


def label_map(path, values: dict[int, slice] | None = None):
    """A label map on GEOMETRY: each value fills the block of rows ``values[value]``."""
    array = np.zeros(GEOMETRY.shape, np.uint8)
    for value, rows in (values or {}).items():
        array[rows, 2:8, 1:5] = value
    return write_image(Image(array, GEOMETRY), path)


def test_all_empty_references_are_an_error(tmp_path):
    for case in ("a", "b"):
        label_map(tmp_path / "ref" / f"{case}.nii.gz")
        label_map(tmp_path / "pred" / f"{case}.nii.gz", {1: slice(2, 6)})
    out = tmp_path / "eval"
    before = snapshot(tmp_path)
    result = volseg(
        "evaluate", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref", "--out", out,
        "--workers", "1",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert error_line(result) == (
        f"error: {tmp_path / 'ref'}: all 2 reference label maps are empty (no voxel above 0), "
        "so there is nothing to score; check that --ref names the label maps (not the images)"
    )
    assert changed(before, tmp_path, inside=out) == []
    assert list(out.iterdir()) == []  # no summary that scored nothing


def test_some_empty_references_and_unknown_predicted_labels_are_warned(tmp_path):
    data = tmp_path / "data"
    label_map(data / "labels" / "a.nii.gz", {1: slice(2, 6)})
    label_map(data / "labels" / "b.nii.gz")  # a healthy case
    manifest = data / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "format": "volseg-manifest/1",
                "name": "tiny",
                "task": "segmentation",
                "modalities": ["CT"],
                "labels": {"0": "background", "1": "organ"},
                "cases": [
                    {"id": c, "images": {"CT": f"labels/{c}.nii.gz"}, "label": f"labels/{c}.nii.gz"}
                    for c in ("a", "b")
                ],
            }
        )
    )
    pred = tmp_path / "pred"
    label_map(pred / "a.nii.gz", {1: slice(2, 6), 5: slice(8, 10)})
    label_map(pred / "b.nii.gz")
    out = tmp_path / "eval"
    before = snapshot(tmp_path)
    result = volseg("evaluate", "--pred", pred, "--ref", manifest, "--out", out, "--workers", "1")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: 1 of 2 reference label maps are empty (b); they are scored by the empty-mask "
        "conventions (nothing predicted: Dice 1, something predicted: Dice 0), which MONAI's "
        "DiceMetric(ignore_empty=True) would leave out",
        f"warning: predictions hold labels 5 (case a) that are not in the label "
        f"map of {manifest} (1); they are not scored: check the model was trained with this "
        "label map, or pass --labels",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warnings"] == [w.removeprefix("warning: ") for w in warnings]
    assert summary["mean"]["1"]["Dice"] == 1.0  # a perfect, b both empty
    assert changed(before, tmp_path, inside=out) == []
