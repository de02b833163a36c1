"""The held-out glioma generator: deterministic, loadable by the train path, graded only partly."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from volseg.cli import synth as synth_cli
from volseg.cli import train as train_cli
from volseg.data.formats import load_manifest
from volseg.data.loading import case_to_dict
from volseg.errors import VolsegError
from volseg.metrics.classification import roc_auc
from volseg.synth import synthesize_glioma_heldout
from volseg.synth.glioma_heldout import (
    MODALITIES,
    heldout_case_rng,
    heldout_grade,
    make_heldout_case,
)

SHAPE = (32, 32, 12)
SEED = 1  # case 5 of seed 1 lacks its T1
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def heldout_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("heldout")
    synthesize_glioma_heldout(out, cases=6, shape=SHAPE, seed=SEED)
    return out


def _array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_same_seed_same_bytes_and_case_k_independent_of_count(heldout_dir, tmp_path):
    synthesize_glioma_heldout(tmp_path / "a", cases=3, shape=SHAPE, seed=SEED)
    for rel in ["imagesTr/heldout_002_T1ce.nii.gz", "labelsTr/heldout_002.nii.gz"]:
        assert (tmp_path / "a" / rel).read_bytes() == (heldout_dir / rel).read_bytes()
    other = make_heldout_case(heldout_case_rng(SEED + 1, 2), SHAPE, 0).image.array
    assert not np.array_equal(other[1], _array(heldout_dir / "imagesTr/heldout_002_T1ce.nii.gz"))


def test_manifest_loads_with_the_missing_modality_left_out(heldout_dir):
    manifest = load_manifest(heldout_dir / "manifest.json")
    assert manifest.task == "classification" and manifest.modalities == list(MODALITIES)
    assert manifest.classes == ["grade2", "grade3"]
    drawn = json.loads((heldout_dir / "synth.json").read_text())["cases_drawn"]
    assert [d["grade"] for d in drawn] == [c.target for c in manifest.cases]
    assert [d["missing"] for d in drawn] == [None] * 5 + ["T1"]
    missing = manifest.cases[5]
    assert sorted(missing.images) == ["FLAIR", "T1ce", "T2"]
    assert not (heldout_dir / "imagesTr/heldout_005_T1.nii.gz").exists()
    data = case_to_dict(missing, manifest.modalities, classes=manifest.classes)
    assert data["presence"].tolist() == [0.0, 1.0, 1.0, 1.0]
    for case in manifest.cases:
        label = _array(case.label)
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2, 3}
        assert case.mask == case.label and (label == 1).any() | (label == 3).any()


def test_train_dry_run_accepts_the_set(heldout_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="volseg")
    train_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["train", str(REPO / "configs/synthetic_glioma.yaml")]
        + [f"data.manifest={heldout_dir / 'manifest.json'}", f"output_dir={tmp_path / 'runs'}"]
        + ["data.folds=3", "--dry-run"]
    )
    assert args.run(args) == 0
    assert "plan for run" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_slices_are_anisotropic_in_the_header(heldout_dir):
    slice_mm = []
    for k in range(6):
        zooms = nib.load(str(heldout_dir / f"labelsTr/heldout_{k:03d}.nii.gz")).header.get_zooms()
        assert 0.75 < zooms[0] < 1.3 and 0.75 < zooms[1] < 1.3
        slice_mm.append(zooms[2])
    assert all(1.0 <= z <= 3.0 for z in slice_mm) and max(slice_mm) - min(slice_mm) > 0.3


def test_grades_balanced_in_each_block():
    for grades in (2, 3):
        got = [heldout_grade(0, k, grades) for k in range(12 * grades)]
        for b in range(12):
            assert sorted(got[b * grades : (b + 1) * grades]) == list(range(grades))


def test_enhancement_grades_only_partly():
    """Mean T1ce in the tumour core (over the head's median) separates grades, not perfectly."""
    grades, scores, enhancing = [], [], []
    for k in range(40):
        grade = heldout_grade(0, k, 2)
        case = make_heldout_case(heldout_case_rng(0, k), (48, 48, 16), grade)
        t1ce, label = case.image.array[1], case.label.array
        core = (label == 1) | (label == 3)
        head = t1ce[(label == 0) & (t1ce > 0.2 * np.percentile(t1ce, 99))]
        grades.append(grade)
        scores.append(t1ce[core].mean() / np.median(head))
        enhancing.append(bool((label == 3).any()))
    auc = roc_auc(np.array(grades) == 1, np.array(scores))
    assert 0.6 < auc < 0.98, auc
    # some low-grade tumours enhance and some high-grade ones do not: ambiguous cases exist
    high = np.array(grades) == 1
    assert np.array(enhancing)[~high].any() and not np.array(enhancing)[high].all()


def test_cli_writes_the_dataset_and_rejects_bad_grades(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="volseg")
    synth_cli.add_parser(parser.add_subparsers(dest="command"))
    argv = ["synth", "--dataset", "glioma-heldout", "--out", str(tmp_path), "--cases", "2"]
    args = parser.parse_args([*argv, "--shape", "24", "24", "8"])
    assert args.run(args) == 0
    assert (tmp_path / "glioma-heldout/manifest.json").is_file()
    assert "glioma-heldout/manifest.json" in capsys.readouterr().out
    with pytest.raises(VolsegError, match="grades must be 2 or 3"):
        synthesize_glioma_heldout(tmp_path / "x", cases=1, shape=(24, 24, 8), grades=4)
