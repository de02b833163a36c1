"""Nothing escapes the output folder: hostile case ids, and outputs over the files a manifest
references (issue 14, findings 1 and 2)."""

from __future__ import annotations

import csv

import pytest

from tests.reliability.conftest import changed, edit_manifest, error_line, snapshot, volseg

BAD_IDS = ["../../escaped", "..", "sub/case", "back\\slash", "", "line\nbreak"]


def bad_id_manifest(organs, case_id: str):
    def edit(doc):
        doc["cases"][0]["id"] = case_id

    return edit_manifest(organs, edit)


@pytest.mark.parametrize("case_id", [*BAD_IDS, "ABSOLUTE"])
def test_check_reports_a_case_id_that_cannot_name_a_file(organs, tmp_path, case_id):
    case_id = str(tmp_path / "victim") if case_id == "ABSOLUTE" else case_id
    manifest = bad_id_manifest(organs, case_id)
    result = volseg("check", manifest)
    assert result.returncode == 2
    problems = [line for line in result.stdout.splitlines() if "problem:" in line]
    assert len(problems) == 1 and problems[0].startswith(f"  problem: case id {case_id!r} ")
    assert "outputs are named by case id" in problems[0]
    assert error_line(result) == f"error: 1 problem in {manifest}; fix it and re-run"


@pytest.mark.parametrize("case_id", ["../../escaped", "ABSOLUTE", ""])
def test_predict_refuses_a_case_id_that_leaves_the_output_folder(
    organs, seg_model, tmp_path, case_id
):
    victim = tmp_path / "victim.nii.gz"
    victim.write_bytes(b"precious")
    case_id = str(tmp_path / "victim") if case_id == "ABSOLUTE" else case_id
    manifest = bad_id_manifest(organs, case_id)
    out = tmp_path / "deep" / "er" / "pred"
    before = snapshot(tmp_path)
    result = volseg("predict", "--model", seg_model, "--input", manifest, "--output", out)
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert line.startswith(f"error: {manifest}: case id {case_id!r} "), line
    assert changed(before, tmp_path) == []  # not even the output folder
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("folder", "what"),
    [("labelsTr", "the label of case organs_000"), ("imagesTr", "the CT image of case organs_000")],
)
def test_predict_never_writes_over_the_manifests_files(organs, seg_model, folder, what):
    data = organs.parent
    before = snapshot(data)
    result = volseg("predict", "--model", seg_model, "--input", organs, "--output", data / folder)
    assert result.returncode == 2
    line = error_line(result)
    assert line == (
        f"error: {data / folder / 'organs_000.nii.gz'}: would overwrite an input ({what}); "
        "choose another --output folder"
    )
    assert changed(before, data) == []


def test_predict_never_writes_over_a_mask(organs, seg_model):
    data = organs.parent
    (data / "masksTr").mkdir()
    for i in range(2):
        (data / "masksTr" / f"organs_00{i}.nii.gz").write_bytes(
            (data / "labelsTr" / f"organs_00{i}.nii.gz").read_bytes()
        )

    def add_masks(doc):
        for case in doc["cases"]:
            case["mask"] = f"masksTr/{case['id']}.nii.gz"

    edit_manifest(organs, add_masks)
    before = snapshot(data)
    out = data / "masksTr"
    result = volseg("predict", "--model", seg_model, "--input", organs, "--output", out)
    assert result.returncode == 2
    assert "would overwrite an input (the mask of case organs_000)" in error_line(result)
    assert changed(before, data) == []


def test_predict_never_writes_through_a_link_to_a_label(organs, seg_model, tmp_path):
    data = organs.parent
    out = tmp_path / "pred"
    out.mkdir()
    (out / "organs_001.nii.gz").symlink_to(data / "labelsTr" / "organs_001.nii.gz")
    before = snapshot(tmp_path)
    result = volseg("predict", "--model", seg_model, "--input", organs, "--output", out)
    assert result.returncode == 2
    assert "would overwrite an input (the label of case organs_001)" in error_line(result)
    assert changed(before, tmp_path) == []


def test_predict_never_writes_over_a_grading_manifest(grade_model, organs, tmp_path):
    """A classification CSV named predictions.csv, predicted into its own folder."""
    data = organs.parent
    manifest = data / "predictions.csv"
    image = data / "imagesTr" / "organs_000.nii.gz"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "T1", "FLAIR", "label"])
        writer.writerows([["a", image, image, "low"], ["b", image, image, "high"]])
    before = snapshot(tmp_path)
    result = volseg("predict", "--model", grade_model, "--input", manifest, "--output", data)
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: {manifest}: would overwrite an input (the manifest); choose another --output "
        "folder"
    )
    assert changed(before, tmp_path) == []


def test_predict_into_the_dataset_folder_itself_is_fine(organs, seg_model):
    """Outputs next to the manifest are allowed when they replace nothing it references."""
    data = organs.parent
    before = snapshot(data)
    result = volseg("predict", "--model", seg_model, "--input", organs, "--output", data, "--quiet")
    assert result.returncode == 0, result.stderr
    assert changed(before, data) == ["organs_000.nii.gz", "organs_001.nii.gz", "timings.csv"]
