"""The in-memory image: a voxel array and the geometry that places it in the patient.

Conventions (ITK's, which DICOM, NRRD and MetaImage share):

- Array axes are voxel indices ``(i, j, k)`` = ``(X, Y, Z)``; a multi-channel image is
  channel-first ``(C, X, Y, Z)`` as MONAI expects.
- ``spacing`` is the voxel size in mm along i, j, k.
- ``origin`` is the physical position (mm) of the centre of voxel (0, 0, 0) in LPS coordinates
  (x grows to the patient's Left, y to Posterior, z to Superior).
- ``direction`` is a 3x3 matrix whose columns are the unit vectors of the i, j, k axes in LPS.

So the physical LPS position of voxel index ``v`` is ``origin + direction @ (spacing * v)``.
NIfTI and nibabel use RAS instead; :attr:`Geometry.affine` gives the equivalent 4x4 RAS affine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid lies in physical (LPS, mm) space.

    Args:
        shape: spatial shape ``(X, Y, Z)`` in voxels.
        spacing: voxel size in mm along each array axis, shape (3,).
        origin: LPS position in mm of the centre of voxel (0, 0, 0), shape (3,).
        direction: 3x3 matrix, column ``a`` is the LPS unit vector of array axis ``a``.
    """

    shape: tuple[int, int, int]
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "spacing", np.asarray(self.spacing, dtype=np.float64).reshape(3))
        object.__setattr__(self, "origin", np.asarray(self.origin, dtype=np.float64).reshape(3))
        object.__setattr__(
            self, "direction", np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        )
        if len(self.shape) != 3:
            raise ValueError(f"Geometry needs a 3D spatial shape, got {self.shape}")

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping voxel indices (i, j, k, 1) to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * self.spacing[None, :]
        affine[:3, 3] = self.origin
        return affine

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping voxel indices to RAS millimetres (nibabel's ``img.affine``)."""
        return _LPS_TO_RAS @ self.affine_lps

    @classmethod
    def from_affine(cls, shape: tuple[int, ...], affine: np.ndarray) -> Geometry:
        """Build a geometry from a 4x4 RAS voxel-to-world affine (nibabel convention)."""
        lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
        linear = lps[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing <= 0):
            raise ValueError(f"affine has a zero-length axis: {affine.tolist()}")
        return cls(tuple(shape[:3]), spacing, lps[:3, 3], linear / spacing[None, :])

    def index_to_physical(self, index: np.ndarray) -> np.ndarray:
        """LPS mm of voxel indices, ``(..., 3)`` -> ``(..., 3)``."""
        index = np.asarray(index, dtype=np.float64)
        return index @ (self.direction * self.spacing[None, :]).T + self.origin

    def differences(self, other: Geometry, atol: float = 1e-4) -> list[str]:
        """Human-readable list of what differs from ``other``; empty when they match.

        Spacing and origin are compared in mm with tolerance ``atol``, direction cosines with
        ``atol`` as well (1e-4 mm is far below any scanner's precision and above float32
        rounding in NIfTI headers).
        """
        problems = []
        if self.shape != other.shape:
            problems.append(f"shape {self.shape} vs {other.shape}")
        if not np.allclose(self.spacing, other.spacing, atol=atol, rtol=0):
            problems.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)}")
        if not np.allclose(self.origin, other.origin, atol=atol, rtol=0):
            problems.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)}")
        if not np.allclose(self.direction, other.direction, atol=atol, rtol=0):
            problems.append(
                f"direction {_fmt(self.direction.ravel())} vs {_fmt(other.direction.ravel())}"
            )
        return problems

    def matches(self, other: Geometry, atol: float = 1e-4) -> bool:
        """True when shape, spacing, origin and direction agree to ``atol``."""
        return not self.differences(other, atol)

    @property
    def orientation(self) -> str:
        """Three-letter code of the RAS directions the array axes point to most, e.g. 'RAS'."""
        ras = (_LPS_TO_RAS[:3, :3] @ self.direction).T
        letters = []
        for axis in ras:
            a = int(np.argmax(np.abs(axis)))
            letters.append("RAS"[a] if axis[a] > 0 else "LPI"[a])
        return "".join(letters)


@dataclass
class Image:
    """A voxel array with its geometry.

    Args:
        array: ``(X, Y, Z)`` for a scalar volume or ``(C, X, Y, Z)`` for a multi-channel one.
        geometry: where the spatial grid lies; ``geometry.shape`` equals the spatial shape.
        path: the file or DICOM folder it was read from, if any.
        header: format-specific header kept so that writes back to the same format keep it
            (a nibabel NIfTI header, with its qform/sform codes), or None.
    """

    array: np.ndarray
    geometry: Geometry
    path: Path | None = None
    header: Any = None

    def __post_init__(self) -> None:
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Image array must be 3D or 4D (C,X,Y,Z), got {self.array.shape}")
        if tuple(self.array.shape[-3:]) != self.geometry.shape:
            raise ValueError(
                f"array spatial shape {self.array.shape[-3:]} != geometry shape "
                f"{self.geometry.shape}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)``."""
        return self.geometry.shape

    @property
    def num_channels(self) -> int:
        return 1 if self.array.ndim == 3 else int(self.array.shape[0])

    @property
    def spacing(self) -> np.ndarray:
        return self.geometry.spacing

    @property
    def origin(self) -> np.ndarray:
        return self.geometry.origin

    @property
    def direction(self) -> np.ndarray:
        return self.geometry.direction

    @property
    def affine(self) -> np.ndarray:
        """4x4 RAS affine, as nibabel and MONAI's ``MetaTensor.affine`` use."""
        return self.geometry.affine

    def with_array(self, array: np.ndarray) -> Image:
        """The same geometry (and header) around another array of the same spatial shape."""
        return Image(np.asarray(array), self.geometry, self.path, self.header)

    def channel(self, index: int) -> Image:
        """One channel of a multi-channel image as a scalar image."""
        if self.array.ndim == 3:
            if index != 0:
                raise IndexError(f"scalar image has no channel {index}")
            return self
        return self.with_array(self.array[index])


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in np.ravel(values)) + ")"
