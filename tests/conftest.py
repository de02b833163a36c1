"""Shared fixtures: tiny volumes with non-trivial geometry (oblique, anisotropic, flipped)."""

from __future__ import annotations

import numpy as np
import pytest

from volseg.io import Geometry, Image


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from Euler angles in degrees (x, then y, then z)."""
    rx, ry, rz = np.deg2rad([ax, ay, az])
    x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    return z @ y @ x


GEOMETRIES = {
    "identity": Geometry((9, 8, 7), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)),
    "anisotropic": Geometry((9, 8, 7), (0.68, 0.68, 5.0), (-170.2, -160.9, 412.5), np.eye(3)),
    "oblique": Geometry((9, 8, 7), (0.8, 0.95, 2.5), (12.5, -33.25, 7.0), rotation(12, -20, 33)),
    # RAS-like storage seen from LPS: x and y flipped, as NIfTI from most converters
    "ras_flipped": Geometry((9, 8, 7), (0.9, 0.9, 3.0), (90.0, 126.0, -72.0), np.diag([-1, -1, 1])),
    # left-handed: one axis flipped on an oblique grid
    "left_handed": Geometry(
        (9, 8, 7), (1.1, 0.7, 4.0), (3.0, 2.0, 1.0), rotation(5, 10, -15) @ np.diag([1, 1, -1])
    ),
}


@pytest.fixture(params=sorted(GEOMETRIES))
def geometry(request) -> Geometry:
    return GEOMETRIES[request.param]


def ct_like(geometry: Geometry, seed: int = 0) -> Image:
    """Integer HU-like volume on ``geometry``: a bright ellipsoid in noise."""
    rng = np.random.default_rng(seed)
    idx = np.indices(geometry.shape).astype(np.float32)
    centre = (np.array(geometry.shape, dtype=np.float32) - 1) / 2
    r = sum(((idx[a] - centre[a]) / (geometry.shape[a] / 3)) ** 2 for a in range(3))
    array = np.where(r < 1, 60, -100) + rng.normal(0, 15, geometry.shape)
    return Image(np.round(array).astype(np.int16), geometry)
