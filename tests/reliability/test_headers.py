"""Headers that lie (issue 14, findings 7 and 8): refused from the header, in one line each,
before a voxel is read: a tiny file claiming 2000^3 voxels, absurd voxel sizes, and a DICOM
series with a slice missing (which ITK reads with a uniform, wrong spacing)."""

from __future__ import annotations

import gzip
import json
import shutil

import nibabel as nib
import numpy as np

from tests.reliability.conftest import changed, error_line, snapshot, volseg
from volseg.io import Geometry, Image, write_image


def lying_nifti(path, *, shape=(4, 4, 4), pixdim=(1.0, 1.0, 1.0)):
    """A gzipped NIfTI whose header claims ``shape`` and ``pixdim`` but holds 4^3 int16 voxels."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(shape)
    header["pixdim"][1:4] = pixdim
    header["vox_offset"] = 352
    data = header.binaryblock + b"\0" * 4 + np.zeros(64, np.int16).tobytes()
    path.write_bytes(gzip.compress(data))
    return path


def dicom_series(folder, *, drop: int | None = None):
    """A 6 x 5 x 8 DICOM series with 2 mm between slices; ``drop`` removes that slice file."""
    geometry = Geometry((6, 5, 8), (0.8, 0.8, 2.0), (10.0, 20.0, 30.0))
    write_image(Image(np.arange(240, dtype=np.int16).reshape(6, 5, 8), geometry), folder)
    if drop is not None:
        (folder / f"slice_{drop:04d}.dcm").unlink()
    return folder


def test_check_refuses_lying_headers_and_a_gappy_series(tmp_path):
    """One `volseg check` lists every bad file from its header; nothing is written."""
    data = tmp_path / "data"
    data.mkdir()
    images = {
        "huge": lying_nifti(data / "huge.nii.gz", shape=(2000, 2000, 2000)),
        "tiny": lying_nifti(data / "tiny.nii.gz", pixdim=(1e-30, 1, 1)),
        "vast": lying_nifti(data / "vast.nii.gz", pixdim=(1e30, 1, 1)),
        "zero": lying_nifti(data / "zero.nii.gz", pixdim=(0, 1, 1)),
        "nan": lying_nifti(data / "nan.nii.gz", pixdim=(float("nan"), 1, 1)),
        "gap": dicom_series(data / "gap", drop=4),
        "whole": dicom_series(data / "whole"),
    }
    manifest = data / "manifest.json"
    doc = {
        "format": "volseg-manifest/1",
        "name": "lies",
        "task": "segmentation",
        "modalities": ["CT"],
        "labels": {"0": "background", "1": "organ"},
        "cases": [],
        "test": [{"id": k, "images": {"CT": v.name}} for k, v in images.items()],
    }
    manifest.write_text(json.dumps(doc))
    before = snapshot(tmp_path)
    result = volseg("check", manifest, timeout=60)  # the 16 GB claim must not be allocated
    assert result.returncode == 2, result.stderr
    assert error_line(result) == f"error: 6 problems in {manifest}; fix them and re-run"
    problems = [line for line in result.stdout.splitlines() if line.startswith("  problem:")]
    assert len(problems) == 6, result.stdout
    found = "\n".join(problems)
    assert (
        f"{images['huge']}: header claims 2000 x 2000 x 2000 voxels (16.0 GB) but the file "
        f"({images['huge'].stat().st_size} bytes) holds at most " in found
    )
    for name, shown in [("tiny", "1e-30"), ("vast", "1e+30"), ("zero", "0"), ("nan", "nan")]:
        assert f"{images[name]}: voxel spacing ({shown}, 1, 1) mm is not plausible" in found
    assert (
        f"{images['gap']}: slices 4-5 are 4.00 mm apart, the others 2.00 mm: a slice is missing;"
        in found
    )
    assert "whole" not in found
    assert "WARNING" not in result.stderr  # ITK's own non-uniform-sampling warning is not shown
    assert changed(before, tmp_path) == []


def test_predict_refuses_a_series_with_a_missing_slice(seg_model, tmp_path):
    """The same refusal through `volseg predict`: the case fails by name, no output is written."""
    series = dicom_series(tmp_path / "series", drop=2)
    out = tmp_path / "pred"
    before = snapshot(tmp_path)
    result = volseg("predict", "--model", seg_model, "--input", series, "--output", out, "--quiet")
    assert result.returncode == 1, result.stderr
    assert (
        f"  failed series: {series}: slices 2-3 are 4.00 mm apart, the others 2.00 mm: a slice "
        "is missing; volseg needs evenly spaced slices" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["timings.csv"]
    assert changed(before, tmp_path, inside=out) == []
    shutil.rmtree(out)
