from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from volseg.data import Case, ImageSource, Manifest, load_manifest, save_manifest
from volseg.errors import VolsegError

SHAPE = (8, 7, 5)
# anisotropic, flipped, slightly oblique, off-origin: what a real scanner writes
AFFINE = np.array(
    [
        [-0.8, 0.05, 0.0, 90.0],
        [0.0, 1.2, 0.1, -120.5],
        [0.0, 0.0, 3.0, 33.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def write_volume(path: Path, channels: int = 0, value: int = 1) -> Path:
    """A tiny NIfTI volume, 4D (X, Y, Z, C) like MSD when ``channels`` > 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = SHAPE + ((channels,) if channels else ())
    array = np.zeros(shape, dtype=np.int16)
    array[2:5, 2:5, 1:3] = value
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))
    return path


def write_junk(path: Path) -> None:
    """macOS AppleDouble file as found in the real MSD tarballs."""
    path.write_bytes(b"\x00\x05\x16\x07 junk")


def make_msd_spleen(root: Path) -> Path:
    """Task09_Spleen-like: one CT modality, 3D files."""
    for case in ("spleen_2", "spleen_3"):
        write_volume(root / "imagesTr" / f"{case}.nii.gz")
        write_volume(root / "labelsTr" / f"{case}.nii.gz")
    write_volume(root / "imagesTs" / "spleen_1.nii.gz")
    write_junk(root / "imagesTr" / "._spleen_2.nii.gz")
    write_junk(root / "labelsTr" / "._spleen_2.nii.gz")
    doc = {
        "name": "Spleen",
        "description": "Spleen Segmentation",
        "reference": "Memorial Sloan Kettering Cancer Center",
        "licence": "CC-BY-SA 4.0",
        "relase": "1.0 06/08/2018",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": 2,
        "numTest": 1,
        "training": [
            {"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"},
            {"image": "./imagesTr/spleen_3.nii.gz", "label": "./labelsTr/spleen_3.nii.gz"},
        ],
        "test": ["./imagesTs/spleen_1.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(doc, indent=4))
    return root


def make_msd_brain(root: Path) -> Path:
    """Task01_BrainTumour-like: four MRI modalities in one 4D file per case."""
    for case in ("BRATS_001", "BRATS_002"):
        write_volume(root / "imagesTr" / f"{case}.nii.gz", channels=4)
        write_volume(root / "labelsTr" / f"{case}.nii.gz", value=3)
    write_volume(root / "imagesTs" / "BRATS_485.nii.gz", channels=4)
    doc = {
        "name": "BRATS",
        "tensorImageSize": "4D",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {
            "0": "background",
            "1": "edema",
            "2": "non-enhancing tumor",
            "3": "enhancing tumour",
        },
        "numTraining": 2,
        "numTest": 1,
        "training": [
            {"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"},
            {"image": "./imagesTr/BRATS_002.nii.gz", "label": "./labelsTr/BRATS_002.nii.gz"},
        ],
        "test": ["./imagesTs/BRATS_485.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(doc))
    return root


def make_nnunet(root: Path, labels: dict | None = None) -> Path:
    """nnU-Net v2 raw folder with two channels."""
    for case in ("liver_0", "liver_1", "liver_10"):
        for channel in range(2):
            write_volume(root / "imagesTr" / f"{case}_{channel:04d}.nii.gz")
        write_volume(root / "labelsTr" / f"{case}.nii.gz", value=2)
    for channel in range(2):
        write_volume(root / "imagesTs" / f"liver_99_{channel:04d}.nii.gz")
    write_junk(root / "imagesTr" / "._liver_0_0000.nii.gz")
    doc = {
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": labels or {"background": 0, "liver": 1, "tumor": 2},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(doc))
    return root


def make_csv(root: Path, text: str) -> Path:
    for name in ("a_t1", "a_t2", "b_t1", "c_t1", "c_t2", "a_mask"):
        write_volume(root / "images" / f"{name}.nii.gz")
    path = root / "grades.csv"
    path.write_text(text)
    return path


CSV_TEXT = """case_id,T1,T2,label,subject,mask
a,images/a_t1.nii.gz,images/a_t2.nii.gz,10,p1,images/a_mask.nii.gz
b,images/b_t1.nii.gz,,2,p1,
c,images/c_t1.nii.gz,images/c_t2.nii.gz,3,,
"""


def test_msd_single_modality(tmp_path: Path) -> None:
    root = make_msd_spleen(tmp_path / "Task09_Spleen")
    for arg in (root, root / "dataset.json", str(root)):
        m = load_manifest(arg)
        assert (m.format, m.task, m.name) == ("msd", "segmentation", "Spleen")
        assert m.source == root / "dataset.json"
        assert m.modalities == ["CT"]
        assert m.labels == {0: "background", 1: "spleen"}
        assert m.ids == ["spleen_2", "spleen_3"]
        case = m.case("spleen_3")
        assert case.images == {"CT": ImageSource(root / "imagesTr" / "spleen_3.nii.gz")}
        assert case.label == root / "labelsTr" / "spleen_3.nii.gz"
        assert case.label.is_absolute() and case.label.exists()
        assert [c.id for c in m.test_cases] == ["spleen_1"]
        assert m.test_cases[0].label is None


def test_msd_multimodal_4d(tmp_path: Path) -> None:
    root = make_msd_brain(tmp_path / "Task01_BrainTumour")
    m = load_manifest(root)
    assert m.modalities == ["FLAIR", "T1w", "t1gd", "T2w"]
    assert m.labels[3] == "enhancing tumour" and sorted(m.labels) == [0, 1, 2, 3]
    image = root / "imagesTr" / "BRATS_002.nii.gz"
    assert m.case("BRATS_002").images == {
        "FLAIR": ImageSource(image, 0),
        "T1w": ImageSource(image, 1),
        "t1gd": ImageSource(image, 2),
        "T2w": ImageSource(image, 3),
    }
    assert list(m.case("BRATS_485").images) == m.modalities


def test_nnunet_raw_folder(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "Dataset003_Liver")
    m = load_manifest(root)
    assert (m.format, m.task, m.name) == ("nnunetv2", "segmentation", "Dataset003_Liver")
    assert m.modalities == ["CT", "PET"]
    assert m.labels == {0: "background", 1: "liver", 2: "tumor"}
    assert m.ids == ["liver_0", "liver_1", "liver_10"]  # the ._ junk file is not a case
    case = m.case("liver_10")
    assert case.images["PET"] == ImageSource(root / "imagesTr" / "liver_10_0001.nii.gz")
    assert case.images["CT"].path == root / "imagesTr" / "liver_10_0000.nii.gz"
    assert case.label == root / "labelsTr" / "liver_10.nii.gz"
    assert [c.id for c in m.test_cases] == ["liver_99"]
    assert m.test_cases[0].label is None
    assert load_manifest(root / "dataset.json").ids == m.ids


def test_nnunet_discovers_cases_from_both_folders(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "ds")
    (root / "labelsTr" / "liver_1.nii.gz").unlink()
    write_volume(root / "labelsTr" / "liver_5.nii.gz")
    m = load_manifest(root)
    # each case keeps the files it should have, so validation can name the missing one
    assert m.ids == ["liver_0", "liver_1", "liver_10", "liver_5"]
    assert not m.case("liver_1").label.exists()
    assert not m.case("liver_5").images["CT"].path.exists()


def test_nnunet_explicit_dataset_key(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "ds")
    doc = json.loads((root / "dataset.json").read_text())
    doc["dataset"] = {
        "x": {
            "images": ["imagesTr/liver_0_0000.nii.gz", "imagesTr/liver_0_0001.nii.gz"],
            "label": "labelsTr/liver_0.nii.gz",
        }
    }
    (root / "dataset.json").write_text(json.dumps(doc))
    m = load_manifest(root)
    assert m.ids == ["x"]
    assert m.case("x").images["PET"].path == root / "imagesTr" / "liver_0_0001.nii.gz"


def test_nnunet_region_labels_are_explained(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "ds", labels={"background": 0, "whole": [1, 2], "core": 2})
    with pytest.raises(VolsegError, match=r"dataset.json: labels.whole is a region"):
        load_manifest(root)


def test_csv_classification(tmp_path: Path) -> None:
    path = make_csv(tmp_path, CSV_TEXT)
    m = load_manifest(path)
    assert (m.format, m.task, m.name, m.source) == ("csv", "classification", "grades", path)
    assert m.modalities == ["T1", "T2"]
    assert m.classes == ["2", "3", "10"]  # numeric order, not string order
    assert m.ids == ["a", "b", "c"]
    a, b, c = m.cases
    assert a.images == {
        "T1": ImageSource(tmp_path / "images" / "a_t1.nii.gz"),
        "T2": ImageSource(tmp_path / "images" / "a_t2.nii.gz"),
    }
    assert (a.target, a.subject, a.mask) == ("10", "p1", tmp_path / "images" / "a_mask.nii.gz")
    assert list(b.images) == ["T1"]  # empty cell: modality missing for this case
    assert (b.mask, c.subject, c.patient) == (None, None, "c")


def test_csv_class_order(tmp_path: Path) -> None:
    text = "case_id,img,label\na,a.nii.gz,grade10\nb,b.nii.gz,grade2\nc,c.nii.gz,LGG\n"
    path = tmp_path / "t.csv"
    path.write_text(text)
    assert load_manifest(path).classes == ["LGG", "grade2", "grade10"]
    m = load_manifest(path, classes=["grade2", "grade10", "LGG"])
    assert m.classes == ["grade2", "grade10", "LGG"]
    with pytest.raises(VolsegError, match=r"t.csv: labels \['LGG'\] are not in the given"):
        load_manifest(path, classes=["grade2", "grade10"])


def test_csv_rows_without_label_are_test_cases(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("case_id,img,label\na,a.nii.gz,x\nb,b.nii.gz,\n\n")
    m = load_manifest(path)
    assert m.ids == ["a"] and [c.id for c in m.test_cases] == ["b"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("id,img,label\na,a.nii.gz,x\n", "no 'case_id' column"),
        ("case_id,label\na,x\n", "no image column"),
        ("case_id,img,label\na,a.nii.gz\n", "line 2 has 2 cells"),
        ("case_id,img,label\n,a.nii.gz,x\n", "line 2 has an empty case_id"),
        ("", "CSV is empty"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(VolsegError, match=match) as err:
        load_manifest(path)
    assert str(path) in str(err.value)


def _volseg_manifest(root: Path) -> Manifest:
    brain = root / "data" / "brain.nii.gz"
    cases = [
        Case(
            "c0",
            {"T1": ImageSource(brain, 0), "T2": ImageSource(brain, 1)},
            target="high",
            mask=root / "data" / "mask0.nii.gz",
            subject="p0",
        ),
        Case("c1", {"T1": ImageSource(root / "elsewhere" / "c1.nii.gz")}, target="low"),
    ]
    test = [Case("t0", {"T2": ImageSource(Path("/abs/t0.nii.gz"))})]
    info = {"description": "two gliomas", "license": "CC-BY 4.0"}
    return Manifest(
        "gliomas", "classification", ["T1", "T2"], cases, {}, ["low", "high"], test, info=info
    )


def test_volseg_json_round_trip(tmp_path: Path) -> None:
    original = _volseg_manifest(tmp_path)
    path = save_manifest(original, tmp_path / "out" / "manifest.json")
    doc = json.loads(path.read_text())
    assert doc["cases"][0]["images"]["T2"] == {"path": "../data/brain.nii.gz", "channel": 1}
    for arg in (path, tmp_path / "out"):
        loaded = load_manifest(arg)
        assert (loaded.format, loaded.source) == ("volseg", path)
        assert loaded.cases == original.cases
        assert loaded.test_cases == original.test_cases
        assert loaded.info == {"description": "two gliomas", "license": "CC-BY 4.0"}
        assert (loaded.name, loaded.task, loaded.modalities, loaded.classes) == (
            "gliomas",
            "classification",
            ["T1", "T2"],
            ["low", "high"],
        )


def test_volseg_json_segmentation_and_extra_keys(tmp_path: Path) -> None:
    doc = {
        "format": "volseg-manifest/1",
        "name": "organs",
        "task": "segmentation",
        "modalities": ["CT"],
        "labels": {"1": "liver", "0": "background"},
        "description": "tiny",
        "license": "CC0",
        "layout": {"images": "imagesTr/{id}.nii.gz"},
        "cases": [{"id": "a", "images": {"CT": "imagesTr/a.nii.gz"}, "label": "l/a.nii.gz"}],
    }
    (tmp_path / "m.json").write_text(json.dumps(doc))
    m = load_manifest(tmp_path / "m.json")
    assert m.labels == {0: "background", 1: "liver"}
    assert m.cases[0].label == tmp_path / "l" / "a.nii.gz"
    with pytest.raises(VolsegError, match="this is a segmentation dataset"):
        load_manifest(tmp_path / "m.json", classes=["a"])


def _bad(doc_patch: dict, case_patch: dict | None = None) -> dict:
    doc = {
        "format": "volseg-manifest/1",
        "name": "x",
        "task": "segmentation",
        "modalities": ["CT"],
        "labels": {"0": "background"},
        "cases": [{"id": "a", "images": {"CT": "a.nii.gz"}, **(case_patch or {})}],
    }
    doc.update(doc_patch)
    return {k: v for k, v in doc.items() if v is not None}


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (_bad({}, {"lable": "a.nii.gz"}), r"unknown key cases\[0\].lable \(did you mean 'label'"),
        (_bad({"modalites": ["CT"]}), "unknown top-level key 'modalites'"),
        (_bad({"cases": None}), "required key 'cases' is missing"),
        (_bad({"modalities": "CT"}), "key 'modalities' must be a list"),
        (_bad({"task": "detection"}), "key 'task' is 'detection'"),
        (_bad({"format": "volseg-manifest/2"}), "volseg-manifest/2"),
        (_bad({}, {"images": {"MR": "a.nii.gz"}}), r"cases\[0\] \(a\).images has modality 'MR'"),
        (_bad({}, {"id": 3}), r"key 'cases\[0\].id' must be a string"),
        (_bad({"labels": {"one": "x"}}), "labels key 'one' is not an integer"),
        (_bad({}, {"images": {"CT": {"path": "a", "channel": "1"}}}), "channel' must be an int"),
        (
            {"modality": {"0": "CT"}, "labels": {"0": "bg"}, "training": [{"image": "a"}]},
            r"'training\[0\].label'",
        ),
        ({"modality": {"0": "CT"}, "labels": {"0": "bg"}, "training": 3}, "'training' must be"),
        ({"channel_names": {"0": "CT"}, "labels": {"bg": 0}}, "'file_ending' is missing"),
        ({"foo": 1}, "JSON has none of the keys"),
        ([1, 2], "top level must be a JSON object"),
    ],
)
def test_json_errors_name_file_and_key(tmp_path: Path, doc: object, match: str) -> None:
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(VolsegError, match=match) as err:
        load_manifest(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_unreadable_inputs(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"format": "volseg-manifest/1",')
    with pytest.raises(VolsegError, match=r"broken.json: not valid JSON \(line 1"):
        load_manifest(tmp_path / "broken.json")
    (tmp_path / "list.txt").write_text("a")
    with pytest.raises(VolsegError, match="not a .json or .csv file; pass a volseg manifest"):
        load_manifest(tmp_path / "list.txt")
    with pytest.raises(VolsegError, match="neither dataset.json nor manifest.json"):
        load_manifest(tmp_path)
    with pytest.raises(VolsegError, match="no such file"):
        load_manifest(tmp_path / "nope.json")
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "imagesTr" / "x.nii.gz").write_bytes(b"")
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {}, "training": []}))
    with pytest.raises(VolsegError, match="key 'modality' is empty"):
        load_manifest(tmp_path)
