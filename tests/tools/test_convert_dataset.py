"""tools/convert_dataset.py on fake download trees with each dataset's real file naming."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest

from volseg.data import Manifest, load_manifest, validate_manifest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "convert_dataset.py"
TEMPLATES = REPO / "data_manifests"
SHAPE = (6, 5, 4)
AFFINE = np.array(
    [[1.5, 0.0, 0.0, -4.0], [0.0, 1.5, 0.0, 3.0], [0.0, 0.0, 2.0, 10.0], [0.0, 0.0, 0.0, 1.0]]
)
BRATS_TOKENS = ("t1", "t1ce", "t2", "flair")


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convert_dataset", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


# --------------------------------------------------------------------------- fake files


def _image(path: Path, channels: int | None = None) -> Path:
    shape = SHAPE if channels is None else (*SHAPE, channels)
    data = np.random.default_rng(len(path.name)).normal(size=shape).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def _label(path: Path, values: tuple[int, ...]) -> Path:
    data = np.zeros(SHAPE, dtype=np.uint8)
    data.flat[: len(values)] = values
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def _junk(path: Path) -> None:
    """A macOS AppleDouble file: not NIfTI at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _msd(root: Path, name: str, prefix: str, modality: dict, labels: dict) -> Path:
    task = root / name
    channels = None if len(modality) == 1 else len(modality)
    values = tuple(int(k) for k in labels)
    train, test = [f"{prefix}_2", f"{prefix}_3"], [f"{prefix}_1"]
    for case in train:
        _image(task / "imagesTr" / f"{case}.nii.gz", channels)
        _label(task / "labelsTr" / f"{case}.nii.gz", values)
    for case in test:
        _image(task / "imagesTs" / f"{case}.nii.gz", channels)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):  # the tarballs carry macOS junk
        _junk(task / folder / f"._{prefix}_2.nii.gz")
    doc = {
        "name": name.split("_")[1],
        "tensorImageSize": "3D" if channels is None else "4D",
        "licence": "CC-BY-SA 4.0",
        "modality": modality,
        "labels": labels,
        "numTraining": len(train),
        "numTest": len(test),
        "training": [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train
        ],
        "test": [f"./imagesTs/{c}.nii.gz" for c in test],
    }
    (task / "dataset.json").write_text(json.dumps(doc, indent=4))
    return task


def _brats_case(folder: Path, suffix: str, seg: str | None = "seg") -> None:
    for token in BRATS_TOKENS:
        _image(folder / f"{folder.name}_{token}{suffix}")
    if seg is not None:
        _label(folder / f"{folder.name}_{seg}{suffix}", (0, 1, 2, 4))


UCSF_HEADER = ["ID", "Sex", "Age at MRI", "WHO CNS Grade", "Final pathologic diagnosis (WHO 2021)"]
UCSF_ROWS = [
    ["UCSF-PDGM-004", "M", 66, 4, "Glioblastoma, IDH-wildtype"],
    ["UCSF-PDGM-007", "F", 41, 2, "Astrocytoma, IDH-mutant"],
    ["UCSF-PDGM-100", "M", 52, 3, "Oligodendroglioma, IDH-mutant, 1p/19q-codeleted"],
    ["UCSF-PDGM-200", "F", 70, 4, "Glioblastoma, IDH-wildtype"],  # not downloaded
]


def _ucsf(root: Path, rows: list[list[object]] = UCSF_ROWS) -> Path:
    source = root / "UCSF-PDGM-v3"
    for case in ("UCSF-PDGM-0004", "UCSF-PDGM-0007", "UCSF-PDGM-0100", "UCSF-PDGM-0100_FU003d"):
        folder = source / f"{case}_nifti"
        for token in ("T1", "T1c", "T2", "FLAIR", "T1_bias", "FLAIR_bias", "ADC"):
            _image(folder / f"{case}_{token}.nii.gz")
        _label(folder / f"{case}_tumor_segmentation.nii.gz", (0, 1, 2, 4))
        _label(folder / f"{case}_brain_segmentation.nii.gz", (0, 1))
    _csv(root / "UCSF-PDGM-metadata_v2.csv", UCSF_HEADER, rows)
    return source


def _brats2020(root: Path) -> Path:
    """Kaggle layout: BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData/..."""
    data = root / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    _brats_case(data / "BraTS20_Training_001", ".nii")
    _brats_case(data / "BraTS20_Training_260", ".nii")
    _brats_case(data / "BraTS20_Training_355", ".nii", seg=None)
    _label(data / "BraTS20_Training_355" / "W39_1998.09.19_Segm.nii", (0, 1, 2, 4))
    header = [
        "Grade",
        "BraTS_2017_subject_ID",
        "BraTS_2018_subject_ID",
        "TCGA_TCIA_subject_ID",
        "BraTS_2019_subject_ID",
        "BraTS_2020_subject_ID",
    ]
    rows = [
        [
            "HGG",
            "Brats17_CBICA_AAB_1",
            "Brats18_CBICA_AAB_1",
            "NA",
            "BraTS19_CBICA_AAB_1",
            "BraTS20_Training_001",
        ],
        [
            "LGG",
            "Brats17_2013_0_1",
            "Brats18_2013_0_1",
            "NA",
            "BraTS19_2013_0_1",
            "BraTS20_Training_260",
        ],
        ["HGG", "NA", "NA", "NA", "NA", "BraTS20_Training_355"],
    ]
    _csv(data / "name_mapping.csv", header, rows)
    _csv(data / "survival_info.csv", ["Brats20ID", "Age", "Survival_days"], [["x", 1, 2]])
    return root / "BraTS2020_TrainingData"


def _roundtrip(manifest: Manifest, dataset: str, tmp_path: Path) -> tuple[Manifest, dict]:
    """Write like the script does, read back with volseg, and check the files validate."""
    out = tmp_path / "manifests" / f"{manifest.name}.json"
    template = tool.template_for(dataset, manifest)
    tool.write_manifest(manifest, out, template, "test conversion")
    loaded = load_manifest(out)
    assert validate_manifest(loaded) == []
    return loaded, json.loads(out.read_text())


def _template(filename: str) -> Manifest:
    return load_manifest(TEMPLATES / filename)


def _ids(cases: list) -> list[str]:
    return [case.id for case in cases]


# --------------------------------------------------------------------------- templates

TEMPLATE_FILES = [
    "msd_task09_spleen.json",
    "msd_task01_braintumour.json",
    "btcv.json",
    "amos22.json",
    "brats2021.json",
    "brats_grading.json",
    "ucsf_pdgm.json",
]


@pytest.mark.parametrize("filename", TEMPLATE_FILES)
def test_template_loads_with_no_cases(filename: str) -> None:
    manifest = _template(filename)
    doc = json.loads((TEMPLATES / filename).read_text())
    assert manifest.cases == [] and manifest.test_cases == []
    assert manifest.name == filename.removesuffix(".json")
    for key in ("description", "reference", "license", "layout"):
        assert isinstance(doc[key], str) and doc[key]
    assert "tools/convert_dataset.py" in doc["description"]
    if manifest.task == "segmentation":
        assert manifest.labels[0] == "background"
    assert filename in (TEMPLATES / "README.md").read_text()


def test_templates_have_the_published_label_maps() -> None:
    assert _template("msd_task01_braintumour.json").labels == {
        0: "background",
        1: "edema",
        2: "non-enhancing tumor",
        3: "enhancing tumour",
    }
    assert list(_template("btcv.json").labels) == list(range(14))
    assert _template("btcv.json").labels[10] == "portal vein and splenic vein"
    amos = _template("amos22.json").labels
    assert list(amos) == list(range(16))
    assert (amos[13], amos[14], amos[15]) == ("duodenum", "bladder", "prostate/uterus")
    assert sorted(_template("brats2021.json").labels) == [0, 1, 2, 4]  # BraTS has no label 3
    assert _template("brats_grading.json").classes == ["LGG", "HGG"]  # HGG is positive
    assert _template("ucsf_pdgm.json").classes == ["2", "3", "4"]
    for name in ("brats2021.json", "brats_grading.json", "ucsf_pdgm.json"):
        assert _template(name).modalities == ["T1", "T1ce", "T2", "FLAIR"]


# --------------------------------------------------------------------------- MSD


def test_msd_spleen_ignores_macos_junk_and_matches_dataset_json(tmp_path: Path) -> None:
    task = _msd(
        tmp_path / "src", "Task09_Spleen", "spleen", {"0": "CT"}, {"0": "background", "1": "spleen"}
    )
    manifest = tool.convert_msd(task)
    loaded, doc = _roundtrip(manifest, "msd", tmp_path)

    assert loaded.name == "msd_task09_spleen"
    assert _ids(loaded.cases) == ["spleen_2", "spleen_3"]
    assert _ids(loaded.test_cases) == ["spleen_1"]
    assert loaded.modalities == ["CT"]
    assert loaded.labels == _template("msd_task09_spleen.json").labels
    assert doc["cases"][0]["images"] == {"CT": "../src/Task09_Spleen/imagesTr/spleen_2.nii.gz"}
    assert doc["cases"][0]["label"] == "../src/Task09_Spleen/labelsTr/spleen_2.nii.gz"
    assert doc["license"] == "CC-BY-SA 4.0"
    # equivalent to reading the MSD dataset.json directly
    native = load_manifest(task / "dataset.json")
    assert _ids(native.cases) == _ids(loaded.cases)
    assert [c.images for c in native.cases] == [c.images for c in loaded.cases]
    assert [c.label for c in native.cases] == [c.label for c in loaded.cases]


def test_msd_braintumour_4d_channels(tmp_path: Path) -> None:
    modality = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    labels = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
    task = _msd(tmp_path, "Task01_BrainTumour", "BRATS", modality, labels)
    loaded, doc = _roundtrip(tool.convert_msd(task), "msd", tmp_path)

    template = _template("msd_task01_braintumour.json")
    assert (loaded.labels, loaded.modalities) == (template.labels, template.modalities)
    assert _ids(loaded.cases) == ["BRATS_2", "BRATS_3"]
    image = task / "imagesTr" / "BRATS_2.nii.gz"
    assert [(s.path, s.channel) for s in loaded.cases[0].images.values()] == [
        (image, i) for i in range(4)
    ]
    assert doc["cases"][0]["images"]["t1gd"] == {
        "path": "../Task01_BrainTumour/imagesTr/BRATS_2.nii.gz",
        "channel": 2,
    }


def test_msd_task_without_template_uses_dataset_json(tmp_path: Path) -> None:
    labels = {"0": "background", "1": "Anterior", "2": "Posterior"}
    task = _msd(tmp_path, "Task04_Hippocampus", "hippocampus", {"0": "MRI"}, labels)
    manifest = tool.convert_msd(task)
    assert manifest.name == "msd_task04_hippocampus"
    assert manifest.labels == {0: "background", 1: "Anterior", 2: "Posterior"}


# --------------------------------------------------------------------------- BTCV


def _btcv(root: Path) -> Path:
    raw = root / "RawData"
    for number in ("0001", "0002"):
        _image(raw / "Training" / "img" / f"img{number}.nii.gz")
        _label(raw / "Training" / "label" / f"label{number}.nii.gz", tuple(range(14)))
    _image(raw / "Testing" / "img" / "img0061.nii.gz")
    return raw


def test_btcv_from_rawdata_or_its_parent(tmp_path: Path) -> None:
    raw = _btcv(tmp_path / "Abdomen")
    loaded, doc = _roundtrip(tool.convert_btcv(tmp_path / "Abdomen"), "btcv", tmp_path)
    assert _ids(loaded.cases) == ["btcv_0001", "btcv_0002"]
    assert _ids(loaded.test_cases) == ["btcv_0061"]
    assert loaded.labels == _template("btcv.json").labels
    assert loaded.cases[1].label == raw / "Training" / "label" / "label0002.nii.gz"
    assert doc["test"][0]["images"] == {"CT": "../Abdomen/RawData/Testing/img/img0061.nii.gz"}
    assert tool.convert_btcv(raw).cases == tool.convert_btcv(tmp_path / "Abdomen").cases


# --------------------------------------------------------------------------- AMOS22


def _amos(root: Path) -> Path:
    source = root / "amos22"
    for folder, number, values in (
        ("Tr", "0001", tuple(range(16))),  # CT
        ("Tr", "0540", tuple(range(14))),  # MRI: no bladder, prostate/uterus labels
        ("Va", "0008", tuple(range(16))),
        ("Va", "0600", tuple(range(14))),
    ):
        _image(source / f"images{folder}" / f"amos_{number}.nii.gz")
        _label(source / f"labels{folder}" / f"amos_{number}.nii.gz", values)
    for number in ("0015", "0500", "0510"):  # amos_0500 is the last CT id
        _image(source / "imagesTs" / f"amos_{number}.nii.gz")
    native_labels = {str(k): v for k, v in _template("amos22.json").labels.items()}
    native_labels.update({"4": "gall bladder", "8": "arota", "9": "postcava"})  # as shipped
    (source / "dataset.json").write_text(json.dumps({"labels": native_labels}))
    return source


@pytest.mark.parametrize(
    ("modality", "cases", "test", "name", "channel"),
    [
        ("ct", ["amos_0001", "amos_0008"], ["amos_0015", "amos_0500"], "amos22_ct", "CT"),
        ("mri", ["amos_0540", "amos_0600"], ["amos_0510"], "amos22_mri", "MRI"),
        (
            "all",
            ["amos_0001", "amos_0540", "amos_0008", "amos_0600"],
            ["amos_0015", "amos_0500", "amos_0510"],
            "amos22",
            "CT_or_MRI",
        ),
    ],
)
def test_amos22_modality_split_and_validation_cases(
    tmp_path: Path, modality: str, cases: list[str], test: list[str], name: str, channel: str
) -> None:
    source = _amos(tmp_path)
    warnings: list[str] = []
    manifest = tool.convert_amos22(tmp_path, modality=modality, warn=warnings.append)
    assert warnings == []  # the shipped label spellings have the template's values
    loaded, _ = _roundtrip(manifest, "amos22", tmp_path)
    assert (loaded.name, loaded.modalities) == (name, [channel])
    assert _ids(loaded.cases) == cases
    assert _ids(loaded.test_cases) == test
    assert loaded.labels == _template("amos22.json").labels
    if "amos_0008" in cases:  # validation cases keep their validation labels
        case = loaded.case("amos_0008")
        assert case.label == source / "labelsVa" / "amos_0008.nii.gz"


# --------------------------------------------------------------------------- BraTS 2021


def test_brats2021_kaggle_layout(tmp_path: Path) -> None:
    source = tmp_path / "kaggle"
    for case in ("BraTS2021_00000", "BraTS2021_00002"):
        _brats_case(source / "BraTS2021_Training_Data" / case, ".nii.gz")
    _brats_case(source / "BraTS2021_00495", ".nii.gz")  # shipped as a separate archive
    loaded, doc = _roundtrip(tool.convert_brats2021(source), "brats2021", tmp_path)

    assert _ids(loaded.cases) == ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00495"]
    assert loaded.labels == _template("brats2021.json").labels
    assert doc["cases"][0]["images"] == {
        name: f"../kaggle/BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_{token}.nii.gz"
        for name, token in zip(["T1", "T1ce", "T2", "FLAIR"], BRATS_TOKENS, strict=True)
    }
    assert doc["cases"][0]["label"].endswith("BraTS2021_00000/BraTS2021_00000_seg.nii.gz")


def test_brats2021_validation_data_become_test_cases(tmp_path: Path) -> None:
    for case in ("BraTS2021_00001", "BraTS2021_00013"):
        _brats_case(tmp_path / "val" / case, ".nii.gz", seg=None)
    manifest = tool.convert_brats2021(tmp_path / "val")
    assert manifest.cases == []
    assert _ids(manifest.test_cases) == ["BraTS2021_00001", "BraTS2021_00013"]


# --------------------------------------------------------------------------- BraTS grading


def test_brats2019_grade_from_folders(tmp_path: Path) -> None:
    data = tmp_path / "MICCAI_BraTS_2019_Data_Training"
    _brats_case(data / "HGG" / "BraTS19_2013_10_1", ".nii.gz")
    _brats_case(data / "HGG" / "BraTS19_CBICA_AAB_1", ".nii.gz")
    _brats_case(data / "LGG" / "BraTS19_2013_0_1", ".nii.gz")
    loaded, doc = _roundtrip(tool.convert_brats_grading(data), "brats_grading", tmp_path)

    assert loaded.name == "brats2019_grading"
    assert loaded.task == "classification" and loaded.classes == ["LGG", "HGG"]
    targets = {c.id: c.target for c in loaded.cases}
    assert targets == {
        "BraTS19_2013_0_1": "LGG",
        "BraTS19_2013_10_1": "HGG",
        "BraTS19_CBICA_AAB_1": "HGG",
    }
    entry = doc["cases"][0]
    assert entry["class"] == "LGG"
    assert entry["mask"] == (
        "../MICCAI_BraTS_2019_Data_Training/LGG/BraTS19_2013_0_1/BraTS19_2013_0_1_seg.nii.gz"
    )
    assert entry["images"]["T1ce"].endswith("BraTS19_2013_0_1_t1ce.nii.gz")


def test_brats2020_name_mapping_and_misnamed_seg_of_case_355(tmp_path: Path) -> None:
    source = _brats2020(tmp_path)  # the Kaggle wrapper folder
    loaded, _ = _roundtrip(tool.convert_brats_grading(source), "brats_grading", tmp_path)

    assert loaded.name == "brats2020_grading"
    assert loaded.classes == _template("brats_grading.json").classes
    assert {c.id: c.target for c in loaded.cases} == {
        "BraTS20_Training_001": "HGG",
        "BraTS20_Training_260": "LGG",
        "BraTS20_Training_355": "HGG",
    }
    case = loaded.case("BraTS20_Training_355")
    assert case.mask is not None and case.mask.name == "W39_1998.09.19_Segm.nii"
    assert case.images["FLAIR"].path.name == "BraTS20_Training_355_flair.nii"


# --------------------------------------------------------------------------- UCSF-PDGM


def test_ucsf_pdgm_grades_matched_by_number(tmp_path: Path) -> None:
    source = _ucsf(tmp_path)  # the metadata CSV sits in the parent folder
    loaded, doc = _roundtrip(tool.convert_ucsf_pdgm(source), "ucsf_pdgm", tmp_path)

    assert loaded.classes == _template("ucsf_pdgm.json").classes == ["2", "3", "4"]
    assert loaded.modalities == ["T1", "T1ce", "T2", "FLAIR"]
    assert {c.id: c.target for c in loaded.cases} == {
        "UCSF-PDGM-0004": "4",
        "UCSF-PDGM-0007": "2",
        "UCSF-PDGM-0100": "3",
        "UCSF-PDGM-0100_FU003d": "3",
    }
    assert loaded.case("UCSF-PDGM-0100_FU003d").patient == "UCSF-PDGM-0100"
    assert loaded.case("UCSF-PDGM-0100").patient == "UCSF-PDGM-0100"
    entry = doc["cases"][0]
    folder = "../UCSF-PDGM-v3/UCSF-PDGM-0004_nifti"
    assert entry["images"]["T1ce"] == f"{folder}/UCSF-PDGM-0004_T1c.nii.gz"
    assert entry["images"]["T1"].endswith("UCSF-PDGM-0004_T1.nii.gz")  # not _T1_bias
    assert entry["mask"].endswith("UCSF-PDGM-0004_tumor_segmentation.nii.gz")


def test_ucsf_pdgm_explicit_metadata_with_float_grades(tmp_path: Path) -> None:
    source = _ucsf(tmp_path)
    rows = [[r[0], r[1], r[2], f"{r[3]}.0", r[4]] for r in UCSF_ROWS]
    metadata = _csv(tmp_path / "elsewhere" / "meta.csv", UCSF_HEADER, rows)
    manifest = tool.convert_ucsf_pdgm(source, metadata=metadata)
    assert manifest.case("UCSF-PDGM-0007").target == "2"


# --------------------------------------------------------------------------- the script, errors


def _run_main(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    status = tool.main([str(a) for a in argv])
    return status, capsys.readouterr().err


def _one_error_line(err: str, *fragments: object) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])


def test_script_runs_from_a_checkout(tmp_path: Path) -> None:
    source = _brats2020(tmp_path)
    out = tmp_path / "out" / "grading.json"
    run = [sys.executable, str(SCRIPT), "brats_grading", str(source), "-o", str(out)]
    done = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert "3 labelled cases" in done.stdout
    doc = json.loads(out.read_text())
    assert doc["reference"] and doc["license"] and str(source) in doc["description"]
    loaded = load_manifest(out)
    assert _ids(loaded.cases) == [
        "BraTS20_Training_001",
        "BraTS20_Training_260",
        "BraTS20_Training_355",
    ]
    assert validate_manifest(loaded) == []

    missing = tmp_path / "not_here"
    run = [sys.executable, str(SCRIPT), "btcv", str(missing), "-o", str(out)]
    done = subprocess.run(run, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    _one_error_line(done.stderr, missing, "not found")


def test_help_lists_every_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for dataset in ("msd", "btcv", "amos22", "brats2021", "brats_grading", "ucsf_pdgm"):
        assert dataset in text
    assert "--modality" in text and "--metadata" in text and "--skip-incomplete" in text


def test_error_no_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "RawData" / "Training" / "img").mkdir(parents=True)
    status, err = _run_main(capsys, "btcv", tmp_path, "-o", tmp_path / "o.json")
    assert status == 2
    _one_error_line(err, tmp_path / "RawData" / "Training" / "img", "no cases found")
    assert not (tmp_path / "o.json").exists()


def test_error_unrecognised_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "something").mkdir()
    status, err = _run_main(capsys, "brats_grading", tmp_path, "-o", tmp_path / "o.json")
    assert status == 2
    _one_error_line(err, tmp_path, "name_mapping.csv")


def test_error_missing_modality_or_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for case in ("BraTS2021_00000", "BraTS2021_00002"):
        _brats_case(tmp_path / "data" / case, ".nii.gz")
    gone = tmp_path / "data" / "BraTS2021_00002" / "BraTS2021_00002_t1ce.nii.gz"
    gone.unlink()
    status, err = _run_main(capsys, "brats2021", tmp_path / "data", "-o", tmp_path / "o.json")
    assert status == 2
    _one_error_line(err, gone, "T1ce", "--skip-incomplete")

    status, err = _run_main(
        capsys, "brats2021", tmp_path / "data", "-o", tmp_path / "o.json", "--skip-incomplete"
    )
    assert status == 0 and "warning:" in err and str(gone) in err
    assert _ids(load_manifest(tmp_path / "o.json").cases) == ["BraTS2021_00000"]


def test_error_case_without_grade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _ucsf(tmp_path, rows=[r for r in UCSF_ROWS if r[0] != "UCSF-PDGM-007"])
    status, err = _run_main(capsys, "ucsf_pdgm", source, "-o", tmp_path / "o.json")
    assert status == 2
    _one_error_line(err, tmp_path / "UCSF-PDGM-metadata_v2.csv", "UCSF-PDGM-007")


def test_error_unknown_grade_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [[*r[:3], "GBM" if r[0] == "UCSF-PDGM-004" else r[3], r[4]] for r in UCSF_ROWS]
    source = _ucsf(tmp_path, rows=rows)
    status, err = _run_main(capsys, "ucsf_pdgm", source, "-o", tmp_path / "o.json")
    assert status == 2
    _one_error_line(err, tmp_path / "UCSF-PDGM-metadata_v2.csv", "'GBM'", "UCSF-PDGM-004")


def test_error_metadata_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _ucsf(tmp_path)
    (tmp_path / "UCSF-PDGM-metadata_v2.csv").unlink()
    status, err = _run_main(capsys, "ucsf_pdgm", source, "-o", tmp_path / "o.json")
    assert status == 2
    _one_error_line(err, source, "--metadata")


def test_error_brats2020_case_missing_from_name_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _brats2020(tmp_path)
    _brats_case(source / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_369", ".nii")
    status, err = _run_main(capsys, "brats_grading", source, "-o", tmp_path / "o.json")
    assert status == 2
    _one_error_line(err, "name_mapping.csv", "BraTS20_Training_369", "Grade")
