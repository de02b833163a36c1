from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import GEOMETRIES, ct_like
from volseg.errors import VolsegError
from volseg.io import Geometry, Image, read_image, read_info, write_image, write_like

FILE_FORMATS = [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"]
# NIfTI stores its affines as float32; the other formats as text or doubles.
ATOL = {".nii.gz": 1e-4, ".nii": 1e-4}


@pytest.mark.parametrize("suffix", FILE_FORMATS)
def test_round_trip_keeps_geometry_and_values(tmp_path, geometry, suffix):
    image = ct_like(geometry)
    path = write_image(image, tmp_path / f"ct{suffix}")
    back = read_image(path)
    assert back.geometry.differences(geometry, atol=ATOL.get(suffix, 1e-6)) == []
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, image.array)
    info = read_info(path)
    assert info.geometry.matches(geometry, atol=ATOL.get(suffix, 1e-6))
    assert info.channels == 1


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_float_and_multichannel_round_trip(tmp_path, suffix):
    geometry = GEOMETRIES["oblique"]
    rng = np.random.default_rng(1)
    array = rng.normal(size=(4, *geometry.shape)).astype(np.float32)
    path = write_like(array, geometry, tmp_path / f"mm{suffix}")
    back = read_image(path)
    assert back.array.shape == (4, 9, 8, 7)
    assert back.num_channels == 4 and read_info(path).channels == 4
    np.testing.assert_array_equal(back.array, array)
    assert back.geometry.matches(geometry, atol=1e-4)
    np.testing.assert_array_equal(back.channel(2).array, array[2])


def test_nifti_opens_identically_in_nibabel_and_simpleitk(tmp_path, geometry):
    path = write_image(ct_like(geometry), tmp_path / "ct.nii.gz")
    np.testing.assert_allclose(nib.load(path).affine, geometry.affine, atol=1e-4)
    itk = sitk.ReadImage(str(path))
    np.testing.assert_allclose(itk.GetSpacing(), geometry.spacing, atol=1e-4)
    np.testing.assert_allclose(itk.GetOrigin(), geometry.origin, atol=1e-4)
    np.testing.assert_allclose(
        np.reshape(itk.GetDirection(), (3, 3)), geometry.direction, atol=1e-4
    )
    # voxel (i, j, k) of our array is ITK's index (i, j, k)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(itk).transpose(2, 1, 0), ct_like(geometry).array
    )


def test_ras_affine_is_lps_geometry_with_xy_negated():
    geometry = GEOMETRIES["oblique"]
    point_lps = geometry.index_to_physical(np.array([2.0, 3.0, 4.0]))
    point_ras = (geometry.affine @ np.array([2.0, 3.0, 4.0, 1.0]))[:3]
    np.testing.assert_allclose(point_ras, point_lps * [-1, -1, 1])
    again = Geometry.from_affine(geometry.shape, geometry.affine)
    assert again.differences(geometry, atol=1e-12) == []
    assert GEOMETRIES["ras_flipped"].orientation == "RAS"
    assert GEOMETRIES["identity"].orientation == "LPS"


@pytest.mark.parametrize(
    "space, sign", [("left-posterior-superior", 1), ("right-anterior-superior", -1)]
)
def test_nrrd_in_lps_and_ras_space(tmp_path, space, sign):
    """A NRRD stored in RAS space reads as the same physical grid, expressed in LPS."""
    array = np.arange(4 * 3 * 2, dtype=np.int16).reshape(2, 3, 4)  # (Z, Y, X) on disk order
    header = (
        "NRRD0004\ntype: short\ndimension: 3\n"
        f"space: {space}\nsizes: 4 3 2\n"
        "space directions: (0,0.8,0) (-1.5,0,0) (0,0,3)\n"
        "kinds: domain domain domain\nendian: little\nencoding: raw\n"
        "space origin: (10,20,30)\n\n"
    )
    path = tmp_path / "x.nrrd"
    path.write_bytes(header.encode() + array.astype("<i2").tobytes())
    image = read_image(path)
    flip = np.array([sign, sign, 1.0])
    np.testing.assert_allclose(image.spacing, [0.8, 1.5, 3.0])
    np.testing.assert_allclose(image.origin, flip * [10, 20, 30])
    expected_direction = np.column_stack([flip * [0, 1, 0], flip * [-1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(image.direction, expected_direction)
    np.testing.assert_array_equal(image.array, array.transpose(2, 1, 0))


def test_labels_stored_as_uint8_or_uint16(tmp_path):
    geometry = GEOMETRIES["anisotropic"]
    labels = np.zeros(geometry.shape, dtype=np.int64)
    labels[2:5, 2:5, 1:4] = 13
    p8 = write_like(labels, geometry, tmp_path / "l8.nii.gz", label=True)
    assert nib.load(p8).get_data_dtype() == np.uint8
    labels[0, 0, 0] = 300
    p16 = write_like(labels, geometry, tmp_path / "l16.nrrd", label=True)
    assert sitk.ReadImage(str(p16)).GetPixelID() == sitk.sitkUInt16
    np.testing.assert_array_equal(read_image(p16).array, labels)
    floats = labels.astype(np.float32)
    p = write_like(floats, geometry, tmp_path / "lf.mha", label=True)
    assert read_image(p).array.dtype == np.uint16


@pytest.mark.parametrize(
    "values, message",
    [(-1, "0..65535"), (70000, "0..65535"), (0.5, "fractional")],
)
def test_bad_label_values_rejected_without_output(tmp_path, values, message):
    geometry = GEOMETRIES["identity"]
    labels = np.zeros(geometry.shape, dtype=np.float64)
    labels[1, 1, 1] = values
    with pytest.raises(VolsegError, match=message):
        write_like(labels, geometry, tmp_path / "bad.nii.gz", label=True)
    assert list(tmp_path.iterdir()) == []


def test_write_like_keeps_reference_nifti_header(tmp_path):
    """qform and sform (and their codes) of the reference survive exactly, even if they differ."""
    geometry = GEOMETRIES["oblique"]
    ref = nib.Nifti1Image(ct_like(geometry).array, geometry.affine)
    qform = geometry.affine.copy()
    qform[:3, 3] += 0.25  # a header whose qform and sform disagree: sform wins everywhere
    ref.set_qform(qform, code=1)
    ref.set_sform(geometry.affine, code=4)
    nib.save(ref, tmp_path / "ref.nii.gz")
    reference = read_image(tmp_path / "ref.nii.gz")
    out = write_like(reference.array > 0, reference, tmp_path / "mask.nii.gz", label=True)
    written = nib.load(out).header
    np.testing.assert_array_equal(written.get_sform(), ref.header.get_sform())
    np.testing.assert_array_equal(written.get_qform(), ref.header.get_qform())
    assert int(written["sform_code"]) == 4 and int(written["qform_code"]) == 1
    assert written.get_data_dtype() == np.uint8
    assert read_image(out).geometry.matches(reference.geometry, atol=1e-6)


def test_write_like_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        write_like(np.zeros((3, 3, 3)), GEOMETRIES["identity"], tmp_path / "x.nii.gz")


def test_failed_write_leaves_previous_file_untouched(tmp_path, monkeypatch):
    geometry = GEOMETRIES["identity"]
    path = write_image(ct_like(geometry), tmp_path / "ct.nii.gz")
    before = path.read_bytes()

    def crash(img, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(nib, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        write_image(ct_like(geometry, seed=5), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"]


@pytest.mark.parametrize("name", ["identity", "anisotropic", "oblique", "ras_flipped"])
def test_dicom_series_round_trip(tmp_path, name):
    geometry = GEOMETRIES[name]
    image = ct_like(geometry)
    folder = write_image(image, tmp_path / "series")
    assert len(list(folder.glob("*.dcm"))) == geometry.shape[2]
    back = read_image(folder)
    assert back.geometry.differences(geometry, atol=1e-4) == []
    np.testing.assert_array_equal(back.array, image.array)


def test_dicom_left_handed_grid_is_stored_slice_reversed(tmp_path):
    """DICOM cannot store a left-handed grid; every voxel still lands at the same position."""
    geometry = GEOMETRIES["left_handed"]
    image = ct_like(geometry)
    back = read_image(write_image(image, tmp_path / "series"))
    np.testing.assert_array_equal(back.array[:, :, ::-1], image.array)
    index = np.stack(np.meshgrid(*[np.arange(s) for s in geometry.shape], indexing="ij"), -1)
    flipped = index.copy()
    flipped[..., 2] = geometry.shape[2] - 1 - flipped[..., 2]
    np.testing.assert_allclose(
        back.geometry.index_to_physical(flipped), geometry.index_to_physical(index), atol=1e-4
    )


def test_dicom_float_values_use_rescale(tmp_path):
    geometry = GEOMETRIES["anisotropic"]
    array = np.random.default_rng(3).uniform(-3.0, 7.0, geometry.shape).astype(np.float32)
    back = read_image(write_like(array, geometry, tmp_path / "series"))
    np.testing.assert_allclose(back.array, array, atol=5.0 / 32000 + 1e-6)


def test_image_rejects_inconsistent_shapes():
    with pytest.raises(ValueError):
        Image(np.zeros((4, 4, 4)), GEOMETRIES["identity"])
