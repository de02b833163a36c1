"""Synthetic phantoms: determinism, geometry on disk, anatomy, and learnable-but-hard grading."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from volseg.errors import VolsegError
from volseg.io import Geometry
from volseg.synth import (
    MODALITIES,
    ORGAN_LABELS,
    SIZES,
    TUMOUR_LABELS,
    case_grade,
    case_rng,
    grade_classes,
    make_glioma_case,
    make_organ_case,
    synthesize_glioma,
    synthesize_organs,
)

TINY = SIZES["tiny"]


@pytest.fixture(scope="module")
def organs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("organs")
    synthesize_organs(out, cases=4, shape=TINY, seed=0)
    return out


@pytest.fixture(scope="module")
def glioma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("glioma")
    synthesize_glioma(out, cases=4, shape=TINY, seed=0)
    return out


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _array(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.nii.gz"))


def _best_threshold_accuracy(feature: np.ndarray, high: np.ndarray) -> float:
    """Best accuracy of ``feature >= t`` (or ``<=``) at predicting the boolean ``high``."""
    best = 0.0
    for t in np.unique(feature):
        above = feature >= t
        best = max(best, float(np.mean(above == high)), float(np.mean(~above == high)))
    return best


# --- determinism -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["organs", "glioma"])
def test_same_seed_gives_identical_dataset(kind, organs_dir, glioma_dir, tmp_path):
    first = organs_dir if kind == "organs" else glioma_dir
    make = synthesize_organs if kind == "organs" else synthesize_glioma
    again = tmp_path / "again"
    assert make(again, cases=4, shape=TINY, seed=0) == again / "manifest.json"
    assert (first / "manifest.json").read_text() == (again / "manifest.json").read_text()
    assert (first / "synth.json").read_text() == (again / "synth.json").read_text()
    files = [p.relative_to(first) for p in _files(first)]
    assert files == [p.relative_to(again) for p in _files(again)]
    assert len(files) == (8 if kind == "organs" else 20)
    for rel in files:
        a, b = _array(first / rel), _array(again / rel)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), rel


def test_different_seed_differs():
    a = make_organ_case(case_rng(0, 0), TINY)
    b = make_organ_case(case_rng(1, 0), TINY)
    assert not np.array_equal(a.image.array, b.image.array)
    assert not np.array_equal(a.label.array, b.label.array)
    c = make_glioma_case(case_rng(0, 0), TINY, grade=1)
    d = make_glioma_case(case_rng(1, 0), TINY, grade=1)
    assert not np.array_equal(c.image.array, d.image.array)


def test_case_k_does_not_depend_on_case_count(organs_dir, glioma_dir, tmp_path):
    synthesize_organs(tmp_path / "o", cases=2, shape=TINY, seed=0)
    synthesize_glioma(tmp_path / "g", cases=2, shape=TINY, seed=0)
    for rel in ["imagesTr/organs_001.nii.gz", "labelsTr/organs_001.nii.gz"]:
        assert np.array_equal(_array(tmp_path / "o" / rel), _array(organs_dir / rel))
    for rel in ["imagesTr/glioma_001_FLAIR.nii.gz", "labelsTr/glioma_001.nii.gz"]:
        assert np.array_equal(_array(tmp_path / "g" / rel), _array(glioma_dir / rel))
    # The in-memory generator builds the same case as the one on disk.
    case = make_organ_case(case_rng(0, 1), TINY)
    assert np.array_equal(case.image.array, _array(organs_dir / "imagesTr/organs_001.nii.gz"))
    # SeedSequence.spawn gives the same per-case streams as case_rng.
    child = np.random.SeedSequence(7).spawn(3)[2]
    assert case_rng(7, 2).random() == np.random.default_rng(child).random()


# --- files and geometry --------------------------------------------------------------------


def _check_geometry(path: Path, geometry: Geometry) -> None:
    img = nib.load(str(path))
    np.testing.assert_allclose(img.affine, geometry.affine, atol=1e-4)
    itk = sitk.ReadImage(str(path))
    np.testing.assert_allclose(itk.GetSpacing(), geometry.spacing, atol=1e-4)
    np.testing.assert_allclose(itk.GetOrigin(), geometry.origin, atol=1e-4)
    np.testing.assert_allclose(
        np.reshape(itk.GetDirection(), (3, 3)), geometry.direction, atol=1e-4
    )
    assert itk.GetSize() == geometry.shape == img.shape


def test_organ_files_reopen_with_declared_geometry(organs_dir):
    manifest = _manifest(organs_dir)
    assert manifest["task"] == "segmentation" and manifest["modalities"] == ["CT"]
    assert manifest["labels"] == {str(k): v for k, v in ORGAN_LABELS.items()}
    assert [c["id"] for c in manifest["cases"]] == [f"organs_{k:03d}" for k in range(4)]
    for k, entry in enumerate(manifest["cases"]):
        case = make_organ_case(case_rng(0, k), TINY)
        image_path, label_path = organs_dir / entry["images"]["CT"], organs_dir / entry["label"]
        _check_geometry(image_path, case.image.geometry)
        _check_geometry(label_path, case.label.geometry)
        assert nib.load(str(image_path)).get_data_dtype() == np.int16
        assert nib.load(str(label_path)).get_data_dtype() == np.uint8
        assert sitk.ReadImage(str(image_path)).GetPixelID() == sitk.sitkInt16
        assert sitk.ReadImage(str(label_path)).GetPixelID() == sitk.sitkUInt8
        assert np.array_equal(_array(label_path), case.label.array)


def test_glioma_files_reopen_with_declared_geometry(glioma_dir):
    manifest = _manifest(glioma_dir)
    assert manifest["task"] == "classification"
    assert manifest["modalities"] == list(MODALITIES) == ["T1", "T1ce", "T2", "FLAIR"]
    assert manifest["classes"] == ["grade2", "grade3"]
    assert manifest["labels"] == {str(k): v for k, v in TUMOUR_LABELS.items()}
    for k, entry in enumerate(manifest["cases"]):
        grade = case_grade(0, k, 2)
        case = make_glioma_case(case_rng(0, k), TINY, grade)
        assert entry["class"] == manifest["classes"][grade] == case.params["grade"]
        assert entry["mask"] == entry["label"] == f"labelsTr/glioma_{k:03d}.nii.gz"
        for m, modality in enumerate(MODALITIES):
            path = glioma_dir / entry["images"][modality]
            assert path.name == f"glioma_{k:03d}_{modality}.nii.gz"
            _check_geometry(path, case.image.geometry)
            assert nib.load(str(path)).get_data_dtype() == np.float32
            assert np.array_equal(_array(path), case.image.array[m])
        label = _array(glioma_dir / entry["label"])
        _check_geometry(glioma_dir / entry["label"], case.image.geometry)
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2, 3}
        assert (label > 0).any()


def test_synth_json_records_request_and_draws(organs_dir, glioma_dir):
    organs = json.loads((organs_dir / "synth.json").read_text())
    assert {k: organs[k] for k in ("kind", "cases", "shape", "seed")} == {
        "kind": "organs",
        "cases": 4,
        "shape": list(TINY),
        "seed": 0,
    }
    assert [c["id"] for c in organs["cases_drawn"]] == [f"organs_{k:03d}" for k in range(4)]
    for drawn in organs["cases_drawn"]:
        assert set(drawn["organ_hu_mean"]) == set(list(ORGAN_LABELS.values())[1:])
        assert all(v > 0 for v in drawn["organ_volume_ml"].values())
    glioma = json.loads((glioma_dir / "synth.json").read_text())
    assert glioma["kind"] == "glioma" and glioma["grades"] == 2
    assert [c["grade"] for c in glioma["cases_drawn"]] == [
        c["class"] for c in _manifest(glioma_dir)["cases"]
    ]


# --- organs: anatomy, intensities, geometry ---------------------------------------------------


def test_organs_present_separate_and_anatomically_placed():
    for k in range(6):
        case = make_organ_case(case_rng(3, k), TINY)
        label = case.label.array
        assert label.dtype == np.uint8 and label.max() <= max(ORGAN_LABELS)
        assert set(np.unique(label)) == set(ORGAN_LABELS)
        # Centroids in LPS mm: liver on the patient's right of the spleen, kidneys posterior
        # to the liver and on their own sides. Holds whatever flips/tilt the case drew.
        centre = {
            v: case.label.geometry.index_to_physical(np.argwhere(label == v).mean(axis=0))
            for v in ORGAN_LABELS
            if v
        }
        liver, spleen, left, right = (centre[v] for v in (1, 2, 3, 4))
        assert liver[0] < spleen[0] and right[0] < left[0]
        assert left[1] > liver[1] and right[1] > liver[1]


def test_organ_intensities_overlap_across_cases():
    """Per-case mean HU of liver, spleen and kidneys overlap: intensity alone is ambiguous."""
    means = {v: [] for v in range(1, 5)}
    for k in range(8):
        case = make_organ_case(case_rng(0, k), TINY)
        hu, label = case.image.array, case.label.array
        assert hu.dtype == np.int16
        assert hu.min() >= -1024 and np.median(hu[0]) < -900  # air outside the body
        for v in means:
            means[v].append(float(hu[label == v].mean()))
        core = ndimage.binary_erosion(label == 1, iterations=1)  # away from partial volume
        assert abs(hu[core].mean() - case.params["organ_hu_mean"]["liver"]) < 10
    interval = {v: (min(m), max(m)) for v, m in means.items()}
    for a, b in [(1, 2), (2, 3), (1, 4)]:
        assert interval[a][0] < interval[b][1] and interval[b][0] < interval[a][1], interval


def test_organ_spacing_is_anisotropic_and_orientation_varies():
    directions = []
    for k in range(6):
        geometry = make_organ_case(case_rng(0, k), TINY).image.geometry
        sx, sy, sz = geometry.spacing
        assert sx == sy and 0.7 <= sx <= 1.0 and 2.0 <= sz <= 5.0 and sz > sx
        np.testing.assert_allclose(geometry.direction.T @ geometry.direction, np.eye(3), atol=1e-9)
        directions.append(geometry.direction)
    assert any(np.linalg.det(d) < 0 for d in directions)
    assert any(not np.allclose(np.abs(d), np.eye(3)) for d in directions)  # oblique


def test_phantom_fills_any_field_of_view():
    for shape in [(48, 40, 20), (24, 24, 10)]:
        case = make_organ_case(case_rng(5, 0), shape)
        assert case.image.shape == shape
        assert set(np.unique(case.label.array)) == set(ORGAN_LABELS)
        body = case.image.array > -500
        assert 0.35 < body.mean() < 0.75


# --- glioma: grading learnable but not trivial ------------------------------------------------


def test_glioma_grades_are_learnable_but_not_trivial():
    rows = []
    for k in range(40):
        grade = case_grade(0, k, 2)
        case = make_glioma_case(case_rng(0, k), TINY, grade)
        label, image = case.label.array, case.image.array
        assert image.shape == (4, *TINY) and image.dtype == np.float32 and image.min() >= 0
        counts = np.bincount(label.ravel(), minlength=4)
        tumour = label > 0
        # T1ce relative to T1 in the tumour, each normalised by its whole-head median.
        head = image[0] > np.median(image[0])
        ratio = (image[1][tumour] / np.median(image[1][head])).mean() / (
            image[0][tumour] / np.median(image[0][head])
        ).mean()
        rows.append((grade, counts[1], counts[2], counts[3], counts[1:].sum(), ratio))
    data = np.array(rows)
    high = data[:, 0] == 1
    assert high.sum() == 20  # balanced in every block of `grades` cases
    oedema, enhancing, ratio = data[:, 2], data[:, 3], data[:, 5]
    assert oedema[high].mean() > 1.5 * oedema[~high].mean()
    assert enhancing[high].mean() > 3 * enhancing[~high].mean()
    assert ratio[high].mean() > ratio[~high].mean()
    # Some low-grade tumours enhance and some high-grade ones do not.
    assert (enhancing[~high] > 0).any() and (enhancing[high] == 0).any()
    for feature in data[:, 1:].T:  # no single-feature threshold grades perfectly
        assert _best_threshold_accuracy(feature, high) < 0.95


def test_three_grades_and_errors(tmp_path):
    assert grade_classes(3) == ["grade2", "grade3", "grade4"]
    grades = [case_grade(0, k, 3) for k in range(9)]
    assert sorted(grades) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    case = make_glioma_case(case_rng(0, 0), TINY, grade=2, grades=3)
    assert case.params["grade"] == "grade4" and case.params["severity"] == 1.0
    with pytest.raises(VolsegError, match="grades"):
        synthesize_glioma(tmp_path, cases=2, shape=TINY, grades=4)
    with pytest.raises(VolsegError, match="cases"):
        synthesize_organs(tmp_path, cases=0, shape=TINY)
    with pytest.raises(VolsegError, match="shape"):
        synthesize_organs(tmp_path, cases=1, shape=(4, 32, 32))
