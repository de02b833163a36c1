"""Held-out abdomen phantoms: determinism, geometry on disk, anatomy, ambiguous intensities, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from volseg.cli.main import main
from volseg.errors import VolsegError
from volseg.io import Geometry
from volseg.synth import (
    ABDOMEN_LABELS,
    SIZES,
    case_rng,
    make_abdomen_case,
    synthesize_abdomen,
)

TINY, SMALL = SIZES["tiny"], SIZES["small"]
SPLEEN, LIVER, KIDNEY = 1, 2, 3


@pytest.fixture(scope="module")
def abdomen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("abdomen")
    synthesize_abdomen(out, cases=3, shape=TINY, seed=0)
    return out


def _array(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*.nii.gz"))


def _centroid_lps(case, value: int) -> np.ndarray:
    """Physical LPS centre (mm) of label ``value``: independent of flips and tilt."""
    index = np.argwhere(case.label.array == value).mean(axis=0)
    return case.label.geometry.index_to_physical(index)


# --- determinism -------------------------------------------------------------------------


def test_same_seed_gives_identical_dataset(abdomen_dir, tmp_path):
    again = tmp_path / "again"
    assert synthesize_abdomen(again, cases=3, shape=TINY, seed=0) == again / "manifest.json"
    for name in ("manifest.json", "synth.json"):
        assert (abdomen_dir / name).read_text() == (again / name).read_text()
    files = _files(abdomen_dir)
    assert files == _files(again) and len(files) == 6
    for rel in files:
        a, b = _array(abdomen_dir / rel), _array(again / rel)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), rel


def test_case_k_depends_only_on_seed_and_k(abdomen_dir, tmp_path):
    synthesize_abdomen(tmp_path, cases=2, shape=TINY, seed=0)
    for rel in ["imagesTr/abdomen_001.nii.gz", "labelsTr/abdomen_001.nii.gz"]:
        assert np.array_equal(_array(tmp_path / rel), _array(abdomen_dir / rel))
    case = make_abdomen_case(case_rng(0, 1), TINY)
    assert np.array_equal(case.image.array, _array(abdomen_dir / "imagesTr/abdomen_001.nii.gz"))
    other = make_abdomen_case(case_rng(1, 1), TINY)
    assert not np.array_equal(case.image.array, other.image.array)
    assert not np.array_equal(case.label.array, other.label.array)


# --- files and geometry --------------------------------------------------------------------


def _check_geometry(path: Path, geometry: Geometry) -> None:
    np.testing.assert_allclose(nib.load(str(path)).affine, geometry.affine, atol=1e-4)
    itk = sitk.ReadImage(str(path))
    np.testing.assert_allclose(itk.GetSpacing(), geometry.spacing, atol=1e-4)
    np.testing.assert_allclose(itk.GetOrigin(), geometry.origin, atol=1e-4)
    np.testing.assert_allclose(
        np.reshape(itk.GetDirection(), (3, 3)), geometry.direction, atol=1e-4
    )
    assert itk.GetSize() == geometry.shape


def test_files_reopen_with_one_geometry_for_image_and_label(abdomen_dir):
    manifest = json.loads((abdomen_dir / "manifest.json").read_text())
    assert manifest["task"] == "segmentation" and manifest["modalities"] == ["CT"]
    assert manifest["labels"] == {"0": "background", "1": "spleen", "2": "liver", "3": "kidney"}
    assert [c["id"] for c in manifest["cases"]] == [f"abdomen_{k:03d}" for k in range(3)]
    for k, entry in enumerate(manifest["cases"]):
        case = make_abdomen_case(case_rng(0, k), TINY)
        assert case.image.geometry == case.label.geometry
        image_path, label_path = abdomen_dir / entry["images"]["CT"], abdomen_dir / entry["label"]
        _check_geometry(image_path, case.image.geometry)
        _check_geometry(label_path, case.image.geometry)
        assert sitk.ReadImage(str(image_path)).GetPixelID() == sitk.sitkInt16
        assert sitk.ReadImage(str(label_path)).GetPixelID() == sitk.sitkUInt8
        assert np.array_equal(_array(label_path), case.label.array)


def test_synth_json_records_request_and_draws(abdomen_dir):
    drawn = json.loads((abdomen_dir / "synth.json").read_text())
    request = {k: drawn[k] for k in ("kind", "cases", "shape", "seed")}
    assert request == {"kind": "abdomen", "cases": 3, "shape": list(TINY), "seed": 0}
    for case in drawn["cases_drawn"]:
        assert set(case["organ_hu_mean"]) == {"spleen", "liver", "kidney"}
        assert all(v > 0 for v in case["organ_volume_ml"].values())
        assert case["scan"] in ("LPS", "RAS", "oblique")
        assert abs(case["patient_angle_deg"]) <= 10


def test_spacing_is_anisotropic_and_orientation_is_lps_ras_or_slightly_oblique():
    seen = set()
    for k in range(12):
        case = make_abdomen_case(case_rng(0, k), TINY)
        geometry, scan = case.image.geometry, case.params["scan"]
        sx, sy, sz = geometry.spacing
        assert sx == sy and 0.7 <= sx <= 1.0 and 3.0 <= sz <= 5.0
        d = geometry.direction
        np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-9)
        axis_aligned = np.allclose(np.abs(d), np.eye(3))
        if scan == "oblique":
            assert not axis_aligned and np.degrees(np.arccos(np.abs(np.diag(d)).min())) < 8.01
            assert geometry.orientation in ("LPS", "RAS")
        else:
            assert axis_aligned and geometry.orientation == scan
        seen.add(scan)
    assert seen == {"LPS", "RAS", "oblique"}


# --- anatomy and intensities ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [TINY, (24, 24, 10), (48, 40, 20)])
def test_every_organ_present_and_placed(shape):
    for k in range(5):
        case = make_abdomen_case(case_rng(2, k), shape)
        label = case.label.array
        assert case.image.shape == label.shape == shape and label.dtype == np.uint8
        assert set(np.unique(label)) == set(ABDOMEN_LABELS)
        # Both kidneys share label 3: two separate pieces of about equal size.
        pieces, n = ndimage.label(label == KIDNEY, np.ones((3, 3, 3)))
        sizes = np.sort(np.bincount(pieces.ravel())[1:])
        assert n == 2 and sizes[0] > 0.6 * sizes[1]
        # LPS mm, whatever the flips/tilt: liver on the patient's right of the spleen, the
        # kidneys behind the liver.
        liver, spleen, kidney = (_centroid_lps(case, v) for v in (LIVER, SPLEEN, KIDNEY))
        assert liver[0] < spleen[0] and kidney[1] > liver[1]


def test_organ_hu_overlap_across_cases_and_labels_sit_on_their_organs():
    """Per-case organ HU overlap (intensity alone is ambiguous), and the oriented label map lies
    on the oriented image: eroded organ cores carry the drawn organ HU; the same cores turned
    180 degrees in-plane (an LPS/RAS mix-up) land on fat, bowel and muscle instead."""
    means = {v: [] for v in (SPLEEN, LIVER, KIDNEY)}
    for k in range(12):
        case = make_abdomen_case(case_rng(0, k), SMALL)
        hu, label, drawn = case.image.array, case.label.array, case.params
        assert hu.dtype == np.int16 and hu.min() >= -1024
        assert (hu[[0, -1]][:, [0, -1]] < -800).all()  # air in the corners, any orientation
        tolerance = 3 * drawn["noise_hu"] + 25
        for v in means:
            core = ndimage.binary_erosion(label == v)
            mean = drawn["organ_hu_mean"][ABDOMEN_LABELS[v]]
            assert np.mean(np.abs(hu[core] - mean) < tolerance) > 0.95, (k, ABDOMEN_LABELS[v])
            if v != SPLEEN:  # a turned spleen may land on the liver, as HU-alike as intended
                turned = np.flip(core, axis=(0, 1))
                assert np.mean(np.abs(hu[turned] - mean) < tolerance) < 0.7
            means[v].append(float(hu[label == v].mean()))
        core = ndimage.binary_erosion(label == LIVER, iterations=2)
        assert abs(hu[core].mean() - drawn["organ_hu_mean"]["liver"]) < 10
    interval = {v: (min(m), max(m)) for v, m in means.items()}
    for a, b in [(SPLEEN, LIVER), (LIVER, KIDNEY), (SPLEEN, KIDNEY)]:
        assert interval[a][0] < interval[b][1] and interval[b][0] < interval[a][1], interval


def test_body_is_flat_moved_and_has_gas_inside():
    """Unlike the organs phantom: a wide flat body, shifted/turned in the field of view, with gas
    inside it (stomach and bowel)."""
    centres = []
    for k in range(6):
        case = make_abdomen_case(case_rng(0, k), SMALL)
        hu = case.image.array
        body = ndimage.binary_fill_holes(hu > -500, np.ones((3, 3, 1), dtype=bool))
        points = np.argwhere(body)
        extent = np.ptp(case.image.geometry.index_to_physical(points), axis=0)
        assert extent[0] > 1.35 * extent[1]  # wider (L-R) than deep (A-P), in mm
        assert ((hu < -400) & body).sum() > 20  # gas in stomach or bowel (partial volume)
        centres.append(case.image.geometry.index_to_physical(points.mean(axis=0)))
    spread = np.ptp(np.array(centres) - np.array(centres).mean(axis=0), axis=0)
    assert spread[:2].max() > 5  # mm: the patient is not always in the same place


# --- entry points ------------------------------------------------------------------------------


def test_cli_synth_abdomen_then_check(tmp_path, capsys):
    out = tmp_path / "synthetic"
    args = ["synth", "--out", str(out), "--dataset", "abdomen", "--size", "tiny", "--cases", "2"]
    assert main(args) == 0
    manifest = out / "abdomen" / "manifest.json"
    assert manifest.is_file() and not (out / "organs").exists() and not (out / "glioma").exists()
    assert len(_files(out / "abdomen")) == 4
    capsys.readouterr()
    assert main(["check", str(manifest)]) == 0
    printed = capsys.readouterr().out
    assert "no problems found" in printed and "kidney" in printed


def test_bad_request_is_a_user_error(tmp_path):
    with pytest.raises(VolsegError, match="cases"):
        synthesize_abdomen(tmp_path, cases=0, shape=TINY)
    with pytest.raises(VolsegError, match="shape"):
        synthesize_abdomen(tmp_path, cases=1, shape=(32, 4, 16))
