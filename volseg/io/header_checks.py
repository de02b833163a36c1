"""What a header may claim: checked before any voxel is read, so a bad header costs nothing.

A 100-byte file can claim 2000^3 voxels; reading it would allocate 16 GB before the data runs
out. A spacing of 1e-30 mm or 1e30 mm reads fine and resamples into nonsense (or into an
array the size of a planet). A DICOM series with a slice missing reads as a volume with a
uniform, wrong spacing. Each of these is refused here in one line naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from volseg.errors import VolsegError

# The smallest and largest voxel size (mm) of any medical image: 0.1 micrometre (beyond
# micro-CT) to 10 metres (beyond a whole-body scan). Outside, the header is wrong or not in mm.
MIN_SPACING_MM = 1e-4
MAX_SPACING_MM = 1e4
# Deflate cannot compress better than about 1032:1, so a .gz file of N bytes never holds more
# than 1032 * N bytes of data (plus a few bytes of header).
DEFLATE_MAX_RATIO = 1032
# Two slice gaps are equal when they differ by less than 1% of the spacing or 0.01 mm.
GAP_RTOL = 0.01
GAP_ATOL_MM = 0.01


def check_spacing(spacing: Sequence[float], path: Path) -> None:
    """Refuse a voxel size that is not a finite number of millimetres a scanner could give.

    Args:
        spacing: voxel size in mm along each spatial axis.
        path: the file, named in the message.

    Raises:
        VolsegError: a spacing that is NaN, Inf, zero, negative, or outside
            [:data:`MIN_SPACING_MM`, :data:`MAX_SPACING_MM`].
    """
    values = np.asarray(spacing, dtype=np.float64)
    if np.all(np.isfinite(values)) and np.all(
        (values >= MIN_SPACING_MM) & (values <= MAX_SPACING_MM)
    ):
        return
    shown = ", ".join(f"{v:.6g}" for v in values)
    raise VolsegError(
        f"{path}: voxel spacing ({shown}) mm is not plausible (each must lie in "
        f"[{MIN_SPACING_MM:g}, {MAX_SPACING_MM:g}] mm); fix the header's voxel size "
        "(NIfTI pixdim or sform) or re-export the image"
    )


def check_data_size(
    shape: Sequence[int], itemsize: int, offset: int, path: Path, *, compressed: bool
) -> None:
    """Refuse a header whose voxels cannot fit in its file, before anything is allocated.

    Args:
        shape: the voxel shape the header claims (all dimensions).
        itemsize: bytes per voxel value.
        offset: bytes before the voxel data (NIfTI ``vox_offset``).
        path: the file, whose size on disk is the bound.
        compressed: the file is gzip (its data may be up to ~1032 times its size).

    Raises:
        VolsegError: the claimed data is larger than the file can hold.
    """
    needed = int(np.prod([int(s) for s in shape], dtype=object)) * int(itemsize) + int(offset)
    size = path.stat().st_size
    room = size * DEFLATE_MAX_RATIO if compressed else size
    if needed <= room:
        return
    voxels = " x ".join(str(int(s)) for s in shape)
    held = f"at most {_bytes(room)} once unpacked" if compressed else _bytes(size)
    raise VolsegError(
        f"{path}: header claims {voxels} voxels ({_bytes(needed)}) but the file "
        f"({_bytes(size)}) holds {held}; the file is truncated or its header is wrong, "
        "re-export or re-download it"
    )


def check_slice_gaps(positions: Sequence[float], folder: Path) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced (a missing or duplicate slice).

    Args:
        positions: each slice's position (mm) along the slice normal, in series order.
        folder: the series folder, named in the message.

    Raises:
        VolsegError: naming the first uneven pair of slices (1-based, in position order), its
            gap and the usual gap.
    """
    gaps = np.diff(np.sort(np.asarray(positions, dtype=np.float64)))
    if gaps.size == 0:
        return
    usual = float(np.median(gaps))
    uneven = (gaps <= GAP_ATOL_MM) | (np.abs(gaps - usual) > max(GAP_RTOL * usual, GAP_ATOL_MM))
    if not uneven.any():
        return
    i = int(np.argmax(uneven))
    pair = f"slices {i + 1}-{i + 2}"
    if gaps[i] <= GAP_ATOL_MM:
        problem = f"{pair} lie at the same position: a slice is duplicated"
    else:
        what = "a slice is missing" if gaps[i] > usual else "the spacing is uneven"
        problem = f"{pair} are {gaps[i]:.2f} mm apart, the others {usual:.2f} mm: {what}"
    others = int(uneven.sum()) - 1
    more = f" ({others} more uneven gap{'s' if others > 1 else ''})" if others else ""
    raise VolsegError(
        f"{folder}: {problem}{more}; volseg needs evenly spaced slices, so export the "
        "complete series (or resample it to a uniform spacing first)"
    )


def _bytes(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
