"""Manifests that load but cannot train (issue 14, finding 11; issue 13, item 4): a CSV row
with no image, a CSV whose class column is not called `label`, and label values outside the
label map, each found by `volseg check` or `volseg train --dry-run` before a run folder exists."""

from __future__ import annotations

import numpy as np

from tests.reliability.conftest import changed, error_line, snapshot, volseg
from volseg.io import Geometry, Image, read_image, write_image, write_like


def scans(folder, names):
    """Tiny MRI-like volumes ``folder/<name>.nii.gz``; returns their paths relative to the CSV."""
    geometry = Geometry((10, 10, 6), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    for name in names:
        image = Image(np.random.default_rng(0).random(geometry.shape, np.float32), geometry)
        write_image(image, folder / f"{name}.nii.gz")
    return {name: f"{folder.name}/{name}.nii.gz" for name in names}


def test_check_fails_a_csv_row_without_any_image(tmp_path):
    files = scans(tmp_path / "scans", ["a_t1", "c_t1", "c_flair"])
    table = tmp_path / "grades.csv"
    table.write_text(
        "case_id,T1,FLAIR,label\n"
        f"a,{files['a_t1']},,high\n"
        "b,,,low\n"
        f"c,{files['c_t1']},{files['c_flair']},low\n"
    )
    before = snapshot(tmp_path)
    result = volseg("check", table)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == f"error: 1 problem in {table}; fix it and re-run"
    assert (
        "  problem: case b: no image at all (CSV columns T1, FLAIR all empty); give at least "
        "one image or drop the case" in result.stdout.splitlines()
    )
    assert changed(before, tmp_path) == []


def test_check_says_a_csv_has_no_label_column(tmp_path):
    files = scans(tmp_path / "scans", ["a", "b", "c"])
    table = tmp_path / "grades.csv"
    table.write_text(
        "case_id,T1,grade\n"
        + "".join(f"{c},{files[c]},{g}\n" for c, g in zip("abc", "010", strict=True))
    )
    before = snapshot(tmp_path)
    result = volseg("check", table)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == (
        f"error: {table}: CSV has no 'label' column (columns: case_id, T1, grade), and column "
        "'grade' holds '0', '1', which are no image paths; if 'grade' is the class, rename that "
        "column to 'label' (volseg reads classes only from a column named 'label'; a CSV "
        "without one lists unlabelled cases)"
    )
    assert "is missing" not in result.stdout  # not one missing '.../0' file per row
    assert changed(before, tmp_path) == []


def test_dry_run_names_label_values_outside_the_label_map(organs, train_config, tmp_path):
    label_file = organs.parent / "labelsTr" / "organs_001.nii.gz"
    label = read_image(label_file)
    array = label.array.copy()
    array[0, 0, :2] = 7
    array[1, 0, :2] = 9
    write_like(array, label, label_file)
    before = snapshot(tmp_path)
    result = volseg("train", train_config, "--dry-run")
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert line.startswith(
        f"error: manifest {organs} has 1 problem: case organs_001: label {label_file} has "
        "values 7, 9 not in the label map {0: 'background', 1: 'liver', 2: 'spleen'"
    )
    assert changed(before, tmp_path) == []  # a dry run writes nothing
