"""Shared machinery for the phantoms: smooth random fields, deformed blobs, random geometry.

Phantoms are drawn on a *canonical* grid whose array axes point to the patient's Left,
Posterior and Superior (LPS), in normalised coordinates ``u`` in about ``[-1, 1]`` across the
field of view along each axis, so that anatomy fills the volume whatever its size. The
canonical array is then flipped along some axes and given a direction matrix
``R @ diag(flips)`` (``R`` a small oblique rotation), which keeps the anatomy where it belongs
in physical space while exercising LPS/RAS and flipped-axis handling downstream.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from volseg.data.manifest import Case, ImageSource, Manifest, save_manifest
from volseg.errors import VolsegError
from volseg.io import write_image
from volseg.io.atomic import atomic_path
from volseg.io.image import Geometry, Image
from volseg.progress import track

Box = tuple[slice, slice, slice]


class SynthCase(NamedTuple):
    """One generated case in memory.

    Attributes:
        image: the intensity image, ``(X, Y, Z)`` or channel-first ``(C, X, Y, Z)``.
        label: the uint8 label map on the same geometry.
        params: what was drawn for the case (JSON-ready), as written to ``synth.json``.
    """

    image: Image
    label: Image
    params: dict[str, Any]


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of case ``index`` of a dataset drawn with ``seed``.

    Equal to the ``index``-th child of ``np.random.SeedSequence(seed).spawn(n)`` for any
    ``n > index``, so case ``k`` is the same whatever the number of cases.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def _basis(n: int, cells: int) -> np.ndarray:
    """``(n, cells)`` Gaussian interpolation weights, each row of unit L2 norm."""
    cells = max(int(cells), 2)
    centres = np.linspace(-0.5, n - 0.5, cells)
    width = 0.7 * n / (cells - 1)
    x = np.arange(n, dtype=np.float64)[:, None]
    w = np.exp(-0.5 * ((x - centres[None, :]) / width) ** 2)
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], cells: tuple[int, int, int]
) -> np.ndarray:
    """A smooth Gaussian random field with unit variance at every voxel.

    A coarse ``cells`` grid of standard normals is upsampled with separable Gaussian weights
    (three small matrix products), which is far cheaper than a full-resolution Gaussian filter
    or a spline ``zoom``.

    Args:
        rng: random generator.
        shape: output shape ``(X, Y, Z)`` in voxels.
        cells: coarse grid size per axis (about the number of bumps across the output, >= 2).

    Returns:
        float32 array of ``shape``.
    """
    cells = tuple(max(int(c), 2) for c in cells)
    coarse = rng.standard_normal(cells).astype(np.float32)
    b0, b1, b2 = (_basis(n, c) for n, c in zip(shape, cells, strict=True))
    field = (b0 @ coarse.reshape(cells[0], -1)).reshape(shape[0], cells[1], cells[2])
    field = np.matmul(b1[None], field)  # (X, Y, c2)
    return np.ascontiguousarray(field @ b2.T)


@dataclass(frozen=True)
class Grid:
    """Normalised canonical coordinates of a voxel grid.

    Voxel ``v`` along an axis of ``n`` voxels sits at ``u = (v - (n - 1) / 2) / (n / 2)``.
    """

    shape: tuple[int, int, int]

    def coords(self, box: Box | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable float32 coordinate arrays ``(u0, u1, u2)`` over ``box``."""
        box = box or tuple(slice(0, n) for n in self.shape)
        out = []
        for axis, (n, s) in enumerate(zip(self.shape, box, strict=True)):
            u = (np.arange(s.start, s.stop, dtype=np.float32) - (n - 1) / 2) / (n / 2)
            view = [1, 1, 1]
            view[axis] = -1
            out.append(u.reshape(view))
        return out[0], out[1], out[2]

    def box(self, centre: np.ndarray, half_extent: np.ndarray) -> Box:
        """Voxel slices covering ``centre +- half_extent`` (normalised units), clipped."""
        box = []
        for n, c, h in zip(self.shape, centre, half_extent, strict=True):
            lo = int(np.floor((c - h) * n / 2 + (n - 1) / 2))
            hi = int(np.ceil((c + h) * n / 2 + (n - 1) / 2)) + 1
            box.append(slice(min(max(lo, 0), n), min(max(hi, 0), n)))
        return box[0], box[1], box[2]


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid in normalised canonical coordinates.

    Args:
        centre: ``(3,)`` centre.
        radii: ``(3,)`` semi-axes along the rotated axes.
        rotation: 3x3 rotation; column ``a`` is the direction of semi-axis ``a``.
    """

    centre: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray

    def level(self, grid: Grid, box: Box) -> np.ndarray:
        """Normalised radius minus one over ``box``: negative inside, zero on the surface."""
        u = grid.coords(box)
        r2 = np.zeros(tuple(s.stop - s.start for s in box), dtype=np.float32)
        for a in range(3):
            d = sum(
                np.float32(self.rotation[k, a]) * (u[k] - np.float32(self.centre[k]))
                for k in range(3)
            )
            r2 += (d / np.float32(self.radii[a])) ** 2
        return np.sqrt(r2) - 1

    def half_extent(self) -> np.ndarray:
        """Half-size of the axis-aligned bounding box, ``(3,)``."""
        return np.sqrt(((self.rotation * self.radii[None, :]) ** 2).sum(axis=1))


def deformed_blob(
    rng: np.random.Generator,
    grid: Grid,
    parts: list[Ellipsoid],
    holes: list[Ellipsoid] | None = None,
    *,
    amplitude: float = 0.15,
    cells: int = 5,
) -> tuple[Box, np.ndarray]:
    """An irregular solid: a union of ellipsoids minus holes, its surface bent by smooth noise.

    The level function ``min(parts)``, then ``max(., -holes)``, is perturbed by ``amplitude``
    times a smooth unit-variance field, which acts as low-frequency noise on the radius.

    Args:
        rng: random generator.
        grid: canonical grid.
        parts: ellipsoids whose union is the solid.
        holes: ellipsoids cut out of it (e.g. a kidney's hilum).
        amplitude: surface perturbation, in units of the normalised radius.
        cells: coarse noise cells across the bounding box (more = bumpier).

    Returns:
        ``(box, level)``: the voxel box the solid lies in and the float32 level over it
        (negative inside; ``-1`` at an ellipsoid centre when unperturbed).
    """
    lo = np.min([p.centre - p.half_extent() for p in parts], axis=0)
    hi = np.max([p.centre + p.half_extent() for p in parts], axis=0)
    margin = 1 + 3 * amplitude
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * margin
    box = grid.box(centre, half)
    level = np.minimum.reduce([p.level(grid, box) for p in parts])
    for hole in holes or []:
        level = np.maximum(level, -hole.level(grid, box))
    size = tuple(s.stop - s.start for s in box)
    noise = smooth_field(rng, size, (cells, cells, max(cells - 1, 2)))
    return box, level + np.float32(amplitude) * noise


def random_rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """A rotation by a uniform angle up to ``max_degrees`` about a random axis, 3x3."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0, max_degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def random_geometry(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: np.ndarray,
    *,
    max_degrees: float = 12.0,
    oblique_prob: float = 0.5,
    flip_prob: tuple[float, float, float] = (0.5, 0.5, 0.25),
) -> tuple[Geometry, tuple[bool, bool, bool]]:
    """A random scanner geometry for a canonical (LPS-aligned) phantom.

    Args:
        rng: random generator.
        shape: ``(X, Y, Z)`` voxels.
        spacing: ``(3,)`` voxel size in mm.
        max_degrees: largest oblique tilt.
        oblique_prob: chance of a tilt at all (otherwise axis-aligned).
        flip_prob: chance that each array axis runs opposite to L, P, S.

    Returns:
        ``(geometry, flips)``; apply :func:`orient` with ``flips`` to the canonical arrays.
        The direction is ``R @ diag(+-1)``, the origin puts the volume centre within a few cm
        of the scanner's isocentre.
    """
    flips = tuple(bool(rng.random() < p) for p in flip_prob)
    tilt = random_rotation(rng, max_degrees) if rng.random() < oblique_prob else np.eye(3)
    direction = tilt @ np.diag([-1.0 if f else 1.0 for f in flips])
    centre = rng.normal(0, [20.0, 20.0, 40.0])
    half = np.asarray(spacing) * (np.asarray(shape) - 1) / 2
    origin = centre - direction @ half
    return Geometry(shape, spacing, origin, direction), (flips[0], flips[1], flips[2])


def orient(array: np.ndarray, flips: tuple[bool, bool, bool]) -> np.ndarray:
    """Flip a canonical ``(..., X, Y, Z)`` array along the spatial axes marked in ``flips``."""
    axes = tuple(array.ndim - 3 + a for a in range(3) if flips[a])
    return np.ascontiguousarray(np.flip(array, axis=axes) if axes else array)


def partial_volume(image: np.ndarray, sigma_voxels: tuple[float, float, float]) -> np.ndarray:
    """Gaussian blur standing in for the scanner's point-spread function, float32 in/out."""
    return ndimage.gaussian_filter(image, sigma_voxels, truncate=3.0, output=np.float32)


# 512^3 float32 voxels are 0.5 GB; drawing a phantom holds several such arrays at once.
MAX_VOXELS = 512**3
MAX_SIDE = 2048


def check_request(cases: int, shape: Sequence[int], minimum: int = 8) -> tuple[int, int, int]:
    """Validate a dataset request before anything is allocated; returns the shape as ints.

    Raises:
        VolsegError: fewer than one case, a shape that is not 3 sizes >= ``minimum``, a side
            over :data:`MAX_SIDE` or more than :data:`MAX_VOXELS` voxels per volume.
    """
    if int(cases) < 1:
        raise VolsegError(f"synth: cases must be >= 1, got {cases}")
    sizes = tuple(int(s) for s in shape)
    if len(sizes) != 3 or min(sizes) < minimum:
        raise VolsegError(f"synth: shape must be 3 sizes >= {minimum} voxels, got {sizes}")
    voxels = math.prod(sizes)
    if max(sizes) > MAX_SIDE or voxels > MAX_VOXELS:
        raise VolsegError(
            f"--shape {' '.join(map(str, sizes))} is {voxels:.3g} voxels per volume; synth "
            f"draws at most {MAX_VOXELS:,} (512^3) with no side over {MAX_SIDE}; pick a "
            "smaller --shape (the 'large' size is 512 512 150)"
        )
    return sizes[0], sizes[1], sizes[2]


def case_ids(prefix: str, cases: int) -> list[str]:
    """``prefix_000``, ``prefix_001``, ... (wider numbers past 999 cases)."""
    width = max(3, len(str(cases - 1)))
    return [f"{prefix}_{k:0{width}d}" for k in range(cases)]


def geometry_params(geometry: Geometry, flips: tuple[bool, bool, bool]) -> dict[str, Any]:
    """The drawn geometry as JSON-ready values (mm, LPS)."""
    return {
        "spacing_mm": rounded(geometry.spacing),
        "origin_mm": rounded(geometry.origin),
        "direction": rounded(geometry.direction),
        "flips": list(flips),
        "orientation": geometry.orientation,
    }


def rounded(value: Any, digits: int = 4) -> Any:
    """Numbers, arrays, dicts and lists with floats rounded, numpy scalars made plain."""
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    if isinstance(value, np.ndarray):
        return rounded(value.tolist(), digits)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return round(float(value), digits)
    return value


def write_params(out_dir: Path, params: dict[str, Any]) -> Path:
    """Write ``out_dir/synth.json`` atomically; returns its path."""
    path = out_dir / "synth.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(rounded(params), indent=2) + "\n")
    return path


def write_ct_segmentation_set(
    out_dir: str | Path,
    *,
    kind: str,
    make_case: Callable[[np.random.Generator, tuple[int, int, int]], SynthCase],
    labels: dict[int, str],
    cases: int,
    shape: tuple[int, int, int],
    seed: int,
) -> Path:
    """Write ``cases`` CT phantoms of one generator and their volseg manifest.

    Layout: ``imagesTr/<kind>_000.nii.gz`` (int16 HU), ``labelsTr/<kind>_000.nii.gz`` (uint8,
    ``labels``), ``manifest.json`` (dataset ``synthetic_<kind>``, task segmentation, modality
    ``CT``) and ``synth.json`` (the request and every case's drawn parameters). Case ``k``
    depends only on ``seed`` and ``k`` (:func:`case_rng`).

    Returns:
        The manifest path.
    """
    shape = check_request(cases, shape)
    out_dir = Path(out_dir).resolve()
    entries, drawn = [], []
    for k, case_id in track(enumerate(case_ids(kind, cases)), f"synth {kind}", total=cases):
        image, label, params = make_case(case_rng(seed, k), shape)
        image_path = write_image(image, out_dir / "imagesTr" / f"{case_id}.nii.gz")
        label_path = write_image(label, out_dir / "labelsTr" / f"{case_id}.nii.gz", label=True)
        entries.append(Case(case_id, {"CT": ImageSource(image_path)}, label=label_path))
        drawn.append({"id": case_id, **params})
    request = {"kind": kind, "cases": cases, "shape": list(shape), "seed": seed}
    write_params(out_dir, {**request, "labels": labels, "cases_drawn": drawn})
    manifest = Manifest(f"synthetic_{kind}", "segmentation", ["CT"], entries, labels=labels)
    return save_manifest(manifest, out_dir / "manifest.json")
