"""`volseg predict --format dicom-seg`: the SEG equals the same prediction written as NIfTI."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.inference.conftest import LABELS, body_ct, write_segmentation_checkpoint
from tests.io.test_dicom_seg import OBLIQUE, check_seg, write_ct_series
from volseg.errors import VolsegError
from volseg.inference import predict_cohort
from volseg.io import Geometry, read_image, write_image

pytest.importorskip("highdicom")


def run_predict(*args: object) -> subprocess.CompletedProcess:
    """``volseg predict`` as a user types it, on one thread as this module's tests run (the
    same sums, so the same argmax)."""
    return subprocess.run(
        [sys.executable, "-m", "volseg", "predict", *map(str, args), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.parametrize("how", ["cohort", pytest.param("cli", marks=pytest.mark.slow)])
def test_predict_writes_dicom_seg_equal_to_nifti_prediction(tmp_path, how):
    """`volseg predict --format dicom-seg` (through predict_cohort, or as a user types it:
    ~15 s of imports in a fresh process) against the same prediction written as NIfTI."""
    checkpoint = write_segmentation_checkpoint(tmp_path / "run" / "best.pt")
    geometry = Geometry((20, 17, 6), OBLIQUE.spacing, OBLIQUE.origin, OBLIQUE.direction)
    series = tmp_path / "ct"
    write_ct_series(series, body_ct(geometry, seed=3))
    seg = tmp_path / "seg"
    if how == "cli":
        done = run_predict("--model", checkpoint, "--input", series, "--output", seg, "--format",
                           "dicom-seg", "--save-probs")  # fmt: skip
        assert done.returncode == 0, done.stderr
    else:
        predict_cohort(
            checkpoint, series, seg, output_format="dicom-seg", save_probs=True, progress=False
        )
    assert sorted(os.listdir(seg)) == ["ct.dcm", "ct_probs.nii.gz", "timings.csv"]
    predict_cohort(checkpoint, series, tmp_path / "nii", progress=False)  # one thread, as above
    labels = read_image(tmp_path / "nii" / "ct.nii.gz").array
    assert set(np.unique(labels)) > {0}  # something to compare beyond background
    check_seg(seg / "ct.dcm", series, labels, LABELS)


def test_predict_refuses_dicom_seg_for_image_file_input(tmp_path):
    """An image file fails in one line before the model loads; a folder of them before any
    case is predicted."""
    checkpoint = write_segmentation_checkpoint(tmp_path / "run" / "best.pt")
    image = body_ct(Geometry((20, 17, 6), OBLIQUE.spacing, OBLIQUE.origin, OBLIQUE.direction))
    write_image(image, tmp_path / "in" / "ct.nii.gz")
    refused = run_predict("--model", checkpoint, "--input", tmp_path / "in" / "ct.nii.gz",
                          "--output", tmp_path / "out", "--format", "dicom-seg")  # fmt: skip
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (
        f"error: --format dicom-seg needs DICOM series input; {tmp_path / 'in' / 'ct.nii.gz'} "
        "is a NIfTI file (use --format nii.gz)\n"
    )
    with pytest.raises(VolsegError, match=r"ct.nii.gz is a NIfTI file"):
        predict_cohort(checkpoint, tmp_path / "in", tmp_path / "out", output_format="dicom-seg")
    assert not (tmp_path / "out").exists()
