"""DICOM-SEG over the series users really have: optional tags absent, one at a time.

Each case is a tiny CT series (4 slices of 16 x 16) with one tag (or group) removed from every
slice; the SEG must read back with highdicom, frames on the right slices, and the user's files
untouched. Tags nothing can stand in for fail in one volseg line.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import rotation
from tests.io.test_dicom_seg import check_seg, write_ct_series
from volseg.errors import VolsegError
from volseg.io import Geometry, Image, read_image

hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

from volseg.io.dicom_seg import write_dicom_seg  # noqa: E402

TINY = Geometry((16, 16, 4), (0.8, 0.7, 2.5), (40.0, -12.5, 90.0), rotation(5, -7, 20))
NAMES = {0: "background", 1: "liver", 2: "spleen"}
PATIENT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")


def strip(folder: Path, *keywords: str) -> None:
    """Remove ``keywords`` from every slice of a test-made series."""
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        for keyword in keywords:
            delattr(ds, keyword)
        ds.save_as(path)


def tiny_labels(shape: tuple[int, int, int]) -> np.ndarray:
    """Foreground on slices 1 and 2 only (0 and 3 empty), two labels, asymmetric."""
    labels = np.zeros(shape, np.uint8)
    labels[2:7, 3:12, 1:3] = 1
    labels[9:14, 1:5, 2] = 2
    return labels


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def write_and_check(tmp_path: Path, series: Path) -> object:
    """The SEG of tiny_labels over ``series``, checked against it; the SEG dataset."""
    before = digest(series)
    image = read_image(series)
    labels = tiny_labels(image.shape)
    out = write_dicom_seg(image.with_array(labels), series, tmp_path / "seg.dcm", label_names=NAMES)
    assert digest(series) == before  # completed in memory, never on the user's files
    check_seg(out, series, labels, NAMES)
    seg = hd.seg.segread(out)
    # frames exist exactly for the slices where the mask is non-zero, each on its own slice
    by_uid = {}
    for path in series.iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        offset = np.asarray(ds.ImagePositionPatient, float) - image.geometry.origin
        inv = np.linalg.inv(image.geometry.direction * image.geometry.spacing)
        by_uid[ds.SOPInstanceUID] = int(round((inv @ offset)[2]))
    framed = {
        by_uid[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        for item in seg.PerFrameFunctionalGroupsSequence
    }
    assert framed == {1, 2}
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    np.testing.assert_allclose(measures.SliceThickness, image.geometry.spacing[2], atol=1e-6)
    return seg


@pytest.mark.parametrize(
    "removed",
    [
        ("SliceThickness",),
        ("FrameOfReferenceUID",),
        ("SeriesDescription", "StudyDescription"),
        PATIENT,
        ("PatientName",),
        ("InstanceNumber",),
        ("FrameOfReferenceUID", "SliceThickness", *PATIENT, "StudyID", "AccessionNumber"),
    ],
    ids=lambda r: "+".join(r) if len(r) < 4 else f"{r[0]}+{len(r) - 1}",
)
def test_seg_over_series_without_optional_tag(tmp_path, caplog, removed):
    series = tmp_path / "series"
    write_ct_series(series, Image(np.full(TINY.shape, 40, np.int16), TINY))
    if "SeriesDescription" in removed:  # the writer sets neither; give them, then remove
        for path in series.iterdir():
            ds = pydicom.dcmread(path)
            ds.SeriesDescription, ds.StudyDescription = "abdomen", "CT"
            ds.save_as(path)
    strip(series, *removed)
    with caplog.at_level(logging.WARNING):
        seg = write_and_check(tmp_path, series)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if "FrameOfReferenceUID" in removed:
        assert warnings == [
            f"warning: {series}: the series has no Frame of Reference UID (0020,0052); its "
            "DICOM-SEG gets a new one and references every slice by SOP Instance UID"
        ]
    else:
        assert warnings == []
    source = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    for keyword in PATIENT:  # copied where present, empty where absent
        assert str(seg.get(keyword)) == ("" if keyword in removed else str(source[keyword].value))


def test_seg_takes_pixel_spacing_from_the_grid(tmp_path):
    """Labels on the series' true grid (Python API) over slices without Pixel Spacing (which
    volseg refuses to read): frames take the grid's spacing and still land on their slices,
    checked against the same slices with the tag."""
    full, series = tmp_path / "full", tmp_path / "series"
    write_ct_series(full, Image(np.zeros(TINY.shape, np.int16), TINY))
    shutil.copytree(full, series)
    strip(series, "PixelSpacing")
    labels = tiny_labels(TINY.shape)
    out = write_dicom_seg(Image(labels, TINY), series, tmp_path / "seg.dcm", label_names=NAMES)
    check_seg(out, full, labels, NAMES)
    measures = hd.seg.segread(out).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    np.testing.assert_allclose(measures.PixelSpacing, [0.7, 0.8])  # between rows, columns


def test_seg_over_a_series_written_by_simpleitk(tmp_path, caplog):
    """The issue's series: SimpleITK's slice writer stores CT images without Frame of
    Reference UID and Slice Thickness."""
    series = tmp_path / "sitk"
    values = np.random.default_rng(1).integers(-100, 100, TINY.shape).astype(np.int16)
    write_sitk_series(series, Image(values, TINY))
    ds = pydicom.dcmread(next(series.iterdir()))
    assert "FrameOfReferenceUID" not in ds and "SliceThickness" not in ds
    image = read_image(series)
    assert image.geometry.matches(TINY) and np.array_equal(image.array, values)
    with caplog.at_level(logging.WARNING):
        write_and_check(tmp_path, series)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def write_sitk_series(folder: Path, image: Image) -> None:
    """A CT series as a SimpleITK user writes it slice by slice: positions, orientation, UIDs
    and rescale set by hand, nothing more."""
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    geometry = image.geometry
    volume = sitk.GetImageFromArray(np.ascontiguousarray(image.array.astype(np.int16).T))
    volume.SetSpacing([float(v) for v in geometry.spacing])
    volume.SetOrigin([float(v) for v in geometry.origin])
    volume.SetDirection([float(v) for v in geometry.direction.ravel()])
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    d = geometry.direction
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(geometry.shape[2]):
        piece = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0020|000d": study,
            "0020|000e": series,
            "0008|0018": pydicom.uid.generate_uid(),
            "0008|0060": "CT",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])),
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for key, value in tags.items():
            piece.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k}.dcm"))
        writer.Execute(piece)


@pytest.mark.parametrize(
    ("keyword", "tag"),
    [
        ("StudyInstanceUID", "(0020,000D) Study Instance UID"),
        ("SOPClassUID", "(0008,0016) SOP Class UID"),
    ],
)
def test_seg_refuses_in_one_line_when_a_link_to_the_source_is_missing(tmp_path, keyword, tag):
    series = tmp_path / "series"
    write_ct_series(series, Image(np.zeros(TINY.shape, np.int16), TINY))
    image = read_image(series)
    strip(series, keyword)
    with pytest.raises(VolsegError) as error:
        write_dicom_seg(image.with_array(tiny_labels(TINY.shape)), series, tmp_path / "seg.dcm")
    message = str(error.value)
    assert message.endswith(
        f": no {tag}, which a DICOM-SEG needs to reference its source; add it to the series "
        "(e.g. with pydicom) or predict with --format nii.gz"
    )
    assert message.startswith(str(series)) and "\n" not in message
    assert not (tmp_path / "seg.dcm").exists()


def test_seg_refuses_slices_of_several_frames_of_reference(tmp_path):
    series = tmp_path / "series"
    write_ct_series(series, Image(np.zeros(TINY.shape, np.int16), TINY))
    path = sorted(series.iterdir())[0]
    ds = pydicom.dcmread(path)
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    ds.save_as(path)
    image = read_image(series)
    with pytest.raises(VolsegError, match=r"hold 2 Frame of Reference UIDs \(0020,0052\)"):
        write_dicom_seg(image.with_array(tiny_labels(TINY.shape)), series, tmp_path / "seg.dcm")
