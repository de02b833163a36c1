"""Held-out pelvis phantoms: determinism, layout the train path reads, labels, look-alike pair."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from volseg.cli.main import main
from volseg.data.formats import load_manifest
from volseg.synth import PELVIS_LABELS, case_rng, make_pelvis_case, synthesize_pelvis

SHAPE = (48, 48, 16)
RECTUM, PROSTATE = 2, 3


@pytest.fixture(scope="module")
def pelvis_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pelvis")
    synthesize_pelvis(out, cases=3, shape=SHAPE, seed=0)
    return out


def _array(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def test_same_seed_same_bytes_and_case_k_independent_of_cases(pelvis_dir, tmp_path):
    again = tmp_path / "again"
    synthesize_pelvis(again, cases=2, shape=SHAPE, seed=0)
    for rel in ("imagesTr/pelvis_001.nii.gz", "labelsTr/pelvis_001.nii.gz"):
        a, b = _array(pelvis_dir / rel), _array(again / rel)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), rel
    case = make_pelvis_case(case_rng(0, 1), SHAPE)
    assert np.array_equal(case.image.array, _array(pelvis_dir / "imagesTr/pelvis_001.nii.gz"))
    other = make_pelvis_case(case_rng(1, 1), SHAPE)
    assert not np.array_equal(case.image.array, other.image.array)


def test_layout_and_manifest_load_like_the_other_ct_sets(pelvis_dir):
    doc = json.loads((pelvis_dir / "manifest.json").read_text())
    assert doc["task"] == "segmentation" and doc["modalities"] == ["CT"]
    assert doc["labels"] == {str(k): v for k, v in PELVIS_LABELS.items()}
    manifest = load_manifest(pelvis_dir / "manifest.json")
    assert [c.id for c in manifest.cases] == [f"pelvis_{k:03d}" for k in range(3)]
    assert manifest.labels == PELVIS_LABELS
    drawn = json.loads((pelvis_dir / "synth.json").read_text())
    assert drawn["kind"] == "pelvis" and len(drawn["cases_drawn"]) == 3
    for entry in drawn["cases_drawn"]:
        assert set(entry["organ_volume_ml"]) == set(PELVIS_LABELS.values()) - {"background"}
        assert all(v > 0 for v in entry["organ_volume_ml"].values())


def test_train_dry_run_reads_the_pelvis_manifest(pelvis_dir, capsys):
    manifest = f"data.manifest={pelvis_dir}/manifest.json"
    rc = main(["train", "configs/synthetic_organs.yaml", manifest, "data.folds=3", "--dry-run"])
    assert rc == 0
    assert "femoral_head_right" in capsys.readouterr().out


@pytest.mark.parametrize("shape", [SHAPE, (24, 24, 10), (40, 56, 20)])
def test_every_label_in_every_case_and_heads_on_their_side(shape):
    for k in range(4):
        case = make_pelvis_case(case_rng(3, k), shape)
        label = case.label.array
        assert label.shape == case.image.shape == shape and label.dtype == np.uint8
        assert set(np.unique(label)) == set(PELVIS_LABELS)
        geometry = case.label.geometry
        left = geometry.index_to_physical(np.argwhere(label == 4).mean(axis=0))
        right = geometry.index_to_physical(np.argwhere(label == 5).mean(axis=0))
        assert left[0] > right[0]  # LPS x points to the patient's left, whatever the flips


def test_spacing_anisotropic_and_orientations_vary():
    scans = set()
    for k in range(9):
        case = make_pelvis_case(case_rng(0, k), SHAPE)
        sx, sy, sz = case.image.geometry.spacing
        assert sx == sy and 6.5 < sx < 10.5 and 7.0 < sz < 9.5
        scans.add(case.params["scan"])
    assert scans == {"LPS", "RAS", "oblique"}


def test_rectum_and_prostate_share_mean_hu_but_not_texture():
    """Intensity alone does not separate the pair: means within 15 HU, local std far apart."""
    for k in range(3):
        case = make_pelvis_case(case_rng(5, k), (96, 96, 24))
        image, label = case.image.array.astype(np.float64), case.label.array
        mean = ndimage.uniform_filter(image, (3, 3, 1))
        local = np.sqrt(np.maximum(ndimage.uniform_filter(image**2, (3, 3, 1)) - mean**2, 0))
        means, stds = [], []
        for value in (RECTUM, PROSTATE):
            mask = label == value
            core = ndimage.binary_erosion(mask, np.ones((3, 3, 1)))
            assert core.sum() > 20
            means.append(image[mask].mean())
            stds.append(local[core].mean())
        assert abs(means[0] - means[1]) < 15, means
        assert stds[0] > 3 * stds[1], stds


def test_noise_grows_with_body_size():
    cases = [make_pelvis_case(case_rng(0, k), SHAPE).params for k in range(12)]
    width = np.array([p["body_half_width_mm"] for p in cases])
    sigma = np.array([p["noise_sigma_hu"] for p in cases])
    assert np.corrcoef(width, sigma)[0, 1] > 0.3


def test_cli_writes_pelvis(tmp_path, capsys):
    argv = ["synth", "--out", str(tmp_path), "--dataset", "pelvis", "--cases", "1"]
    assert main([*argv, "--shape", "32", "32", "12"]) == 0
    assert (tmp_path / "pelvis" / "manifest.json").is_file()
    assert "pelvis" in capsys.readouterr().out
