"""Every broken input gives a one-line VolsegError naming the file and the problem."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import GEOMETRIES, ct_like
from volseg.errors import VolsegError
from volseg.io import read_image, read_info, write_image


def assert_one_line_error(path, match, reader=read_image):
    with pytest.raises(VolsegError, match=match) as info:
        reader(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_missing_file(tmp_path):
    assert_one_line_error(tmp_path / "nope.nii.gz", "no such file")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_zero_byte_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.touch()
    assert_one_line_error(path, "empty")
    assert_one_line_error(path, "empty", read_info)


def test_truncated_gzip(tmp_path):
    path = write_image(ct_like(GEOMETRIES["oblique"]), tmp_path / "ct.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    assert_one_line_error(path, "truncated or corrupt gzip")


def test_truncated_uncompressed_nifti(tmp_path):
    path = write_image(ct_like(GEOMETRIES["oblique"]), tmp_path / "ct.nii")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    assert_one_line_error(path, "truncated|corrupt")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_not_an_image(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    text = b"patient list\nid,age\n1,54\n" * 20
    path.write_bytes(gzip.compress(text) if suffix == ".nii.gz" else text)
    assert_one_line_error(path, "cannot read|not a readable")


def test_unknown_extension(tmp_path):
    path = tmp_path / "slice.png"
    path.write_bytes(b"\x89PNG")
    assert_one_line_error(path, "unknown image extension")


def test_2d_nifti_and_single_slice(tmp_path):
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 7), np.int16), np.eye(4)), flat)
    assert_one_line_error(flat, "2D")
    single = tmp_path / "single.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 7, 1), np.int16), np.eye(4)), single)
    assert_one_line_error(single, "2D")
    assert_one_line_error(single, "2D", read_info)


def test_2d_metaimage(tmp_path):
    path = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.Image(8, 7, sitk.sitkInt16), str(path))
    assert_one_line_error(path, "2D")
    assert_one_line_error(path, "2D", read_info)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_nan_inf_voxels(tmp_path, bad, suffix):
    geometry = GEOMETRIES["identity"]
    array = np.zeros(geometry.shape, np.float32)
    array[1, 2, 3] = bad
    array[4, 4, 4] = bad
    path = write_image(ct_like(geometry).with_array(array), tmp_path / f"x{suffix}")
    message = assert_one_line_error(path, "NaN or Inf")
    assert "2 voxels" in message
    assert read_image(path, check_finite=False).array.shape == geometry.shape


def test_metaimage_with_missing_data_file(tmp_path):
    path = write_image(ct_like(GEOMETRIES["identity"]), tmp_path / "x.mhd")
    for data in tmp_path.glob("x.*raw"):
        data.unlink()
    assert_one_line_error(path, "cannot read")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    assert_one_line_error(tmp_path, "no DICOM series")


def test_folder_with_two_dicom_series(tmp_path):
    write_image(ct_like(GEOMETRIES["identity"]), tmp_path / "a")
    write_image(ct_like(GEOMETRIES["anisotropic"]), tmp_path / "b")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for series in ("a", "b"):
        for f in (tmp_path / series).iterdir():
            f.rename(mixed / f"{series}_{f.name}")
    assert_one_line_error(mixed, "2 DICOM series")
