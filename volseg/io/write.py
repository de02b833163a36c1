"""Write images with exactly the geometry they carry (or that of a reference image).

The format follows the extension (see :data:`volseg.io.names.IMAGE_FORMATS`; a path without one
is a DICOM series folder). Every write is atomic: the file appears complete or not at all.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from volseg.errors import VolsegError
from volseg.io.atomic import atomic_path
from volseg.io.image import Geometry, Image
from volseg.io.read import image_format

# Detached-header formats write two files; the header is moved last so it never points at a
# data file that is not there yet.
_DETACHED = (".mhd", ".nhdr")


def write_like(
    array: np.ndarray,
    reference: Image | Geometry,
    path: str | Path,
    *,
    label: bool = False,
) -> Path:
    """Write ``array`` with the geometry of ``reference`` (and its NIfTI header, if it has one).

    Args:
        array: ``(X, Y, Z)`` or ``(C, X, Y, Z)`` with the reference's spatial shape.
        reference: an image read by :func:`volseg.io.read_image`, or a bare geometry.
        path: output file; the format follows the extension.
        label: store as a label map (uint8, or uint16 above 255).

    Returns:
        The path written.

    Raises:
        ValueError: if the array's spatial shape differs from the reference's.
    """
    array = np.asarray(array)
    geometry = reference.geometry if isinstance(reference, Image) else reference
    header = reference.header if isinstance(reference, Image) else None
    if tuple(array.shape[-3:]) != geometry.shape or array.ndim not in (3, 4):
        raise ValueError(
            f"array of shape {array.shape} does not fit the reference grid {geometry.shape}"
        )
    return write_image(Image(array, geometry, header=header), path, label=label)


def write_image(image: Image, path: str | Path, *, label: bool = False) -> Path:
    """Write ``image`` to ``path`` atomically, in the format its extension names.

    Args:
        image: the image; its geometry is written exactly (NIfTI keeps float32 header
            precision; a NIfTI header carried by ``image`` keeps its qform/sform codes).
        path: ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``, ``.mha``/``.mhd``, or a folder name
            without extension for a DICOM series.
        label: store a label map as uint8 (uint16 when a value exceeds 255).

    Returns:
        The path written.

    Raises:
        VolsegError: unknown extension, or a label map with negative, fractional or too
            large values.
    """
    path = Path(path)
    fmt = image_format(path)
    array = _storage_array(image.array, label, path)
    image = Image(array, image.geometry, image.path, image.header)
    if fmt == "nifti":
        with atomic_path(path) as tmp:
            nib.save(_nifti(image), str(tmp))
    elif fmt == "dicom":
        with atomic_path(path) as tmp:
            _write_dicom(image, tmp)
    elif path.name.lower().endswith(_DETACHED):
        _write_detached(_to_sitk(image), path)
    else:
        with atomic_path(path) as tmp:
            sitk.WriteImage(_to_sitk(image), str(tmp), useCompression=True)
    return path


def _storage_array(array: np.ndarray, label: bool, path: Path) -> np.ndarray:
    array = np.asarray(array)
    if label:
        if array.size and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise VolsegError(f"{path}: label map holds NaN/Inf values")
        low, high = (array.min(), array.max()) if array.size else (0, 0)
        if low < 0 or high > np.iinfo(np.uint16).max:
            raise VolsegError(f"{path}: label values must lie in 0..65535, got {low}..{high}")
        if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
            raise VolsegError(f"{path}: label map holds fractional values; round or argmax it")
        return array.astype(np.uint8 if high <= 255 else np.uint16)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        info = np.iinfo(np.int32)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise VolsegError(f"{path}: 64-bit integers out of int32 range cannot be stored")
        return array.astype(np.int32)
    return array


def _nifti(image: Image) -> nib.Nifti1Image:
    array = np.moveaxis(image.array, 0, -1) if image.array.ndim == 4 else image.array
    affine = image.geometry.affine
    header = image.header if isinstance(image.header, nib.Nifti1Header) else None
    if header is not None and Geometry.from_affine(image.shape, header.get_best_affine()).matches(
        image.geometry, atol=1e-6
    ):
        # The reference's own header: keep its qform and sform (and their codes) as stored,
        # so the output opens exactly where the input does in every viewer.
        header = header.copy()
        header.set_data_dtype(array.dtype)
        out = nib.Nifti1Image(array, header.get_best_affine(), header=header)
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
        out.set_qform(qform, int(qcode))
        out.set_sform(sform, int(scode))
    else:
        out = nib.Nifti1Image(array, affine)
        out.set_qform(affine, code=1)
        out.set_sform(affine, code=1)
        out.header.set_xyzt_units("mm", "sec")
    out.header.set_slope_inter(1.0, 0.0)
    out.header["cal_min"] = 0
    out.header["cal_max"] = 0
    return out


def _to_sitk(image: Image) -> sitk.Image:
    if image.array.ndim == 4:
        img = sitk.GetImageFromArray(image.array.transpose(3, 2, 1, 0), isVector=True)
    else:
        img = sitk.GetImageFromArray(image.array.transpose(2, 1, 0))
    img.SetSpacing([float(s) for s in image.spacing])
    img.SetOrigin([float(o) for o in image.origin])
    img.SetDirection([float(d) for d in image.direction.ravel()])
    return img


def _write_detached(img: sitk.Image, path: Path) -> None:
    folder = path.parent / f".tmp-{uuid.uuid4().hex[:8]}-{path.name}.d"
    folder.mkdir(parents=True)
    try:
        sitk.WriteImage(img, str(folder / path.name), useCompression=True)
        for part in sorted(folder.iterdir(), key=lambda p: p.name == path.name):
            os.replace(part, path.parent / part.name)
    finally:
        for part in folder.iterdir():
            part.unlink()
        folder.rmdir()


def _write_dicom(image: Image, folder: Path) -> None:
    """One file per slice along the third axis, positions and orientation in the tags."""
    if image.array.ndim != 3:
        raise VolsegError(f"{folder}: a DICOM series holds one scalar volume, not {image.shape}")
    array, geometry = image.array, image.geometry
    normal = np.cross(geometry.direction[:, 0], geometry.direction[:, 1])
    if normal @ geometry.direction[:, 2] < 0:
        # DICOM orders slices along row x column; store a left-handed grid slice-reversed.
        # The voxels land at the same physical positions.
        array = array[:, :, ::-1]
        direction = geometry.direction.copy()
        direction[:, 2] *= -1
        origin = geometry.index_to_physical(np.array([0, 0, geometry.shape[2] - 1]))
        geometry = Geometry(geometry.shape, geometry.spacing, origin, direction)
    array, slope, intercept = _dicom_pixels(array, folder)
    volume = _to_sitk(Image(array, geometry))
    folder.mkdir(parents=True)
    study, series, frame = (f"2.25.{uuid.uuid4().int}" for _ in range(3))
    row, col = geometry.direction[:, 0], geometry.direction[:, 1]
    tags = {
        "0008|0060": "OT",
        "0008|0008": "DERIVED\\SECONDARY",
        "0010|0010": "volseg",
        "0010|0020": "volseg",
        "0020|000d": study,
        "0020|000e": series,
        "0020|0052": frame,
        "0020|0037": "\\".join(f"{v:.10g}" for v in (*row, *col)),
        "0018|0050": f"{geometry.spacing[2]:.10g}",
        "0018|0088": f"{geometry.spacing[2]:.10g}",
        "0028|1053": f"{slope:.10g}",
        "0028|1052": f"{intercept:.10g}",
    }
    if array.dtype == np.float64:
        tags.update({"0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1"})
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(geometry.shape[2]):
        plane = volume[:, :, k]
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        position = geometry.index_to_physical(np.array([0, 0, k]))
        plane.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in position))
        plane.SetMetaData("0020|0013", str(k + 1))
        plane.SetMetaData("0008|0018", f"2.25.{uuid.uuid4().int}")
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        writer.Execute(plane)


def _dicom_pixels(array: np.ndarray, folder: Path) -> tuple[np.ndarray, float, float]:
    """Pixels for GDCM plus the rescale slope/intercept DICOM stores them with.

    Integers in 16-bit range are stored as they are. Anything else is handed to GDCM as
    float64 with a slope that spreads the value range over the int16 codes: GDCM quantises
    (value - intercept) / slope, and readers apply the rescale back.
    """
    if array.dtype.kind in "iub":
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low >= -32768 and high <= 32767:
            return array.astype(np.int16), 1.0, 0.0
        if low >= 0 and high <= 65535:
            return array.astype(np.uint16), 1.0, 0.0
    low, high = float(array.min()), float(array.max())
    intercept = float(round((low + high) / 2))  # GDCM insists on an integral intercept
    slope = max(high - intercept, intercept - low) / 32000.0 or 1.0
    return array.astype(np.float64), float(f"{slope:.6g}"), intercept
