"""Reading DICOM series with optional tags absent: the geometry comes from the slice positions
(ordered along the slice normal), never from Instance Number or Slice Thickness; values follow
the Rescale tags present (slope 1, intercept 0 when absent). A series without any in-plane
spacing fails in one line instead of reading at 1 mm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.io.test_dicom_seg import write_ct_series
from tests.io.test_dicom_seg_missing_tags import TINY, strip
from volseg.errors import VolsegError
from volseg.io import Image, read_image, read_info

pydicom = pytest.importorskip("pydicom")

VALUES = np.random.default_rng(0).integers(-1000, 1000, TINY.shape).astype(np.int16)


def edit(folder: Path, **tags: object) -> None:
    """Set (or, for None, remove) ``tags`` on every slice of a test-made series."""
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value(ds) if callable(value) else value)
        ds.save_as(path)


@pytest.fixture
def series(tmp_path: Path) -> Path:
    """TINY (oblique, anisotropic) as 4 slices in shuffled file-name order."""
    write_ct_series(tmp_path / "series", Image(VALUES, TINY))
    return tmp_path / "series"


@pytest.mark.parametrize(
    "removed",
    [
        ("InstanceNumber",),
        ("SliceThickness",),
        ("RescaleSlope", "RescaleIntercept"),
        ("InstanceNumber", "SliceThickness", "RescaleSlope", "RescaleIntercept"),
    ],
    ids="+".join,
)
def test_series_without_optional_tags_reads_with_its_geometry(series, removed):
    strip(series, *removed)
    image = read_image(series)
    assert image.geometry.matches(TINY)
    np.testing.assert_array_equal(image.array, VALUES)
    assert read_info(series).geometry.matches(TINY)


def test_slices_are_ordered_by_position_not_instance_number(series):
    """Instance Numbers that contradict the positions (reversed) change nothing; neither does a
    Slice Thickness other than the spacing between the slices."""
    edit(series, InstanceNumber=lambda ds: 10 - int(ds.InstanceNumber), SliceThickness=5.0)
    image = read_image(series)
    assert image.geometry.matches(TINY)
    np.testing.assert_allclose(image.geometry.spacing, TINY.spacing)
    np.testing.assert_array_equal(image.array, VALUES)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"RescaleSlope": 2, "RescaleIntercept": None}, VALUES.astype(np.int32) * 2),
        ({"RescaleSlope": None, "RescaleIntercept": -1024}, VALUES.astype(np.int32) - 1024),
    ],
    ids=["slope-only", "intercept-only"],
)
def test_one_rescale_tag_absent_takes_its_identity_value(series, tags, expected):
    edit(series, **tags)
    image = read_image(series)
    assert image.geometry.matches(TINY)
    np.testing.assert_array_equal(image.array, expected)


def test_series_without_pixel_spacing_fails_in_one_line(series):
    """ITK would read it at 1 mm in plane: a wrong geometry, so a one-line refusal instead."""
    strip(series, "PixelSpacing")
    for read in (read_image, read_info):
        with pytest.raises(VolsegError) as error:
            read(series)
        message = str(error.value)
        assert message.startswith(f"{series}: IM") and "\n" not in message
        assert message.endswith(
            ".dcm has no Pixel Spacing (0028,0030), so the in-plane spacing is unknown; "
            "add it to the series (e.g. with pydicom)"
        )
