"""Cohorts: inputs found, outputs aligned and atomic, failures isolated, resume, torchrun shards."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import GEOMETRIES
from tests.inference._dist_predict import main as cli
from tests.inference.conftest import CLASSES, GLIOMA, body_ct
from volseg.data import Case, ImageSource, Manifest, save_manifest
from volseg.errors import VolsegError
from volseg.inference import discover_cases, predict_cohort
from volseg.io import Geometry, Image, read_image, write_image
from volseg.synth import case_rng, make_glioma_case

ROOT = Path(__file__).resolve().parents[2]


def geometry(name: str) -> Geometry:
    g = GEOMETRIES[name]
    return Geometry((20, 17, 6), g.spacing, g.origin, g.direction)


def timings(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "timings.csv", newline="") as f:
        return {row["case_id"]: row for row in csv.DictReader(f)}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".tmp-")]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """NIfTI and NRRD files on awkward grids, and a DICOM series."""
    folder = tmp_path_factory.mktemp("cohort")
    write_image(body_ct(geometry("oblique"), 1), folder / "oblique.nii.gz")
    write_image(body_ct(geometry("ras_flipped"), 2), folder / "flipped.nii.gz")
    write_image(body_ct(geometry("anisotropic"), 3), folder / "aniso.nrrd")
    write_image(body_ct(geometry("left_handed"), 4), folder / "lefty.nrrd")
    write_image(body_ct(geometry("oblique"), 5), folder / "series")  # DICOM
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_outputs_have_exactly_the_input_geometry(cohort, seg_checkpoint, tmp_path):
    out = tmp_path / "pred"
    code = cli(
        [
            "--model",
            str(seg_checkpoint),
            "--input",
            str(cohort),
            "--output",
            str(out),
            "--format",
            "same",
            "--save-probs",
            "--quiet",
        ]
    )
    assert code == 0
    table = timings(out)
    assert set(table) == {"oblique", "flipped", "aniso", "lefty", "series"}
    assert all(float(row["peak_memory_mb"]) > 0 for row in table.values())
    for case_id, source, suffix in [
        ("oblique", "oblique.nii.gz", ".nii.gz"),
        ("flipped", "flipped.nii.gz", ".nii.gz"),
        ("aniso", "aniso.nrrd", ".nrrd"),
        ("lefty", "lefty.nrrd", ".nrrd"),
        ("series", "series", ".nii.gz"),  # DICOM input: NIfTI output
    ]:
        reference = read_image(cohort / source)
        labels = read_image(out / f"{case_id}{suffix}")
        assert labels.geometry.matches(reference.geometry), case_id
        assert labels.array.dtype == np.uint8 and set(np.unique(labels.array)) <= {0, 1, 4}
        probs = read_image(out / f"{case_id}_probs{suffix}")
        assert probs.geometry.matches(reference.geometry) and probs.array.shape[0] == 3
        assert table[case_id]["status"] == "ok" and float(table[case_id]["encode"]) > 0
    nifti = nib.load(str(out / "oblique.nii.gz"))
    source = nib.load(str(cohort / "oblique.nii.gz"))
    np.testing.assert_array_equal(nifti.affine, source.affine)
    assert int(nifti.header["qform_code"]) == int(source.header["qform_code"])
    assert leftovers(out) == []


def test_a_broken_case_is_reported_and_the_others_are_predicted(seg_checkpoint, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        write_image(body_ct(geometry("oblique"), i), folder / f"good{i}.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08 this is not gzip")
    g = geometry("identity")
    write_image(Image(np.zeros((2, *g.shape), np.int16), g), folder / "twochannel.nii.gz")
    out = tmp_path / "out"
    code = cli(["--model", str(seg_checkpoint), "--input", str(folder), "--output", str(out)])
    assert code == 1
    table = timings(out)
    assert [table[c]["status"] for c in ("good0", "good1")] == ["ok", "ok"]
    assert table["broken"]["status"] == "failed" and "broken.nii.gz" in table["broken"]["error"]
    assert "one per modality" in table["twochannel"]["error"]
    assert (out / "good0.nii.gz").is_file() and (out / "good1.nii.gz").is_file()
    assert not (out / "broken.nii.gz").exists()
    with pytest.raises(VolsegError, match="overwrite an input"):
        predict_cohort(seg_checkpoint, folder, folder, progress=False)
    captured = capsys.readouterr()
    assert "failed 2" in captured.out and "broken" in captured.err


def test_interruption_leaves_no_partial_files(seg_checkpoint, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        write_image(body_ct(geometry("anisotropic"), i), folder / f"case{i}.nii.gz")
    out = tmp_path / "out"
    real_save, saved = nib.save, []

    def save_then_interrupt(img, path):
        if len(saved) == 1:  # the second case: half a file on disk, then Ctrl-C
            Path(path).write_bytes(b"partial")
            raise KeyboardInterrupt
        saved.append(path)
        real_save(img, path)

    monkeypatch.setattr(nib, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        predict_cohort(seg_checkpoint, folder, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["case0.nii.gz", "timings.csv"]
    assert read_image(out / "case0.nii.gz").shape == (20, 17, 6)
    assert list(timings(out)) == ["case0"]
    monkeypatch.setattr(nib, "save", real_save)
    resumed = predict_cohort(seg_checkpoint, folder, out, skip_existing=True, progress=False)
    assert [r["status"] for r in resumed.rows] == ["skipped", "ok", "ok"]
    assert resumed.exit_code == 0 and leftovers(out) == []


def test_skip_existing_skips_and_redoes_what_is_missing(seg_checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        write_image(body_ct(geometry("identity"), i), folder / f"c{i}.mha")
    out = tmp_path / "out"
    predict_cohort(seg_checkpoint, folder, out, progress=False)
    before = (out / "c0.nii.gz").stat().st_mtime_ns
    (out / "c1.nii.gz").unlink()
    again = predict_cohort(seg_checkpoint, folder, out, skip_existing=True, progress=False)
    assert [r["status"] for r in again.rows] == ["skipped", "ok"]
    assert (out / "c0.nii.gz").stat().st_mtime_ns == before and (out / "c1.nii.gz").is_file()
    assert timings(out)["c0"]["status"] == "skipped"


def glioma_manifest(folder: Path) -> Path:
    cases = []
    for i in range(3):
        case = make_glioma_case(case_rng(0, i), (28, 30, 10), grade=i % 2)
        image = case.image
        tumour = case.label.with_array((case.label.array > 0).astype(np.uint8))
        mask = write_image(tumour, folder / f"g{i}_mask.nii.gz") if i == 0 else None
        images = {}
        for m, channel in (("T1", 0), ("FLAIR", 3)):
            if i == 2 and m == "T1":
                continue  # a case without T1
            images[m] = ImageSource(
                write_image(image.channel(channel), folder / f"g{i}_{m}.nii.gz")
            )
        cases.append(Case(f"g{i}", images, target=CLASSES[i % 2], mask=mask))
    manifest = Manifest("glioma", "classification", GLIOMA, cases, classes=CLASSES)
    return save_manifest(manifest, folder / "manifest.json")


def test_grading_cohort_writes_predictions(grade_checkpoint, tmp_path):
    manifest = glioma_manifest(tmp_path)
    out = tmp_path / "grades"
    result = predict_cohort(grade_checkpoint, manifest, out, progress=False)
    assert result.exit_code == 0
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "case_id",
        "prob_low",
        "prob_high",
        "predicted",
        "temperature",
        "modalities_used",
        "top_slices_T1",
        "top_slices_FLAIR",
    ]
    assert [r["case_id"] for r in rows] == ["g0", "g1", "g2"]
    for r in rows:
        p = [float(r["prob_low"]), float(r["prob_high"])]
        assert sum(p) == pytest.approx(1, abs=1e-5) and r["predicted"] == CLASSES[int(np.argmax(p))]
        assert all(0 <= int(i) < 10 for i in r["top_slices_FLAIR"].split(";"))
    assert rows[2]["modalities_used"] == "FLAIR" and rows[2]["top_slices_T1"] == ""
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["classes"] == CLASSES and doc["cases"][0]["modalities_used"] == GLIOMA
    assert len(doc["cases"][0]["top_slices"]["T1"]) == 3
    again = predict_cohort(grade_checkpoint, manifest, out, skip_existing=True, progress=False)
    assert {r["status"] for r in again.rows} == {"skipped"}
    assert json.loads((out / "predictions.json").read_text())["cases"] == doc["cases"]


def test_discovery_of_files_folders_and_manifests(tmp_path):
    g = geometry("identity")
    image = body_ct(g)
    for name in ("b_0000.nii.gz", "b_0001.nii.gz", "a_0000.nii.gz", "a_0001.nii.gz"):
        write_image(image, tmp_path / "nnunet" / name)
    cases = discover_cases(tmp_path / "nnunet", ["T1", "T2"])
    assert [(c.id, len(c.sources)) for c in cases] == [("a", 2), ("b", 2)]
    assert [c.id for c in discover_cases(tmp_path / "nnunet" / "a_0001.nii.gz", ["CT"])] == [
        "a_0001"
    ]
    write_image(image, tmp_path / "dicom")
    assert [c.id for c in discover_cases(tmp_path / "dicom", ["CT"])] == ["dicom"]
    one = discover_cases(next((tmp_path / "dicom").iterdir()), ["CT"])
    assert one[0].id == "dicom" and one[0].sources == tmp_path / "dicom"
    write_image(image, tmp_path / "mixed" / "x.nii.gz")
    write_image(image, tmp_path / "mixed" / "x.nrrd")
    with pytest.raises(VolsegError, match="case ids"):
        discover_cases(tmp_path / "mixed", ["CT"])
    (tmp_path / "mixed" / "x.nrrd").unlink()
    (tmp_path / "mixed" / "pred").mkdir()
    cases = discover_cases(tmp_path / "mixed", ["CT"], exclude=[tmp_path / "mixed" / "pred"])
    assert [c.id for c in cases] == ["x"]
    with pytest.raises(VolsegError, match="no such file"):
        discover_cases(tmp_path / "missing", ["CT"])
    manifest = glioma_manifest(tmp_path / "glioma")
    cases = discover_cases(manifest, ["T1", "FLAIR"])
    assert [c.id for c in cases] == ["g0", "g1", "g2"] and cases[2].sources[0] is None
    assert cases[0].mask is not None and cases[1].mask is None
    with pytest.raises(VolsegError, match="none of the model"):
        discover_cases(manifest, ["CT"])


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli(["--help"])
    text = capsys.readouterr().out
    for option in (
        "--model",
        "--input",
        "--output",
        "--format",
        "--save-probs",
        "--skip-existing",
        "--roi-slices",
        "--overlap",
        "--sw-batch-size",
        "--blend",
        "--naive-window",
        "--chunk",
        "--tta",
        "--keep-largest",
        "--top-slices",
        "--device",
        "--stitch-device",
        "--amp",
        "--quiet",
        "--verbose",
        "examples:",
        "torchrun",
    ):
        assert option in text, option


def test_torchrun_shards_cases_and_merges_timings(seg_checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        write_image(body_ct(geometry("oblique"), i), folder / f"case{i}.nii.gz")
    (folder / "bad.nii.gz").write_bytes(b"nope")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=0",
            "--rdzv-backend=c10d",
            "--rdzv-endpoint=localhost:0",
            str(ROOT / "tests/inference/_dist_predict.py"),
            "--model",
            str(seg_checkpoint),
            "--input",
            str(folder),
            "--output",
            str(out),
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, proc.stderr  # the bad case fails the run
    table = timings(out)
    assert list(table) == ["bad", "case0", "case1", "case2"]
    assert table["bad"]["status"] == "failed"
    assert all(table[f"case{i}"]["status"] == "ok" for i in range(3))
    assert sorted(p.name for p in out.iterdir()) == [
        "case0.nii.gz",
        "case1.nii.gz",
        "case2.nii.gz",
        "timings.csv",
    ]
