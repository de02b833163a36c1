"""The source slices of a DICOM-SEG: each slice's header placed on the label map's grid, and
completed where the series lacks what a Segmentation copies from it.

Research pipelines, anonymisers and converters (SimpleITK's slice writer among them) drop
optional (type 2 and 3) tags that highdicom reads from the first source slice. The headers are
read into memory and completed there (the user's files are never touched):

- Patient Name / ID / Birth Date / Sex, Study ID / Date / Time, Accession Number and Referring
  Physician: empty, as the standard allows for these type-2 attributes;
- Slice Thickness: the measured spacing between the slices (on the label map's grid);
- Pixel Spacing: the grid's spacing along the slice's row and column directions;
- Frame of Reference UID: the one other slices hold, or a new UID for the whole series with one
  warning naming the series (the SEG still references every source slice by SOP Instance UID).

What no value can stand in for (Study, Series and SOP Instance UIDs, SOP Class UID: the links
from the SEG to its source) fails in one line naming the file and the tag.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from volseg.errors import VolsegError
from volseg.io.image import Geometry

log = logging.getLogger(__name__)

# Type-2 attributes of the Patient and General Study modules that highdicom copies from the
# first source slice; absent ones become empty (zero-length), which the standard allows.
EMPTY_IF_ABSENT = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate",
    "StudyTime", "AccessionNumber", "ReferringPhysicianName",
)  # fmt: skip
# The SEG's links to its source: nothing can stand in for them.
REQUIRED = {
    "StudyInstanceUID": "(0020,000D) Study Instance UID",
    "SeriesInstanceUID": "(0020,000E) Series Instance UID",
    "SOPInstanceUID": "(0008,0018) SOP Instance UID",
    "SOPClassUID": "(0008,0016) SOP Class UID",
}


@dataclass(frozen=True)
class SourceSlice:
    """One slice of the source series and where its pixels lie on the label map's grid.

    Attributes:
        path: the DICOM file.
        dataset: its header (pixel data not loaded), completed in memory.
        index: ``(rows, columns, 3)`` voxel indices of the frame's pixels on the grid.
    """

    path: Path
    dataset: Any
    index: np.ndarray


def source_slices(
    series: str | Path | Sequence[str | Path], geometry: Geometry
) -> list[SourceSlice]:
    """The slices of a single-frame DICOM series, each placed on ``geometry``'s voxel grid.

    Files that are not DICOM images (no Image Position) are skipped. Slices come back in the
    order of their voxel index along the grid axis they cut, their headers completed as the
    module docstring says.

    Raises:
        VolsegError: no slices, several series, a multi-frame file, a slice off the grid,
            slices that do not cover the grid exactly once, or a required UID missing.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(series) if isinstance(series, (str, Path)) else None
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder else list(series)
    where = folder or (Path(files[0]).parent if files else Path("."))
    found = []
    for file in map(Path, files):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, OSError):
            continue
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            found.append((file, ds))
    if not found:
        raise VolsegError(f"{where}: no DICOM image slices found for the DICOM-SEG's source")
    for file, ds in found:
        _require_links(ds, file)
    uids = sorted({str(ds.SeriesInstanceUID) for _, ds in found})
    if len(uids) > 1:
        raise VolsegError(f"{where}: holds {len(uids)} DICOM series; put each in its own folder")
    slices = [SourceSlice(file, ds, _frame_index(ds, geometry, file)) for file, ds in found]
    cut = _check_cover(slices, geometry, where)
    _complete(slices, float(geometry.spacing[cut]), where)
    return sorted(slices, key=lambda s: tuple(s.index[0, 0]))


def pixel_spacing(ds: Any) -> tuple[float, float]:
    """(row, column) spacing in mm: Pixel Spacing, or what secondary captures hold instead.

    GDCM (SimpleITK, and so volseg's own DICOM writer) stores Nominal Scanned Pixel Spacing in
    secondary-capture files.

    Raises:
        AttributeError: none of them present.
    """
    for keyword in ("PixelSpacing", "NominalScannedPixelSpacing", "ImagerPixelSpacing"):
        if keyword in ds:
            dr, dc = (float(v) for v in ds.get(keyword))
            return dr, dc
    raise AttributeError("no Pixel Spacing")


def _require_links(ds: Any, file: Path) -> None:
    for keyword, tag in REQUIRED.items():
        if not str(ds.get(keyword, "") or "").strip():
            raise VolsegError(
                f"{file}: no {tag}, which a DICOM-SEG needs to reference its source; add it "
                "to the series (e.g. with pydicom) or predict with --format nii.gz"
            )


def _complete(slices: list[SourceSlice], thickness: float, where: Path) -> None:
    """Fill in, in memory, the optional tags highdicom copies (see the module docstring)."""
    frames = {str(s.dataset.FrameOfReferenceUID) for s in slices if s.dataset.get(
        "FrameOfReferenceUID")}  # fmt: skip
    if len(frames) > 1:
        raise VolsegError(
            f"{where}: its slices hold {len(frames)} Frame of Reference UIDs (0020,0052); "
            "a series has one (export the series again)"
        )
    if frames:
        frame = frames.pop()
    else:
        from pydicom.uid import generate_uid

        frame = generate_uid()
        log.warning(
            "warning: %s: the series has no Frame of Reference UID (0020,0052); its DICOM-SEG "
            "gets a new one and references every slice by SOP Instance UID",
            where,
        )
    for s in slices:
        ds = s.dataset
        for keyword in EMPTY_IF_ABSENT:
            if keyword not in ds:
                setattr(ds, keyword, "")
        if not ds.get("SliceThickness"):
            ds.SliceThickness = round(thickness, 6)
        if not ds.get("FrameOfReferenceUID"):
            ds.FrameOfReferenceUID = frame


def _frame_index(ds: Any, geometry: Geometry, file: Path) -> np.ndarray:
    """Voxel indices ``(rows, columns, 3)`` of a slice's pixels on ``geometry``'s grid.

    DICOM places pixel (row r, column c) at ``IPP + c * dc * row_dir + r * dr * col_dir``
    (IOP = row_dir, col_dir; PixelSpacing = dr, dc). Mapped through the grid's inverse affine,
    the start and both steps must be whole voxels, each step one voxel along its own axis.
    A slice without any pixel spacing tag takes the grid's spacing along its row and column
    directions (the check below still holds it to the grid); highdicom then finds it as Pixel
    Spacing, the only keyword it reads.
    """
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise VolsegError(f"{file}: multi-frame DICOM sources are not supported for DICOM-SEG")
    try:
        position = np.array(ds.ImagePositionPatient, dtype=np.float64)
        orientation = np.array(ds.ImageOrientationPatient, dtype=np.float64)
        rows, columns = int(ds.Rows), int(ds.Columns)
        try:
            dr, dc = pixel_spacing(ds)
        except AttributeError:
            dr = _grid_spacing(orientation[3:], geometry)
            dc = _grid_spacing(orientation[:3], geometry)
        if "PixelSpacing" not in ds:
            ds.PixelSpacing = [dr, dc]
    except (AttributeError, TypeError, ValueError) as e:
        raise VolsegError(f"{file}: slice geometry tags missing or malformed ({e})") from None
    to_index = np.linalg.inv(geometry.direction * geometry.spacing[None, :])
    start = to_index @ (position - geometry.origin)
    step_c = to_index @ (orientation[:3] * dc)
    step_r = to_index @ (orientation[3:] * dr)
    exact = np.round(np.stack([start, step_c, step_r]))
    axes = [int(np.argmax(np.abs(exact[1]))), int(np.argmax(np.abs(exact[2])))]
    steps_ok = all(np.abs(exact[i]).sum() == 1 for i in (1, 2)) and axes[0] != axes[1]
    if not steps_ok or not np.allclose(exact, [start, step_c, step_r], atol=0.1):
        raise VolsegError(
            f"{file}: slice does not lie on the label map's voxel grid (position "
            f"{position.round(3).tolist()}); write the labels on the series as read"
        )
    r = np.arange(rows)[:, None, None]
    c = np.arange(columns)[None, :, None]
    index = (exact[0] + c * exact[1] + r * exact[2]).astype(np.int64)
    if index.min() < 0 or np.any(index.max(axis=(0, 1)) >= geometry.shape):
        raise VolsegError(f"{file}: slice reaches outside the label map's grid {geometry.shape}")
    return index


def _grid_spacing(direction: np.ndarray, geometry: Geometry) -> float:
    """The grid's spacing (mm) along the grid axis nearest to ``direction``."""
    return float(geometry.spacing[int(np.argmax(np.abs(geometry.direction.T @ direction)))])


def _check_cover(slices: list[SourceSlice], geometry: Geometry, where: Path) -> int:
    """Every slice cuts the same axis in the same orientation, and they hold each voxel once.

    Each slice is a whole plane of unit steps inside the grid (:func:`_frame_index`), so one
    slice per index along the cut axis covers the grid exactly.

    Returns:
        The grid axis the slices cut.
    """
    starts = np.array([s.index[0, 0] for s in slices])
    steps = {(*(s.index[0, 1] - s.index[0, 0]), *(s.index[1, 0] - s.index[0, 0])) for s in slices}
    moving = np.flatnonzero(np.ptp(starts, axis=0))
    cut = int(moving[0]) if len(moving) == 1 else 2
    planes = sorted(int(start[cut]) for start in starts)
    pixels = sum(s.index.shape[0] * s.index.shape[1] for s in slices)
    whole = len(steps) == 1 and len(moving) <= 1 and pixels == int(np.prod(geometry.shape))
    if not whole or planes != list(range(geometry.shape[cut])):
        raise VolsegError(
            f"{where}: its {len(slices)} slices do not cover the label map's grid "
            f"{geometry.shape} once each (missing or repeated slices?)"
        )
    return cut
