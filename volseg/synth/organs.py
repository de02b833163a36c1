"""CT-like abdominal phantoms: body, spine, vessels and four labelled organs.

Anatomy is drawn on the canonical LPS grid of :mod:`volseg.synth.shapes` (``x`` to the
patient's Left, ``y`` Posterior, ``z`` Superior, normalised to about ``[-1, 1]`` across the
field of view): the liver on the patient's right (``x < 0``), the spleen on the left, the
kidneys posterior on either side of the spine. Organ intensities are drawn per case from
overlapping distributions (liver ~58, spleen ~50, kidney ~35 HU, sd 10), so an organ is told
apart by where it is and its shape, not by its HU. Vertebrae (bone, up to ~900 HU), muscles and
vessels are unlabelled distractors.

Label map (:data:`ORGAN_LABELS`): 0 background, 1 liver, 2 spleen, 3 kidney_left,
4 kidney_right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from volseg.io import Image
from volseg.synth.shapes import (
    Ellipsoid,
    Grid,
    SynthCase,
    deformed_blob,
    geometry_params,
    orient,
    partial_volume,
    random_geometry,
    random_rotation,
    smooth_field,
    write_ct_segmentation_set,
)

ORGAN_LABELS: dict[int, str] = {
    0: "background",
    1: "liver",
    2: "spleen",
    3: "kidney_left",
    4: "kidney_right",
}

# Canonical anatomy (normalised units): (centre, semi-axes) of each part; holes are cut out.
_ORGANS: dict[str, dict[str, list[tuple[tuple[float, ...], tuple[float, ...]]]]] = {
    "kidney_left": {
        "parts": [((0.32, 0.36, -0.35), (0.14, 0.10, 0.33))],
        "holes": [((0.20, 0.33, -0.35), (0.06, 0.05, 0.10))],
    },
    "kidney_right": {
        "parts": [((-0.32, 0.36, -0.42), (0.14, 0.10, 0.33))],
        "holes": [((-0.20, 0.33, -0.42), (0.06, 0.05, 0.10))],
    },
    "spleen": {
        "parts": [((0.55, 0.22, 0.38), (0.13, 0.22, 0.32))],
        "holes": [((0.36, 0.18, 0.38), (0.12, 0.14, 0.24))],
    },
    "liver": {
        "parts": [
            ((-0.42, 0.02, 0.28), (0.35, 0.42, 0.48)),
            ((-0.12, -0.25, 0.40), (0.30, 0.15, 0.24)),
        ],
        "holes": [],
    },
}
# Painted in this order (small organs first, so the big liver never swallows them).
_PAINT_ORDER = ("kidney_left", "kidney_right", "spleen", "liver")
_LABEL_OF = {name: value for value, name in ORGAN_LABELS.items()}

# Per-case organ HU: mean and spread of the per-case mean (ranges overlap on purpose).
_HU = {"liver": (58.0, 10.0), "spleen": (50.0, 10.0), "kidney": (35.0, 10.0)}
_FAT_HU, _MUSCLE_HU, _AIR_HU = -100.0, 50.0, -1000.0


def make_organ_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> SynthCase:
    """One abdominal CT phantom in memory.

    Args:
        rng: the case's random generator (see :func:`volseg.synth.shapes.case_rng`).
        shape: ``(X, Y, Z)`` voxels; anatomy scales with it.

    Returns:
        ``SynthCase(image, label, params)``: the int16 HU image ``(X, Y, Z)``, the uint8 label
        map (:data:`ORGAN_LABELS`) on the same geometry, and the drawn parameters. Spacing is
        anisotropic (in-plane 0.7-1.0 mm, slices 2-5 mm); the direction may be oblique and/or
        flipped.
    """
    in_plane = rng.uniform(0.7, 1.0)
    spacing = np.array([in_plane, in_plane, rng.choice([2.0, 2.5, 3.0, 4.0, 5.0])])
    geometry, flips = random_geometry(rng, shape, spacing)
    grid = Grid(shape)

    hu, occupied, interior = _body(rng, grid)
    label = np.zeros(shape, dtype=np.uint8)
    kidney = rng.normal(*_HU["kidney"])
    means = {
        "liver": rng.normal(*_HU["liver"]),
        "spleen": rng.normal(*_HU["spleen"]),
        "kidney_left": kidney + rng.normal(0, 3.0),
        "kidney_right": kidney + rng.normal(0, 3.0),
    }
    means = {k: float(np.clip(v, 10.0, 100.0)) for k, v in means.items()}
    allowed = interior & ~occupied
    for name in _PAINT_ORDER:
        _paint_organ(rng, grid, name, label, allowed)

    texture = smooth_field(rng, shape, tuple(max(3, n // 8) for n in shape))
    texture_hu = rng.uniform(3.0, 8.0)
    for name, mean in means.items():
        inside = label == _LABEL_OF[name]
        hu[inside] = mean + texture_hu * texture[inside]

    blur = (rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.6))
    hu = partial_volume(hu, blur)
    noise_hu = rng.uniform(10.0, 20.0)
    hu += noise_hu * rng.standard_normal(shape, dtype=np.float32)
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(label.ravel(), minlength=len(ORGAN_LABELS))
    params = {
        **geometry_params(geometry, flips),
        "organ_hu_mean": means,
        "texture_hu": texture_hu,
        "noise_hu": noise_hu,
        "blur_voxels": list(blur),
        "organ_volume_ml": {ORGAN_LABELS[v]: counts[v] * voxel_ml for v in ORGAN_LABELS if v},
    }
    return SynthCase(
        Image(orient(hu, flips), geometry), Image(orient(label, flips), geometry), params
    )


def _body(rng: np.random.Generator, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Air, body wall, visceral fat/soft tissue, spine, paraspinal muscles and vessels.

    Returns:
        ``(hu, occupied, interior)``: float32 HU, the mask of unlabelled solid structures
        (bone, muscle, vessels) organs must avoid, and the abdominal cavity mask.
    """
    shape = grid.shape
    x, y, z = grid.coords()
    ax, ay = rng.uniform(0.82, 0.92), rng.uniform(0.62, 0.72)
    radius = np.sqrt((x / ax) ** 2 + ((y - 0.02) / ay) ** 2)
    level = radius - 1 + np.float32(0.04) * smooth_field(rng, shape, (6, 6, 3))
    body = level < 0
    fat_depth = rng.uniform(0.08, 0.15)
    wall = body & (level > -fat_depth - 0.05)
    interior = body & ~wall

    hu = np.full(shape, _AIR_HU, dtype=np.float32)
    # Visceral fat mixed with bowel/soft tissue, from a smooth field.
    mix = np.clip(0.6 + 0.5 * smooth_field(rng, shape, tuple(max(3, n // 6) for n in shape)), 0, 1)
    soft = rng.uniform(20.0, 40.0)
    hu[interior] = (_FAT_HU + (soft - _FAT_HU) * mix)[interior]
    hu[wall] = _MUSCLE_HU
    hu[body & (level > -fat_depth)] = _FAT_HU + rng.normal(0, 5.0)

    def disc(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:  # (X, Y, 1)
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1

    muscle = disc(0.14, 0.52, 0.09, 0.08) | disc(-0.14, 0.52, 0.09, 0.08)
    vertebra = disc(0.0, 0.40, 0.095, 0.08)
    cancellous = disc(0.0, 0.40, 0.075, 0.06)
    canal = disc(0.0, 0.53, 0.035, 0.03)
    arch = (disc(0.0, 0.54, 0.065, 0.055) & ~canal) | disc(0.0, 0.61, 0.02, 0.05)
    aorta, ivc = disc(0.05, 0.27, 0.045, 0.045), disc(-0.12, 0.25, 0.05, 0.04)
    # Intervertebral discs: ~9 vertebrae across the field of view, random phase.
    disc_z = ((z * 4.5 + rng.uniform(0, 1)) % 1.0) < 0.15  # (1, 1, Z)
    bone_hu = rng.uniform(600.0, 900.0)
    for mask, value in (
        (muscle & interior, _MUSCLE_HU),
        (canal & interior, 15.0),
        ((aorta | ivc) & interior, rng.normal(45.0, 8.0)),
        (vertebra & disc_z, 80.0),
        (vertebra & ~disc_z, bone_hu),
        (cancellous & ~disc_z, rng.uniform(180.0, 300.0)),
        (arch & body, 0.8 * bone_hu),
    ):
        hu[np.broadcast_to(mask, shape)] = value
    occupied = np.broadcast_to(muscle | vertebra | canal | arch | aorta | ivc, shape)
    return hu, occupied, interior


def _paint_organ(
    rng: np.random.Generator, grid: Grid, name: str, label: np.ndarray, allowed: np.ndarray
) -> None:
    """Draw organ ``name`` with jittered position, size and tilt; paint it on free voxels.

    Redraws (up to 20 times) when too little of it lands on free voxels, so every organ is
    present even in tiny volumes.
    """
    spec = _ORGANS[name]
    value = _LABEL_OF[name]
    expected = np.prod(spec["parts"][0][1]) * np.pi * 4 / 3 * np.prod(grid.shape) / 8
    for _ in range(20):
        shift = rng.normal(0, 0.03, 3)
        scale = rng.uniform(0.85, 1.15, 3)
        tilt = random_rotation(rng, 15.0)
        parts = [Ellipsoid(np.add(c, shift), np.multiply(r, scale), tilt) for c, r in spec["parts"]]
        holes = [Ellipsoid(np.add(c, shift), np.multiply(r, scale), tilt) for c, r in spec["holes"]]
        amplitude = rng.uniform(0.10, 0.20)
        box, level = deformed_blob(rng, grid, parts, holes, amplitude=amplitude, cells=5)
        mask = (level < 0) & allowed[box] & (label[box] == 0)
        if mask.sum() >= max(1.0, 0.3 * expected):
            label[box][mask] = value
            return
    raise RuntimeError(f"could not place {name} in a {grid.shape} volume")


def synthesize_organs(
    out_dir: str | Path, *, cases: int, shape: tuple[int, int, int], seed: int = 0
) -> Path:
    """Write an abdominal CT segmentation dataset and its volseg manifest.

    Layout: ``imagesTr/organs_000.nii.gz`` (int16 HU), ``labelsTr/organs_000.nii.gz`` (uint8,
    :data:`ORGAN_LABELS`), ``manifest.json`` (task segmentation, modality ``CT``) and
    ``synth.json`` (the request and every case's drawn parameters). Case ``k`` depends only on
    ``seed`` and ``k``.

    Args:
        out_dir: output folder (created).
        cases: number of cases.
        shape: ``(X, Y, Z)`` voxels per case.
        seed: random seed.

    Returns:
        The manifest path.
    """
    return write_ct_segmentation_set(
        out_dir,
        kind="organs",
        make_case=make_organ_case,
        labels=ORGAN_LABELS,
        cases=cases,
        shape=shape,
        seed=seed,
    )
