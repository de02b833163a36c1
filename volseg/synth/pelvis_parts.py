"""Building blocks of the pelvis phantom: solid primitives, sub-voxel rendering, textures, noise.

Written independently of the abdomen generators (their shape, texture and noise models are not
reused), so that the pelvis set is a held-out test for recipes tuned on them.

Coordinates: primitives are evaluated in *patient* millimetres ``(x, y, z)`` = (towards the
patient's left, posterior, superior), origin between the femoral heads. A case's scanner grid
maps to patient millimetres through :class:`ScanFrame`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from volseg.io.image import Geometry

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]
Solid = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ScanFrame:
    """A scanner grid and where the patient lies in it.

    Args:
        geometry: the output voxel grid (LPS mm).
        centre: LPS mm of the patient origin (between the femoral heads).
        yaw: patient rotation about the scanner's z axis, radians (a patient lying askew).
    """

    geometry: Geometry
    centre: np.ndarray
    yaw: float

    def patient(self, index: np.ndarray) -> Coords:
        """Patient mm of (fractional) voxel indices ``(..., 3)``, as three arrays."""
        lps = self.geometry.index_to_physical(index) - self.centre
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        x = c * lps[..., 0] + s * lps[..., 1]
        y = -s * lps[..., 0] + c * lps[..., 1]
        return x.astype(np.float32), y.astype(np.float32), lps[..., 2].astype(np.float32)


def wobble(rng: np.random.Generator, amount: float, terms: int = 4) -> list[tuple]:
    """Random low-order surface ripples for :func:`blob` (``amount`` = relative radius)."""
    return [
        (rng.normal(size=3) * rng.uniform(0.8, 2.2), rng.uniform(0, 2 * np.pi), amount / terms)
        for _ in range(terms)
    ]


def rotation(yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """Rotation by ``pitch`` about x (a sagittal tilt), then ``yaw`` about z."""
    cp, sp, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    tilt = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    turn = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return turn @ tilt


def blob(
    centre: tuple[float, float, float],
    semi: tuple[float, float, float],
    *,
    axes: np.ndarray | None = None,
    ripples: list[tuple] | None = None,
    flatten_top: float = 0.0,
) -> Solid:
    """An ellipsoid (mm) with semi-axes ``semi`` along the columns of ``axes`` (a rotation,
    default the patient axes), whose radius is modulated along the surface by ``ripples``;
    ``flatten_top`` squashes its upper half (a half-filled bladder under the bowel's weight)."""
    c = np.asarray(centre, np.float32)
    r = (np.eye(3) if axes is None else np.asarray(axes)).astype(np.float32)

    def inside(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        qx = (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz) / semi[0]
        qy = (r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz) / semi[1]
        qz = (r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz) / semi[2]
        if flatten_top:
            qz = np.where(qz > 0, qz * (1.0 + flatten_top), qz)
        rho = np.sqrt(qx * qx + qy * qy + qz * qz) + 1e-6
        limit = np.ones_like(rho)
        for k, phase, amp in ripples or []:
            limit += amp * np.cos((k[0] * qx + k[1] * qy + k[2] * qz) / rho * np.pi + phase)
        return rho < limit

    return inside


def ball(centre: tuple[float, float, float], radius: float) -> Solid:
    """A sphere (mm)."""
    return blob(centre, (radius, radius, radius))


def shell(solid_outer: Solid, solid_inner: Solid) -> Solid:
    """The part of ``solid_outer`` outside ``solid_inner``."""
    return lambda x, y, z: solid_outer(x, y, z) & ~solid_inner(x, y, z)


def capsule(p0: tuple[float, ...], p1: tuple[float, ...], radius: float) -> Solid:
    """Points within ``radius`` mm of the segment ``p0``-``p1`` (a bowel loop, a bone neck)."""
    a, b = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    d = b - a
    length2 = float(d @ d) or 1e-6

    def inside(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        t = np.clip(((x - a[0]) * d[0] + (y - a[1]) * d[1] + (z - a[2]) * d[2]) / length2, 0, 1)
        ex, ey, ez = x - a[0] - t * d[0], y - a[1] - t * d[1], z - a[2] - t * d[2]
        return ex * ex + ey * ey + ez * ez < radius * radius

    return inside


def tube_along_z(
    centre_xy: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    radius: Callable[[np.ndarray], np.ndarray],
    z_range: tuple[float, float],
) -> Solid:
    """A tube running up the body: axial cross-section a disc at ``centre_xy(z)`` of
    ``radius(z)`` mm, for ``z`` in ``z_range`` (rectum, iliac vessels)."""

    def inside(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        cx, cy = centre_xy(z)
        r = radius(z)
        return ((x - cx) ** 2 + (y - cy) ** 2 < r * r) & (z >= z_range[0]) & (z <= z_range[1])

    return inside


def body_section(
    half_width: float, half_depth: float, power: float, lobes: list[tuple[int, float, float]]
) -> Solid:
    """The axial body outline: a super-ellipse (``power`` ~2.5, squarer than an ellipse) whose
    radius is rippled by ``lobes`` (harmonic, amplitude, phase), the same at every z."""

    def inside(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        angle = np.arctan2(y, x)
        scale = 1.0 + sum(a * np.cos(n * angle + p) for n, a, p in lobes)
        qx, qy = np.abs(x) / (half_width * scale), np.abs(y) / (half_depth * scale)
        return qx**power + qy**power < 1.0

    return inside


def render_counts(
    frame: ScanFrame,
    paint: Callable[[Coords], tuple[np.ndarray, np.ndarray]],
    tissues: int,
    labels: int,
    oversample: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Partial-volume rendering: each voxel is split into ``fx * fy * fz`` sub-voxels whose
    centres are painted, slice by slice (bounded memory), and the sub-voxels of each tissue
    and label are counted.

    Args:
        frame: the scanner grid and the patient in it.
        paint: patient mm arrays -> (tissue index, label value) arrays of the same shape.
        tissues, labels: how many tissue indices / label values exist.
        oversample: sub-voxels per voxel along each array axis; a box average over the slice
            thickness is the slice-sensitivity profile of a thick CT slice.

    Returns:
        ``(tissues, X, Y, Z)`` and ``(labels, X, Y, Z)`` uint8 counts out of ``fx * fy * fz``.
    """
    nx, ny, nz = frame.geometry.shape
    fx, fy, fz = oversample
    tissue_counts = np.zeros((tissues, nx, ny, nz), np.uint8)
    label_counts = np.zeros((labels, nx, ny, nz), np.uint8)
    sub = [(np.arange(n * f) + 0.5) / f - 0.5 for n, f in ((nx, fx), (ny, fy))]
    ii, jj = np.meshgrid(sub[0], sub[1], indexing="ij")
    for k in range(nz):
        kk = k + (np.arange(fz) + 0.5) / fz - 0.5
        index = np.stack(np.broadcast_arrays(ii[..., None], jj[..., None], kk), axis=-1)
        tissue, label = paint(frame.patient(index))
        for counts, values in ((tissue_counts, tissue), (label_counts, label)):
            grid = values.reshape(nx, fx, ny, fy, fz)
            for t in np.unique(grid):
                counts[t, :, :, k] = (grid == t).sum(axis=(1, 3, 4))
    return tissue_counts, label_counts


def grain(rng: np.random.Generator, shape: tuple[int, ...], sigma_voxels: np.ndarray) -> np.ndarray:
    """Unit-variance Gaussian random field, smoothed by ``sigma_voxels`` per axis (float32)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_voxels)
    return (field - field.mean()) / (field.std() + 1e-6)


def texture_sigma(spacing: np.ndarray, mm: float, least: float = 0.6) -> np.ndarray:
    """Smoothing in voxels for a texture of grain ``mm``, never finer than ``least`` voxels so
    a texture survives coarse grids (it is then a voxel-scale texture)."""
    return np.maximum(mm / np.asarray(spacing, np.float64), least)


def scanner_noise(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    *,
    sigma_hu: np.ndarray,
    correlation_voxels: tuple[float, float, float],
) -> np.ndarray:
    """Correlated CT noise: white noise smoothed by the reconstruction kernel
    (``correlation_voxels``), renormalised to unit variance and scaled voxel by voxel by
    ``sigma_hu`` (higher where the beam crosses more tissue)."""
    return grain(rng, shape, np.asarray(correlation_voxels)) * sigma_hu
