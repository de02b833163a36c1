"""DICOM-SEG output: segments, masks and frame positions read back against the source series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import rotation
from volseg.errors import VolsegError
from volseg.io import Geometry, Image, read_image, write_image

hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

from volseg.io.dicom_seg import write_dicom_seg  # noqa: E402

# Oblique and anisotropic; x and y point to the patient's right and anterior (RAS-like
# storage as many converters write it, seen from LPS).
OBLIQUE = Geometry((12, 10, 6), (0.7, 0.8, 2.5), (40.0, -12.5, 90.0), rotation(8, -12, 25))
FLIPPED = Geometry((12, 10, 6), (0.9, 0.9, 3.0), (90.0, 126.0, -72.0), np.diag([-1.0, -1, 1]))
NAMES = {0: "background", 1: "liver", 4: "left kidney", 7: "oedema"}  # 7 never predicted


def write_ct_series(folder: Path, image: Image) -> list[Path]:
    """A CT series as scanners write it: one file per slice, in shuffled file-name order."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    g = image.geometry
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    order = np.random.default_rng(0).permutation(g.shape[2])
    paths = []
    for k in range(g.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Test^Patient", "P1"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20240101", ""
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in g.index_to_physical(np.array([0, 0, k]))]
        ds.ImageOrientationPatient = [float(v) for v in (*g.direction[:, 0], *g.direction[:, 1])]
        ds.PixelSpacing = [float(g.spacing[1]), float(g.spacing[0])]  # between rows, columns
        ds.SliceThickness = float(g.spacing[2])
        ds.Rows, ds.Columns = g.shape[1], g.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(image.array[:, :, k].T.astype(np.int16)).tobytes()
        path = folder / f"IM{order[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def blobs(shape: tuple[int, int, int]) -> np.ndarray:
    """Labels 1 and 4 in asymmetric boxes, so any flip or transpose would show."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[1:5, 2:9, 0:3] = 1
    labels[7:11, 1:4, 2:6] = 4
    labels[8, 8, 5] = 4
    return labels


def source_slices(folder: Path, geometry: Geometry) -> dict[str, tuple[int, object]]:
    """SOP Instance UID -> (slice index k on the grid, header) for each source file."""
    found = {}
    for path in folder.iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        offset = np.asarray(ds.ImagePositionPatient, dtype=float) - geometry.origin
        k = (np.linalg.inv(geometry.direction * geometry.spacing) @ offset)[2]
        found[ds.SOPInstanceUID] = (int(round(k)), ds)
    return found


def check_seg(seg_path: Path, series: Path, labels: np.ndarray, names: dict[int, str]) -> None:
    """Segments, masks, frame positions and references of a SEG against its source series."""
    image = read_image(series)
    sources = source_slices(series, image.geometry)
    seg = hd.seg.segread(seg_path)
    values = [v for v in sorted(names) if v != 0]
    assert seg.SegmentationType == "BINARY"
    assert seg.number_of_segments == len(values)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [names[v] for v in values]
    assert [s.SegmentDescription for s in seg.SegmentSequence] == [
        f"label value {v}" for v in values
    ]
    first = next(iter(sources.values()))[1]
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    if "FrameOfReferenceUID" in first:
        assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    else:  # a new one (volseg warns)
        assert seg.FrameOfReferenceUID and seg.FrameOfReferenceUID != seg.StudyInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == set(
        sources
    )
    # every frame sits on the slice it references
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = item.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(position, sources[uid][1].ImagePositionPatient, atol=1e-4)
    # each segment's mask is (labels == value), slice by slice
    uids = list(sources)
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=list(range(1, len(values) + 1)),
        assert_missing_frames_are_empty=True,
    )  # (slices, rows, columns, segments)
    for n, uid in enumerate(uids):
        k = sources[uid][0]
        for s, value in enumerate(values):
            np.testing.assert_array_equal(masks[n, :, :, s], labels[:, :, k].T == value)


@pytest.mark.parametrize("geometry", [OBLIQUE, FLIPPED], ids=["oblique", "flipped"])
def test_seg_round_trip_matches_labels_and_source_slices(tmp_path, geometry):
    series = tmp_path / "series"
    write_ct_series(series, Image(np.full(geometry.shape, 40, np.int16), geometry))
    image = read_image(series)
    assert image.geometry.matches(geometry)
    labels = blobs(geometry.shape)
    out = write_dicom_seg(
        image.with_array(labels), series, tmp_path / "case.dcm", label_names=NAMES
    )
    assert out == tmp_path / "case.dcm" and not list(tmp_path.glob(".tmp-*"))
    check_seg(out, series, labels, NAMES)
    seg = hd.seg.segread(out)
    kidney, oedema = seg.SegmentSequence[1], seg.SegmentSequence[2]
    assert kidney.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Kidney"
    assert kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"
    assert oedema.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Edema"
    algorithm = kidney.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "volseg"
    assert seg.Manufacturer == "volseg"


def test_seg_over_volseg_written_series_and_slice_list(tmp_path):
    """volseg's own DICOM writer stores secondary captures (no Pixel Spacing tag); a
    left-handed grid is stored slice-reversed. Slice files may be passed instead of a folder."""
    geometry = Geometry((12, 10, 6), (1.1, 0.7, 4.0), (3.0, 2.0, 1.0), np.diag([1.0, 1, -1]))
    write_image(Image(np.zeros(geometry.shape, np.int16), geometry), tmp_path / "series")
    image = read_image(tmp_path / "series")
    labels = blobs(image.shape)
    files = sorted((tmp_path / "series").iterdir())
    out = write_dicom_seg(image.with_array(labels), files, tmp_path / "seg.dcm")
    check_seg(out, tmp_path / "series", labels, {1: "label 1", 4: "label 4"})


def test_seg_of_an_empty_prediction_keeps_every_segment(tmp_path):
    """No foreground at all: still one segment per label (highdicom keeps the empty frames)."""
    series = tmp_path / "series"
    write_ct_series(series, Image(np.zeros(FLIPPED.shape, np.int16), FLIPPED))
    labels = np.zeros(FLIPPED.shape, np.uint8)
    out = write_dicom_seg(Image(labels, FLIPPED), series, tmp_path / "seg.dcm", label_names=NAMES)
    check_seg(out, series, labels, NAMES)
    with pytest.raises(VolsegError, match="no foreground label"):
        write_dicom_seg(Image(labels, FLIPPED), series, tmp_path / "none.dcm")


def test_seg_refuses_labels_off_the_series_grid(tmp_path):
    series = tmp_path / "series"
    write_ct_series(series, Image(np.zeros(OBLIQUE.shape, np.int16), OBLIQUE))
    moved = Geometry(OBLIQUE.shape, OBLIQUE.spacing, OBLIQUE.origin + 1.0, OBLIQUE.direction)
    with pytest.raises(VolsegError, match="does not lie on the label map's voxel grid"):
        write_dicom_seg(Image(blobs(OBLIQUE.shape), moved), series, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()
