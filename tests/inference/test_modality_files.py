"""A folder of ``{case}_{modality}`` files is one case per patient, not one per file; a label-map
file as ``--output`` for one volume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.inference.conftest import GLIOMA, body_ct, write_segmentation_checkpoint
from tests.inference.test_cohort import geometry
from tests.inference.test_predict import grading_case
from volseg.errors import VolsegError
from volseg.inference import discover_cases, predict_cohort
from volseg.inference.cases import check_request
from volseg.io import read_image, write_image

BRATS = ["T1", "T1ce", "T2", "FLAIR"]


def test_files_named_after_the_modalities_are_grouped_per_case(tmp_path):
    image = body_ct(geometry("identity"))
    names = ["p1_T1", "p1_T1ce", "p1_T2", "p1_FLAIR", "p2_t1", "p2_t1ce", "p2_flair", "p3"]
    for name in names:
        write_image(image, tmp_path / f"{name}.nii.gz")
    cases = {c.id: c for c in discover_cases(tmp_path, BRATS)}
    assert sorted(cases) == ["p1", "p2", "p3"]  # p3: a file of its own (a 4D file, say)
    assert cases["p1"].sources == tuple(tmp_path / f"p1_{m}.nii.gz" for m in BRATS)
    t1, t1ce, t2, flair = cases["p2"].sources
    assert (t1.name, t1ce.name, t2, flair.name) == (
        "p2_t1.nii.gz",
        "p2_t1ce.nii.gz",
        None,
        "p2_flair.nii.gz",
    )
    assert cases["p3"].sources == tmp_path / "p3.nii.gz"
    # a one-modality model reads every file as a case: "liver_CT" is a name, not a modality
    assert len(discover_cases(tmp_path, ["T1"])) == len(names)


def test_two_files_for_one_modality_are_refused(tmp_path):
    image = body_ct(geometry("identity"))
    write_image(image, tmp_path / "p1_T1.nii.gz")
    write_image(image, tmp_path / "p1_t1.nrrd")
    with pytest.raises(VolsegError, match="are both the T1 image of case 'p1'"):
        discover_cases(tmp_path, ["T1", "FLAIR"])


def test_grading_a_folder_of_modality_files_accepts_a_missing_modality(grade_checkpoint, tmp_path):
    images = grading_case()
    folder = tmp_path / "brains"
    for modality in GLIOMA:
        write_image(images[modality], folder / f"a_{modality}.nii.gz")
    write_image(images["T1"], folder / "b_T1.nii.gz")  # no FLAIR
    out = tmp_path / "grades"
    result = predict_cohort(grade_checkpoint, folder, out, progress=False)
    assert result.exit_code == 0
    with open(out / "predictions.csv", newline="") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    assert rows["a"]["modalities_used"] == "T1;FLAIR" and rows["b"]["modalities_used"] == "T1"


def test_segmentation_case_missing_a_modality_fails_alone_in_one_line(tmp_path):
    ckpt = write_segmentation_checkpoint(tmp_path / "mr.pt", modalities=("T1", "T2"))
    image = body_ct(geometry("identity"))
    folder = tmp_path / "mr"
    for name in ("a_T1", "a_T2", "b_T1"):
        write_image(image, folder / f"{name}.nii.gz")
    result = predict_cohort(ckpt, folder, tmp_path / "out", progress=False)
    assert [(r["case_id"], r["status"]) for r in result.rows] == [("a", "ok"), ("b", "failed")]
    assert "modalities ['T2'] are missing" in result.failed[0]["error"]


def test_a_label_map_file_as_output_is_written_and_nothing_else(seg_checkpoint, tmp_path):
    image = body_ct(geometry("oblique"))
    ct = write_image(image, tmp_path / "in" / "ct.nrrd")
    out = tmp_path / "out" / "seg.nii.gz"
    result = predict_cohort(seg_checkpoint, ct, out, save_probs=True, progress=False)
    assert result.exit_code == 0 and not result.tables
    assert sorted(p.name for p in out.parent.iterdir()) == ["seg.nii.gz", "seg_probs.nii.gz"]
    labels = read_image(out)
    assert labels.geometry.matches(image.geometry)
    assert set(np.unique(labels.array)) <= {0, 1, 4}
    again = predict_cohort(seg_checkpoint, ct, out, skip_existing=True, progress=False)
    assert again.rows[0]["status"] == "skipped"


@pytest.mark.parametrize("kind", ["folder", "manifest"])
def test_a_label_map_file_for_many_cases_is_refused_before_loading(tmp_path, kind):
    folder = tmp_path / "scans"
    write_image(body_ct(geometry("identity")), folder / "a.nii.gz")
    if kind == "manifest":
        (folder / "manifest.json").write_text("{}")
    model = Path(tmp_path / "run.pt")
    model.write_bytes(b"never loaded")
    with pytest.raises(VolsegError, match="is a folder of cases or a manifest; pass an output"):
        check_request([model], folder, tmp_path / "seg.nii.gz")
    with pytest.raises(VolsegError, match="no such checkpoint file or run folder"):
        check_request([model, tmp_path / "fold2"], folder / "a.nii.gz", tmp_path / "seg.nii.gz")
