"""`volseg predict --format dicom-seg`: the SEG equals the same prediction written as NIfTI."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.inference.conftest import LABELS, body_ct, write_segmentation_checkpoint
from tests.io.test_dicom_seg import OBLIQUE, check_seg, write_ct_series
from tests.io.test_dicom_seg_missing_tags import write_sitk_series
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


@pytest.mark.parametrize("how", ["cohort", pytest.param("cli", marks=pytest.mark.slow)])
def test_predict_dicom_seg_over_a_simpleitk_series(tmp_path, caplog, how):
    """The issue's series: written slice by slice with SimpleITK, so no Frame of Reference UID
    and no Slice Thickness. The case succeeds with one warning line naming the series, and the
    SEG holds the NIfTI prediction on the right slices."""
    checkpoint = write_segmentation_checkpoint(tmp_path / "run" / "best.pt")
    geometry = Geometry((20, 17, 6), OBLIQUE.spacing, OBLIQUE.origin, OBLIQUE.direction)
    series = tmp_path / "series"
    write_sitk_series(series, body_ct(geometry, seed=3))
    seg = tmp_path / "seg"
    warning = (
        f"warning: {series}: the series has no Frame of Reference UID (0020,0052); its "
        "DICOM-SEG gets a new one and references every slice by SOP Instance UID"
    )
    if how == "cli":
        done = run_predict("--model", checkpoint, "--input", series, "--output", seg,
                           "--format", "dicom-seg")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr == f"{warning}\n"
    else:
        result = predict_cohort(checkpoint, series, seg, output_format="dicom-seg", progress=False)
        assert result.exit_code == 0 and result.count("ok") == 1
        assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [warning]
    predict_cohort(checkpoint, series, tmp_path / "nii", progress=False)
    labels = read_image(tmp_path / "nii" / "series.nii.gz").array
    assert set(np.unique(labels)) > {0}
    check_seg(seg / "series.dcm", series, labels, LABELS)


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
    # the Python API refuses the file itself up front too, before the checkpoint is read
    from volseg.inference.cases import check_request

    with pytest.raises(VolsegError, match=r"ct.nii.gz is a NIfTI file"):
        check_request([checkpoint], tmp_path / "in" / "ct.nii.gz", tmp_path / "o", "dicom-seg")


def test_predict_writes_exactly_the_seg_file_output_names(tmp_path):
    """`-o seg.dcm` for one DICOM series writes that file (a DICOM-SEG, --format implied), as
    `-o seg.nii.gz` writes a NIfTI file: no folder, no tables."""
    checkpoint = write_segmentation_checkpoint(tmp_path / "run" / "best.pt")
    geometry = Geometry((20, 17, 6), OBLIQUE.spacing, OBLIQUE.origin, OBLIQUE.direction)
    series = tmp_path / "ct"
    write_ct_series(series, body_ct(geometry, seed=3))
    out = tmp_path / "out"
    result = predict_cohort(checkpoint, series, out / "seg.dcm", save_probs=True, progress=False)
    assert result.exit_code == 0 and result.output == out / "seg.dcm"
    predict_cohort(checkpoint, series, out / "seg.nii.gz", progress=False)
    assert sorted(os.listdir(out)) == ["seg.dcm", "seg.nii.gz", "seg_probs.nii.gz"]
    check_seg(out / "seg.dcm", series, read_image(out / "seg.nii.gz").array, LABELS)
    again = predict_cohort(  # --format dicom-seg said too; a slice file as input
        checkpoint, sorted(series.iterdir())[0], out / "SEG2.DCM", output_format="dicom-seg",
        progress=False,
    )  # fmt: skip
    assert again.exit_code == 0
    assert (out / "SEG2.DCM").read_bytes()[128:132] == b"DICM"
    assert sorted(os.listdir(out)) == ["SEG2.DCM", "seg.dcm", "seg.nii.gz", "seg_probs.nii.gz"]
    kept = predict_cohort(checkpoint, series, out / "SEG2.DCM", skip_existing=True, progress=False)
    assert kept.count("skipped") == 1  # read back whole, in any letter case


@pytest.mark.parametrize(
    ("source", "output", "fmt", "message"),
    [
        (
            "ct.nii.gz",
            "out/seg.dcm",
            "nii.gz",
            "--output {out}/seg.dcm is a DICOM-SEG, which needs a DICOM series as --input; "
            "{tmp}/ct.nii.gz is an image file (name the output seg.nii.gz)",
        ),
        (
            "series",
            "out/seg.nii.gz",
            "dicom-seg",
            "--output {out}/seg.nii.gz: --format dicom-seg writes a DICOM file; name it seg.dcm, "
            "or pass an output folder",
        ),
        (
            "series",
            "series/seg.dcm",
            "nii.gz",
            "--output {tmp}/series/seg.dcm would become a slice of the series it segments "
            "({tmp}/series); write it outside that folder",
        ),
    ],
)
def test_a_seg_file_output_that_cannot_be_written_is_refused_before_torch(
    tmp_path, source, output, fmt, message
):
    """One line from the command a user types, before the model loads (no torch import), and
    nothing written."""
    checkpoint = write_segmentation_checkpoint(tmp_path / "run" / "best.pt")
    geometry = Geometry((8, 7, 3), OBLIQUE.spacing, OBLIQUE.origin, OBLIQUE.direction)
    write_image(body_ct(geometry), tmp_path / "ct.nii.gz")
    write_ct_series(tmp_path / "series", body_ct(geometry))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = (
        "import sys\nfrom volseg.cli.main import main\n"
        f"status = main(['predict', '--model', {str(checkpoint)!r}, '-i', "
        f"{str(tmp_path / source)!r}, '-o', {str(tmp_path / output)!r}, '--format', {fmt!r}])\n"
        "print(status, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == "2 False\n", done.stderr
    expected = message.format(out=tmp_path / "out", tmp=tmp_path)
    assert done.stderr == f"error: {expected}\n"
    with pytest.raises(VolsegError) as error:
        predict_cohort(checkpoint, tmp_path / source, tmp_path / output, output_format=fmt)
    assert str(error.value) == expected
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
