"""Held-out CT abdomen phantoms: spleen, liver and kidneys built from swept metaballs.

Independent of :mod:`volseg.synth.organs`, for benchmarks that recipes were not tuned on.
Anatomy lives in a *patient frame*: the canonical LPS grid of :mod:`volseg.synth.shapes` (about
``[-1, 1]``) shifted and turned in-plane at random, so position is a weaker cue. A wide, flat
body with an uneven fat layer (thick in front, thin under the back); organs are sums of Gaussian
metaballs swept along curved centrelines (:mod:`volseg.synth.metaballs`; a negative ball carves
the renal hilum): liver right and anterior with a left lobe across the midline, spleen a
crescent along the left posterolateral wall, kidneys low and posterior. Unlabelled distractors:
ribs as bony arcs, spine, psoas and back muscles, contrast-filled aorta, IVC and liver veins
(110-250 HU), stomach, colon and bowel loops with fluid or stool and gas (-1000 HU). Organ HU
are drawn per case from strongly overlapping distributions (liver 60, spleen 65, kidney 70 HU,
sd 15-20); about half the cases show a brighter renal cortex.

Label map (:data:`ABDOMEN_LABELS`): 0 background, 1 spleen, 2 liver, 3 kidney (both sides).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from volseg.io import Image
from volseg.synth.metaballs import SURFACE, PatientFrame, sweep
from volseg.synth.shapes import (
    Grid,
    SynthCase,
    geometry_params,
    orient,
    partial_volume,
    random_geometry,
    smooth_field,
    write_ct_segmentation_set,
)

ABDOMEN_LABELS: dict[int, str] = {0: "background", 1: "spleen", 2: "liver", 3: "kidney"}
_SPLEEN, _LIVER, _KIDNEY = 1, 2, 3

# Per-case organ HU: mean and spread of the per-case mean (they overlap on purpose).
_ORGAN_HU = {"spleen": (65.0, 15.0), "liver": (60.0, 15.0), "kidney": (70.0, 20.0)}
_AIR_HU = -1000.0

# A set of metaballs is an (n, 7) array: centre (3), radii (3), weight, in patient units.
# Organs are sums of balls swept along curves: per sweep 3 control points (x, y in half-axes
# of the abdominal cavity, z normalised) and the radii there (normalised); "carve" balls are
# negative (centre in cavity units, radii, weight); "bumps" small random balls on the surface.


def _kidney(side: float, z: float) -> dict:
    """A kidney's spec (see :data:`_ORGANS`): ``side`` +1 left, -1 right, centre height ``z``."""
    return {
        "sweeps": [
            (
                [
                    (0.5 * side, 0.62, z + 0.35),
                    (0.68 * side, 0.5, z),
                    (0.58 * side, 0.42, z - 0.35),
                ],
                [(0.1, 0.08, 0.14), (0.14, 0.11, 0.18), (0.1, 0.08, 0.14)],
            )
        ],
        "carve": [((0.45 * side, 0.42, z), (0.06, 0.05, 0.1), 0.9)],  # the hilum
    }


_ORGANS: dict[str, dict] = {
    "kidney_left": _kidney(1.0, -0.3),
    "kidney_right": _kidney(-1.0, -0.42),  # lower, under the liver
    "spleen": {
        "sweeps": [
            (
                [(0.84, -0.15, 0.25), (0.82, 0.45, 0.45), (0.4, 0.76, 0.6)],
                [(0.09, 0.09, 0.25), (0.14, 0.14, 0.32), (0.08, 0.08, 0.22)],
            ),
        ],
        "carve": [((0.62, 0.3, 0.45), (0.045, 0.045, 0.1), 0.6)],  # hilar cleft
    },
    "liver": {
        "sweeps": [
            (
                [(-0.7, 0.25, 0.35), (-0.55, -0.5, 0.45), (0.2, -0.6, 0.55)],
                [(0.22, 0.2, 0.5), (0.22, 0.2, 0.45), (0.08, 0.06, 0.2)],
            ),
            (
                [(-0.7, 0.2, 0.3), (-0.72, -0.05, -0.1), (-0.6, -0.2, -0.4)],
                [(0.2, 0.18, 0.3), (0.14, 0.13, 0.25), (0.09, 0.08, 0.15)],
            ),
        ],
        "bumps": 3,
    },
}
_LABEL_OF = {"kidney_left": _KIDNEY, "kidney_right": _KIDNEY, "spleen": _SPLEEN, "liver": _LIVER}
# Hollow viscera (unlabelled): centreline in cavity units, ball radii; painted after organs.
_STOMACH = (
    [(0.45, 0.05, 0.55), (0.42, -0.6, 0.3), (-0.05, -0.6, 0.05)],
    [(0.13, 0.12, 0.22), (0.12, 0.1, 0.2), (0.07, 0.06, 0.12)],
)
_COLON = [
    [(-0.78, 0.0, -0.95), (-0.8, -0.1, -0.3), (-0.6, -0.45, 0.05)],
    [(-0.6, -0.45, 0.05), (0.0, -0.85, -0.15), (0.65, -0.35, 0.15)],
    [(0.65, -0.35, 0.15), (0.82, 0.05, -0.3), (0.7, -0.1, -0.95)],
]

# Hepatic veins (from the IVC) and a portal branch (from below): start and end, patient units.
_LIVER_VEINS = [
    ((-0.085, 0.1, 0.75), (-0.45, -0.1, 0.85)),
    ((-0.085, 0.1, 0.75), (-0.15, -0.3, 0.85)),
    ((0.0, 0.0, 0.05), (-0.4, -0.05, 0.3)),
]


def make_abdomen_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> SynthCase:
    """One held-out abdominal CT phantom in memory.

    Args:
        rng: the case's random generator (see :func:`volseg.synth.shapes.case_rng`).
        shape: ``(X, Y, Z)`` voxels; anatomy scales with it.

    Returns:
        ``SynthCase(image, label, params)``: the int16 HU image ``(X, Y, Z)``, the uint8 label
        map (:data:`ABDOMEN_LABELS`) on the same geometry, and the drawn parameters. Spacing is
        anisotropic (in-plane 0.7-1.0 mm, slices 3-5 mm); the array runs LPS, RAS, or either
        slightly oblique.
    """
    in_plane = rng.uniform(0.7, 1.0)
    spacing = np.array([in_plane, in_plane, rng.choice([3.0, 3.75, 4.0, 5.0])])
    scan = str(rng.choice(["LPS", "RAS", "oblique"]))
    ras = 1.0 if scan == "RAS" or (scan == "oblique" and rng.random() < 0.5) else 0.0
    oblique = float(scan == "oblique")
    geometry, flips = random_geometry(
        rng, shape, spacing, max_degrees=8.0, oblique_prob=oblique, flip_prob=(ras, ras, 0.0)
    )
    angle = rng.uniform(-10.0, 10.0)
    shift = rng.uniform([-0.08, -0.06, -0.15], [0.08, 0.06, 0.15])
    patient = PatientFrame(Grid(shape), np.deg2rad(angle), shift)

    hu, body = _body(rng, patient)
    label = np.zeros(shape, dtype=np.uint8)
    kidney_field = np.zeros(shape, dtype=np.float32)
    for name in _ORGANS:
        field = _place(rng, patient, label, body, name)
        if _LABEL_OF[name] == _KIDNEY:
            kidney_field = np.maximum(kidney_field, field)
    _hollow_viscera(rng, patient, hu, label, body)

    means = {k: float(np.clip(rng.normal(*v), 15.0, 140.0)) for k, v in _ORGAN_HU.items()}
    cortex_hu = float(rng.uniform(30.0, 80.0)) if rng.random() < 0.5 else 0.0
    texture = smooth_field(rng, shape, tuple(max(3, n // 6) for n in shape))
    texture_hu = rng.uniform(2.0, 7.0)
    for name, value in (("spleen", _SPLEEN), ("liver", _LIVER), ("kidney", _KIDNEY)):
        inside = label == value
        hu[inside] = means[name] + texture_hu * texture[inside]
    kidney = label == _KIDNEY
    cortex = kidney & (kidney_field < np.exp(-0.5 * 0.7**2))  # outer ~30% of the radius
    hu[cortex] += cortex_hu
    hu[kidney & ~cortex] -= 0.5 * cortex_hu
    for start, end in _LIVER_VEINS:  # contrast-filled tubes inside the liver
        control = np.linspace(start, end, 3) + rng.normal(0, 0.04, (3, 3))
        r = rng.uniform(0.018, 0.03)
        vein = patient.metaballs(sweep(control, np.tile([r, r, 2 * r], (3, 1)))) > SURFACE
        hu[vein & (label == _LIVER)] = body["drawn"]["vessel_hu"]["veins"]

    blur = (rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.2), rng.uniform(0.15, 0.45))
    hu = partial_volume(hu, blur)
    # CT noise is correlated in-plane: white noise blurred within each slice, rescaled.
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (0.7, 0.7, 0))
    noise_hu = rng.uniform(6.0, 28.0)
    hu += np.float32(noise_hu / noise.std()) * noise
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(label.ravel(), minlength=len(ABDOMEN_LABELS))
    params = {
        **geometry_params(geometry, flips),
        "scan": scan,
        "patient_angle_deg": angle,
        "patient_shift": shift,
        **body["drawn"],
        "organ_hu_mean": means,
        "kidney_cortex_hu": cortex_hu,
        "texture_hu": texture_hu,
        "noise_hu": noise_hu,
        "blur_voxels": list(blur),
        "organ_volume_ml": {ABDOMEN_LABELS[v]: counts[v] * voxel_ml for v in ABDOMEN_LABELS if v},
    }
    return SynthCase(
        Image(orient(hu, flips), geometry), Image(orient(label, flips), geometry), params
    )


def _body(rng: np.random.Generator, patient: PatientFrame) -> tuple[np.ndarray, dict]:
    """Air, fat, muscle wall, ribs, spine, back muscles, psoas, aorta and IVC.

    Returns:
        ``(hu, body)``: float32 HU and a dict: ``allowed`` (the abdominal cavity minus solid
        distractors: where organs and viscera may go), ``cavity`` (its half-axes, for placing
        anatomy) and ``drawn`` (sizes and HU, for ``synth.json``).
    """
    shape = patient.grid.shape
    x, y, z = patient.x, patient.y, patient.z
    a, b, power = rng.uniform(0.76, 0.86), rng.uniform(0.46, 0.56), rng.uniform(2.3, 3.0)
    # Superellipse "radius", flattened at the back where the patient lies on the table.
    rho = ((np.abs(x) / a) ** power + (np.abs(y) / b) ** power) ** (1 / power)
    rho = np.maximum(rho, y / np.float32(0.93 * b)) + 0.02 * smooth_field(rng, shape, (5, 5, 3))
    front, back = np.clip(-y / np.float32(b), 0, 1), np.clip(y / np.float32(b), 0, 1)
    fat0 = rng.uniform(0.06, 0.17)
    fat = fat0 * (1 + 0.45 * smooth_field(rng, shape, (6, 6, 3))) + rng.uniform(0, 0.12) * front**2
    fat = np.clip(fat, 0.02, None) * (1 - 0.5 * back)  # thick in front, thin under the back
    inner = 1 - fat
    wall = rng.uniform(0.03, 0.05) + 0.03 * front**4  # rectus muscles in front
    cavity = rho < inner - wall

    hu = np.full(shape, _AIR_HU, dtype=np.float32)
    hu[rho < 1] = rng.normal(-105.0, 6.0)
    hu[rho < inner] = rng.uniform(35.0, 55.0)
    visceral = rng.normal(-95.0, 6.0) + 18.0 * smooth_field(rng, shape, (10, 10, 5))
    hu[cavity] = visceral[cavity]

    # Ribs: arcs within the wall, sloping down from back to front, none at the front.
    angle = np.arctan2(np.abs(x) / a, y / b)  # 0 at the back, pi at the front
    per_unit = rng.uniform(1.8, 2.6)
    phase = (z * per_unit + 0.45 * per_unit * angle + rng.uniform(0, 1)) % 1.0
    ribs = (phase < 0.25) & (angle > 0.4) & (angle < 2.3) & (z > rng.uniform(-0.5, -0.1))
    ribs &= (rho > inner - wall - 0.02) & (rho < inner - 0.005)

    sy = b / 0.51  # posterior structures follow the body's depth
    canal = patient.ellipse(0.0, 0.33 * sy, 0.03, 0.028)
    vertebra = patient.ellipse(0.0, 0.22 * sy, 0.08, 0.065)
    cancellous = patient.ellipse(0.0, 0.22 * sy, 0.065, 0.05)
    arch = patient.ellipse(0.0, 0.33 * sy, 0.05, 0.05) | patient.ellipse(0, 0.39 * sy, 0.016, 0.05)
    arch &= ~canal
    discs = ((z * 2.2 + rng.uniform(0, 1)) % 1.0) < 0.14
    erector = patient.ellipse(0.11, 0.37 * sy, 0.085, 0.07)
    erector |= patient.ellipse(-0.11, 0.37 * sy, 0.085, 0.07)
    psoas_r = 0.02 + 0.045 * np.clip((0.3 - z) / 1.2, 0, 1)  # grows towards the pelvis
    psoas = ((np.abs(x) - 0.12) / psoas_r) ** 2 + ((y - 0.2 * sy) / (0.8 * psoas_r)) ** 2 < 1
    aorta = patient.ellipse(0.035, 0.11 * sy, 0.034, 0.034)
    ivc = patient.ellipse(-0.085, 0.105 * sy, 0.042, 0.028)
    vessel_hu = {"aorta": rng.uniform(150.0, 250.0), "veins": rng.uniform(110.0, 190.0)}
    bone_hu = rng.uniform(500.0, 850.0)
    for mask, value in (
        ((erector | psoas) & (rho < inner), rng.uniform(40.0, 60.0)),
        (ribs, rng.uniform(350.0, 650.0)),
        (vertebra & discs, rng.uniform(70.0, 95.0)),
        (vertebra & ~discs, bone_hu),
        (cancellous & ~discs, rng.uniform(150.0, 260.0)),
        (arch, 0.85 * bone_hu),
        (canal, rng.uniform(10.0, 30.0)),
        (aorta & cavity, vessel_hu["aorta"]),
        (ivc & cavity, vessel_hu["veins"]),
    ):
        hu[np.broadcast_to(mask, shape)] = value
    solid = vertebra | canal | arch | erector | psoas | aorta | ivc | ribs
    k = 1 - fat0 - 0.04
    return hu, {
        "allowed": cavity & ~solid,
        "cavity": np.array([a * k, 0.95 * b * k, 1.0]),
        "drawn": {"body_axes": [a, b, power], "fat_depth": fat0, "vessel_hu": vessel_hu},
    }


def _place(
    rng: np.random.Generator, patient: PatientFrame, label: np.ndarray, body: dict, name: str
) -> np.ndarray:
    """Draw organ ``name`` (see :data:`_ORGANS`) and paint it on free voxels of ``label``.

    Shifts, scales and bends the organ at random; redraws (up to 20 times) when less than half
    of it lands on free cavity voxels, so every organ is present even in tiny volumes. Returns
    the accepted organ's metaball field.
    """
    spec = _ORGANS[name]
    for _ in range(20):
        shift = rng.normal(0, 0.05, 3) * [1, 1, 1.5]
        scale = rng.uniform(0.85, 1.15, 3)
        parts = []
        for control, radii in spec["sweeps"]:
            points = np.asarray(control) * body["cavity"] + shift + rng.normal(0, 0.02, (3, 3))
            parts.append(sweep(points, np.asarray(radii) * scale))
        for centre, radii, weight in spec.get("carve", []):
            parts.append([[*(np.asarray(centre) * body["cavity"] + shift), *radii, -weight]])
        bumps = parts[0][rng.integers(0, len(parts[0]), spec.get("bumps", 0))].copy()
        bumps[:, :3] += rng.normal(0, 0.12, (len(bumps), 3))
        bumps[:, 3:] = [0.08, 0.08, 0.08, 0.5]
        field = patient.metaballs(np.concatenate([*parts, bumps]))
        drawn = field > SURFACE
        mask = drawn & body["allowed"] & (label == 0)
        if mask.sum() >= max(3, 0.5 * drawn.sum()):
            label[mask] = _LABEL_OF[name]
            return field
    raise RuntimeError(f"could not place {name} in a {patient.grid.shape} volume")


def _hollow_viscera(
    rng: np.random.Generator, patient: PatientFrame, hu: np.ndarray, label: np.ndarray, body: dict
) -> None:
    """Stomach, colon and small-bowel loops on free voxels: a wall, fluid or stool inside and
    gas pockets (-1000 HU) on their anterior (non-dependent) side."""
    free = body["allowed"] & (label == 0)
    wall_hu = rng.uniform(25.0, 50.0)
    lumen_level = np.float32(np.exp(-0.5 * 0.6**2))  # lumen out to ~0.6 radii
    viscera = [(*_STOMACH, rng.uniform(0.0, 25.0), 0.4)]  # (control, radii, contents HU, gas)
    for control in _COLON:
        r = rng.uniform(0.055, 0.075)
        viscera.append((control, [(r, r, 1.6 * r)] * 3, rng.uniform(-80.0, 20.0), 0.6))
    for _ in range(int(rng.integers(9, 15))):
        start = rng.uniform([-0.6, -0.75, -0.95], [0.6, 0.1, 0.3])
        control = np.clip(
            np.cumsum([start, *rng.normal(0, [0.35, 0.35, 0.15], (2, 3))], axis=0), -0.85, 0.85
        )
        r = rng.uniform(0.035, 0.055)
        viscera.append((control, [(r, r, 1.6 * r)] * 3, rng.uniform(-10.0, 30.0), 0.3))
    for control, radii, contents_hu, gas_prob in viscera:
        points = np.asarray(control) * body["cavity"] + rng.normal(0, 0.03, (3, 3))
        balls = sweep(points, np.asarray(radii))
        field = patient.metaballs(balls)
        organ = free & (field > SURFACE)
        lumen = organ & (field > lumen_level)
        hu[organ] = wall_hu
        hu[lumen] = contents_hu
        balls[:, 1] -= 0.4 * balls[:, 4]  # gas floats to the front
        balls[:, 3:6] *= 0.6
        balls[:, 6] *= rng.random(len(balls)) < gas_prob
        hu[lumen & (patient.metaballs(balls) > SURFACE)] = _AIR_HU
        free &= ~organ


def synthesize_abdomen(
    out_dir: str | Path, *, cases: int, shape: tuple[int, int, int], seed: int = 0
) -> Path:
    """Write the held-out abdominal CT segmentation dataset and its volseg manifest.

    Layout: ``imagesTr/abdomen_000.nii.gz`` (int16 HU), ``labelsTr/abdomen_000.nii.gz`` (uint8,
    :data:`ABDOMEN_LABELS`), ``manifest.json`` (task segmentation, modality ``CT``) and
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
        kind="abdomen",
        make_case=make_abdomen_case,
        labels=ABDOMEN_LABELS,
        cases=cases,
        shape=shape,
        seed=seed,
    )
