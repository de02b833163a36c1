"""Read NIfTI, NRRD, MetaImage and DICOM series into an :class:`Image` with full geometry.

NIfTI goes through nibabel (exact qform/sform handling, header kept for writing back);
NRRD, MetaImage and DICOM go through SimpleITK, which converts any stored space (LPS, RAS,
...) to LPS. Every failure a user's file can cause becomes a one-line :class:`VolsegError`
naming the file.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.openers import ImageOpener

from volseg.errors import VolsegError
from volseg.io.header_checks import check_data_size, check_slice_gaps, check_spacing
from volseg.io.image import Geometry, Image
from volseg.io.names import DICOM_SLICE, IMAGE_FORMATS, split_extension
from volseg.io.paths import input_path

SUPPORTED = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), DICOM (a folder)"


@dataclass(frozen=True)
class ImageInfo:
    """What a file holds, read from its header without loading the voxels (DICOM reads all).

    Args:
        path: the file or folder.
        geometry: spatial grid and its placement.
        channels: number of channels (1 for a scalar volume).
        dtype: voxel type as stored (after NIfTI scaling).
    """

    path: Path
    geometry: Geometry
    channels: int
    dtype: np.dtype


def image_format(path: str | Path) -> str:
    """The format name of ``path`` by extension ('dicom' for a folder).

    Raises:
        VolsegError: if the extension is not one volseg reads or writes.
    """
    path = Path(path)
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    extension = split_extension(name)[1]
    if extension:
        return IMAGE_FORMATS[extension]
    if name.endswith(DICOM_SLICE) or not Path(name).suffix:
        return "dicom"
    raise VolsegError(f"{path}: unknown image extension; volseg reads {SUPPORTED}")


def read_info(path: str | Path) -> ImageInfo:
    """Read the geometry, channel count and dtype of an image file or DICOM folder.

    Raises:
        VolsegError: missing, empty, unreadable or 2D file, not a regular file (a FIFO), a
            header whose voxels cannot fit in the file, or an implausible spacing.
    """
    path = _existing(path)
    fmt = image_format(path)
    if fmt == "nifti":
        img = _load_nifti(path)
        shape = _squeeze_shape(img.shape, path)
        channels = shape[3] if len(shape) == 4 else 1
        return ImageInfo(path, _nifti_geometry(img, shape, path), channels, img.get_data_dtype())
    if fmt == "dicom":
        image = read_image(path, check_finite=False)
        return ImageInfo(path, image.geometry, image.num_channels, image.array.dtype)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise VolsegError(f"{path}: cannot read as {fmt} ({_first_line(e)})") from None
    dim = reader.GetDimension()
    size = reader.GetSize()
    _check_3d(size[:3] if dim >= 3 else size, dim, path)
    channels = reader.GetNumberOfComponents() * (size[3] if dim == 4 else 1)
    geometry = _sitk_geometry(size, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    check_spacing(geometry.spacing, path)
    dtype = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1] * dim, reader.GetPixelID())).dtype)
    return ImageInfo(path, geometry, channels, dtype)


def read_image(path: str | Path, *, check_finite: bool = True) -> Image:
    """Read a 3D (or 4D multi-channel) image with its geometry.

    Args:
        path: ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``, ``.mha``/``.mhd`` file, or a folder
            holding one DICOM series.
        check_finite: reject images with NaN or Inf voxels.

    Returns:
        An :class:`Image` with array ``(X, Y, Z)`` or channel-first ``(C, X, Y, Z)``. Integer
        voxels keep their type; float64 becomes float32.

    Raises:
        VolsegError: missing, empty, truncated or non-image file, a FIFO or device, a 2D
            image, a header claiming more voxels than the file holds, a spacing outside
            0.0001-10000 mm, a folder with zero or several DICOM series or with unevenly
            spaced slices (one missing), or NaN/Inf voxels.
    """
    path = _existing(path)
    fmt = image_format(path)
    if fmt == "nifti":
        img = _load_nifti(path)
        shape = _squeeze_shape(img.shape, path)
        geometry = _nifti_geometry(img, shape, path)
        try:
            array = np.asanyarray(img.dataobj)
        except Exception as e:  # nibabel raises many types for broken data blocks
            _check_gzip(path)
            raise VolsegError(
                f"{path}: voxel data is unreadable ({_first_line(e)}); the file is probably "
                "truncated or corrupt, re-export or re-download it"
            ) from None
        array = array.reshape(shape)
        if array.ndim == 4:
            array = np.moveaxis(array, -1, 0)
        image = Image(_native(array), geometry, path, img.header.copy())
    elif fmt == "dicom":
        image = _read_dicom(path)
    else:
        image = _from_sitk(_sitk_read(path, fmt), path)
    if fmt != "nifti":
        check_spacing(image.spacing, path)
    if check_finite and image.array.dtype.kind == "f":
        bad = int(np.size(image.array) - np.count_nonzero(np.isfinite(image.array)))
        if bad:
            raise VolsegError(
                f"{path}: {bad} voxels are NaN or Inf; fix or re-export the image "
                "(volseg will not guess values for them)"
            )
    return image


def _existing(path: str | Path) -> Path:
    path = input_path(path, "image")
    if path.is_file() and path.stat().st_size == 0:
        raise VolsegError(f"{path}: file is empty (0 bytes); re-export or re-download it")
    return path


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # ITK messages start with a file:line location; the useful part is the last line.
    return lines[-1][:200] if lines else type(error).__name__


def _load_nifti(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
    except Exception as e:
        _check_gzip(path)
        raise VolsegError(
            f"{path}: not a readable NIfTI file ({_first_line(e)}); check it is complete and "
            "really NIfTI"
        ) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise VolsegError(f"{path}: nibabel read it as {type(img).__name__}, not NIfTI")
    header = img.header
    check_data_size(
        img.shape,
        header.get_data_dtype().itemsize,
        int(header.get_data_offset()),
        path,
        compressed=path.name.lower().endswith(".gz"),
    )
    return img


def _check_gzip(path: Path) -> None:
    """Name a broken gzip stream as such: nibabel reports it as an unknown file type."""
    if not path.name.lower().endswith(".gz"):
        return
    try:
        with gzip.open(path) as f:
            while f.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as e:
        raise VolsegError(
            f"{path}: truncated or corrupt gzip stream ({_first_line(e)}); re-download or "
            "re-export the file"
        ) from None


def _squeeze_shape(shape: tuple[int, ...], path: Path) -> tuple[int, ...]:
    """Spatial dims plus at most one channel dim; singleton extra dims dropped."""
    shape = tuple(int(s) for s in shape)
    extra = [s for s in shape[3:] if s != 1]
    if len(extra) > 1:
        raise VolsegError(f"{path}: shape {shape} has more than one non-spatial dimension")
    _check_3d(shape[:3], len(shape), path)
    return shape[:3] + tuple(extra)


def _check_3d(spatial: tuple[int, ...], ndim: int, path: Path) -> None:
    if ndim < 3 or len(spatial) < 3 or min(spatial) <= 1:
        raise VolsegError(
            f"{path}: image is 2D (shape {tuple(spatial)}); volseg needs a 3D volume "
            "(a DICOM folder with one slice or a single 2D file is not enough)"
        )


def _nifti_geometry(img: nib.Nifti1Image, shape: tuple[int, ...], path: Path) -> Geometry:
    if int(img.header["sform_code"]) == 0:
        # The voxel size comes from pixdim, which nibabel's load "fixes" (0 becomes 1 mm):
        # check the header as stored.
        with ImageOpener(path) as f:
            stored = type(img.header).from_fileobj(f, check=False)
        check_spacing(stored["pixdim"][1:4], path)
    affine = img.affine
    if not np.all(np.isfinite(affine)):
        raise VolsegError(f"{path}: NIfTI affine holds NaN or Inf; fix the header's sform/qform")
    try:
        geometry = Geometry.from_affine(shape[:3], affine)
    except ValueError as e:
        raise VolsegError(f"{path}: invalid NIfTI affine ({e})") from None
    check_spacing(geometry.spacing, path)
    return geometry


def _native(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def _sitk_geometry(size, spacing, origin, direction) -> Geometry:
    dim = len(size)
    matrix = np.asarray(direction, dtype=np.float64).reshape(dim, dim)[:3, :3]
    return Geometry(tuple(size[:3]), spacing[:3], origin[:3], matrix)


def _sitk_read(path: Path, fmt: str) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise VolsegError(
            f"{path}: cannot read as {fmt} ({_first_line(e)}); check the file (and for "
            ".mhd/.nhdr its data file) is complete"
        ) from None


def _from_sitk(img: sitk.Image, path: Path) -> Image:
    dim = img.GetDimension()
    size = img.GetSize()
    _check_3d(size[:3] if dim >= 3 else size, dim, path)
    array = sitk.GetArrayFromImage(img)  # (Z, Y, X), (Z, Y, X, C) or (T, Z, Y, X)
    if dim == 4:
        if img.GetNumberOfComponentsPerPixel() > 1:
            raise VolsegError(f"{path}: 4D image with vector pixels is not supported")
        array = array.transpose(0, 3, 2, 1)
    elif img.GetNumberOfComponentsPerPixel() > 1:
        array = array.transpose(3, 2, 1, 0)
    else:
        array = array.transpose(2, 1, 0)
    geometry = _sitk_geometry(size, img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    return Image(_native(array), geometry, path)


def _read_dicom(folder: Path) -> Image:
    if not folder.is_dir():
        raise VolsegError(f"{folder}: DICOM input must be a folder holding one series")
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "No Series were found" goes to stderr
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as e:
        raise VolsegError(f"{folder}: cannot scan for DICOM files ({_first_line(e)})") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    if not series:
        raise VolsegError(
            f"{folder}: no DICOM series found; point at a folder of .dcm slices "
            f"or at a file in {SUPPORTED}"
        )
    if len(series) > 1:
        raise VolsegError(
            f"{folder}: holds {len(series)} DICOM series ({', '.join(series[:3])}...); "
            "put each series in its own folder"
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    # Before reading: ITK would read a series with a slice missing at a uniform, wrong spacing,
    # and one without any pixel spacing tag at 1 mm in plane.
    check_slice_gaps(_slice_positions(files), folder)
    _require_pixel_spacing(files[0], folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise VolsegError(f"{folder}: cannot read DICOM series ({_first_line(e)})") from None
    return _from_sitk(img, folder)


def _slice_positions(files: list[str]) -> list[float]:
    """Each slice's position (mm) along the slice normal, from the headers only.

    Empty when a slice lacks Image Position / Orientation (Patient): nothing to measure.
    """
    reader = sitk.ImageFileReader()
    reader.LoadPrivateTagsOff()
    positions, normal = [], None
    for name in files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
            position = _numbers(reader, "0020|0032", 3)  # Image Position (Patient)
            if normal is None:
                orientation = _numbers(reader, "0020|0037", 6)  # Image Orientation (Patient)
                normal = np.cross(orientation[:3], orientation[3:])
        except (RuntimeError, KeyError, ValueError):
            return []
        positions.append(float(np.dot(position, normal)))
    return positions


# Where DICOM images hold their in-plane spacing: Pixel Spacing, or (secondary captures, GDCM's
# own among them; projection radiographs) Nominal Scanned / Imager Pixel Spacing.
_PIXEL_SPACING_KEYS = ("0028|0030", "0018|2010", "0018|1164")


def _require_pixel_spacing(file: str, folder: Path) -> None:
    """Refuse a series whose slices hold no in-plane spacing (ITK would assume 1 mm).

    Raises:
        VolsegError: the first slice has none of the pixel spacing tags.
    """
    reader = sitk.ImageFileReader()
    reader.LoadPrivateTagsOff()
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # the series read itself says what is wrong with the file
    if not any(reader.HasMetaDataKey(key) for key in _PIXEL_SPACING_KEYS):
        raise VolsegError(
            f"{folder}: {Path(file).name} has no Pixel Spacing (0028,0030), so the in-plane "
            "spacing is unknown; add it to the series (e.g. with pydicom)"
        )


def _numbers(reader: sitk.ImageFileReader, key: str, count: int) -> np.ndarray:
    if not reader.HasMetaDataKey(key):
        raise KeyError(key)
    values = np.asarray([float(v) for v in reader.GetMetaData(key).split("\\")])
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise ValueError(key)
    return values
