"""One rule from file name to case id and modality, and every stage reading names by it.

``volseg predict`` names its outputs by case id and ``volseg evaluate`` matches them to the
references by case id, so the manifest side, the cohort side and the evaluation side must
give the same id for the same name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from volseg.data import load_manifest
from volseg.inference import discover_cases
from volseg.inference.outputs import output_paths
from volseg.io.names import CaseName, case_name, split_extension
from volseg.metrics.evaluate import _image_files

BRATS = ["T1", "T1ce", "T2", "FLAIR"]


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("case.nii.gz", {}, CaseName("case", None, ".nii.gz")),
        ("case_0000.nii.gz", {}, CaseName("case_0000", None, ".nii.gz")),
        ("case_0000.nii.gz", {"channels": True}, CaseName("case", "0000", ".nii.gz")),
        ("case_12345.nii.gz", {"channels": True}, CaseName("case_12345", None, ".nii.gz")),
        ("_0001.nii", {"channels": True}, CaseName("_0001", None, ".nii")),
        ("a.b.nii", {}, CaseName("a.b", None, ".nii")),
        ("CASE.NRRD", {}, CaseName("CASE", None, ".NRRD")),
        ("x.NII.GZ", {}, CaseName("x", None, ".NII.GZ")),
        ("case 7 v2.0.mhd", {}, CaseName("case 7 v2.0", None, ".mhd")),
        ("notes.txt", {}, CaseName("notes.txt", None, "")),
        ("case_T1ce.nii.gz", {"modalities": BRATS}, CaseName("case", "T1ce", ".nii.gz")),
        ("case_t1.nii.gz", {"modalities": BRATS}, CaseName("case", "T1", ".nii.gz")),
        ("_T1.nii.gz", {"modalities": BRATS}, CaseName("_T1", None, ".nii.gz")),
        ("ct_liver.nii.gz", {"modalities": ["CT"]}, CaseName("ct_liver", None, ".nii.gz")),
        ("CT 1.2.840.nii", {"folder": True}, CaseName("CT 1.2.840.nii", None, "")),
    ],
)
def test_case_name(name: str, kwargs: dict, expected: CaseName) -> None:
    assert case_name(name, **kwargs) == expected


def test_channel_number_and_extension_split() -> None:
    assert case_name("p_0003.mha", channels=True).channel == 3
    assert case_name("p_T2.mha", modalities=BRATS).channel is None
    assert split_extension("seg.nii.gz") == ("seg", ".nii.gz")
    assert split_extension("seg.gz") == ("seg.gz", "")


# name in the input folder (a trailing "/" is a DICOM series folder), the model's modalities,
# the case id every stage must give, and whether a manifest format names cases by this file
# (MSD: image file name; nnU-Net: ``{case}_{XXXX}``; modality names are manifest keys, never
# read from file names)
ROWS = [
    ("case.nii.gz", ["CT"], "case", "msd"),
    ("case_0000.nii.gz", ["CT"], "case", "nnunet"),
    ("a.b.nii", ["CT"], "a.b", "msd"),
    ("CASE.NRRD", ["CT"], "CASE", "msd"),
    ("case 7 v2.0.mha", ["CT"], "case 7 v2.0", "msd"),
    ("ct_liver.nii.gz", ["CT"], "ct_liver", "msd"),
    ("case_T1ce.nii.gz", BRATS, "case", None),
    ("CT 1.2.840.113619/", ["CT"], "CT 1.2.840.113619", "msd"),
    ("series.nii/", ["CT"], "series.nii", "msd"),
]


def _make(folder: Path, name: str) -> Path:
    path = folder / name.rstrip("/")
    if name.endswith("/"):
        path.mkdir(parents=True)
        (path / "slice_001.dcm").write_bytes(b"")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize(("name", "modalities", "case_id", "manifest"), ROWS)
def test_every_stage_gives_the_same_case_id(
    tmp_path: Path, name: str, modalities: list[str], case_id: str, manifest: str | None
) -> None:
    # cohort side: a folder holding the file; the id names the prediction it writes
    _make(tmp_path / "in", name)
    (spec,) = discover_cases(tmp_path / "in", modalities)
    assert spec.id == case_id
    prediction, _ = output_paths(spec, tmp_path / "pred", "same")
    _make(tmp_path / "pred", prediction.name)

    # evaluation side: the prediction, and a reference label map named by the case
    _make(tmp_path / "ref", f"{case_id}.nii.gz")
    assert list(_image_files(tmp_path / "pred", "prediction")) == [case_id]
    assert list(_image_files(tmp_path / "ref", "reference")) == [case_id]

    # manifest side
    root = tmp_path / "dataset"
    _make(root / "imagesTr", name)
    _make(root / "labelsTr", f"{case_id}.nii.gz")
    if manifest == "msd":
        image = f"./imagesTr/{name.rstrip('/')}"
        doc = {
            "modality": {"0": "CT"},
            "labels": {"0": "background", "1": "organ"},
            "training": [{"image": image, "label": f"./labelsTr/{case_id}.nii.gz"}],
            "test": [image],
        }
    elif manifest == "nnunet":
        doc = {
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, "organ": 1},
            "file_ending": ".nii.gz",
        }
    else:
        return
    (root / "dataset.json").write_text(json.dumps(doc))
    loaded = load_manifest(root)
    assert [c.id for c in loaded.cases] == [case_id]
    assert [c.id for c in loaded.test_cases] == [case_id] * (manifest == "msd")
    assert list(_image_files(root / "labelsTr", "reference")) == [case_id]
