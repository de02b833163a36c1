"""Organs as sums of Gaussian metaballs in a patient frame that moves inside the scanner.

:class:`PatientFrame` holds the patient's coordinates on the canonical grid of
:mod:`volseg.synth.shapes`, shifted and turned in-plane, and evaluates metaball sums there;
:func:`sweep` lays balls along a curved centreline so that their sum crosses :data:`SURFACE`
about one radius from it: a tube whose thickness follows the given radii. Used by
:mod:`volseg.synth.abdomen`.
"""

from __future__ import annotations

import numpy as np

from volseg.synth.shapes import Grid

# A metaball sum equals this one radius away from an isolated ball's centre: the surface.
SURFACE = np.float32(np.exp(-0.5))


class PatientFrame:
    """The patient's frame inside the field of view.

    Patient coordinates are the canonical grid's, shifted by ``shift`` and turned by ``angle``
    (radians) about ``z``; anatomy written in them moves with the patient, not the scanner.
    """

    def __init__(self, grid: Grid, angle: float, shift: np.ndarray) -> None:
        self.grid, self.angle, self.shift = grid, angle, np.asarray(shift, dtype=np.float64)
        u0, u1, u2 = grid.coords()
        c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        d0, d1 = u0 - np.float32(shift[0]), u1 - np.float32(shift[1])
        self.x, self.y = c * d0 + s * d1, c * d1 - s * d0  # (X, Y, 1)
        self.z = u2 - np.float32(shift[2])  # (1, 1, Z)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        """In-plane elliptic cross-section, the same on every slice: bool ``(X, Y, 1)``."""
        return ((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2 < 1

    def metaballs(self, balls: np.ndarray) -> np.ndarray:
        """Sum of axis-aligned Gaussian balls ``w exp(-|(p - c) / r|^2 / 2)``, float32 grid.

        Each ball is evaluated only within three radii of its centre, which keeps a sweep of
        many small balls cheap.
        """
        field = np.zeros(self.grid.shape, dtype=np.float32)
        c, s = np.cos(self.angle), np.sin(self.angle)
        for ball in balls.astype(np.float32):
            p, r, w = ball[:3], ball[3:6], ball[6]
            centre = np.array([c * p[0] - s * p[1], s * p[0] + c * p[1], p[2]]) + self.shift
            b = self.grid.box(centre, 3 * np.array([r[:2].max(), r[:2].max(), r[2]]))
            if any(sl.stop <= sl.start for sl in b):
                continue
            q = ((self.x[b[0], b[1]] - p[0]) / r[0]) ** 2 + ((self.z[..., b[2]] - p[2]) / r[2]) ** 2
            q += ((self.y[b[0], b[1]] - p[1]) / r[1]) ** 2
            field[b] += w * np.exp(np.float32(-0.5) * q)
        return field


def sweep(control: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """``(n, 7)`` balls along the quadratic Bezier curve of 3 control points, radii alike.

    Balls sit about 0.6 radii apart, weighted by their spacing in radii over sqrt(2 pi), so the
    sum is about 1 on the centreline and crosses :data:`SURFACE` about one radius from it: a
    tube whose thickness follows ``radii``. The end balls get extra weight for round caps.
    """

    def bezier(t: np.ndarray, points: np.ndarray) -> np.ndarray:
        t = t[:, None]
        return (1 - t) ** 2 * points[0] + 2 * t * (1 - t) * points[1] + t**2 * points[2]

    fine = np.linspace(0, 1, 64)
    steps = np.diff(bezier(fine, control), axis=0) / bezier(fine[1:], radii)
    n = max(3, int(np.ceil(np.linalg.norm(steps, axis=1).sum() / 0.6)) + 1)
    t = np.linspace(0, 1, n)
    centres, rad = bezier(t, control), bezier(t, radii)
    weights = np.linalg.norm(np.gradient(centres, axis=0) / rad, axis=1) / np.sqrt(2 * np.pi)
    weights[[0, -1]] += 0.5
    return np.column_stack([centres, rad, weights])
