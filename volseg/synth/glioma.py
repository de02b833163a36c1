"""Multi-modal brain MRI phantoms with a glioma of random grade (T1, T1ce, T2, FLAIR).

The head is drawn on the canonical LPS grid of :mod:`volseg.synth.shapes`: scalp, skull,
CSF, grey and white matter, two ventricles with an enhancing choroid plexus (a distractor on
T1ce). The tumour sits at a random place in the brain and has up to three parts:

- label 1 ``core``: the tumour core that does not enhance: necrosis (dark on T1/T1ce, bright
  on T2) or solid non-enhancing tumour;
- label 2 ``oedema``: the surrounding FLAIR/T2-hyperintense oedema / infiltration;
- label 3 ``enhancing``: the (possibly patchy) rim bright on T1ce.

Classes are ``grade2``, ``grade3`` (``grades=2``) plus ``grade4`` (``grades=3``). A case's
severity ``s = grade_index / (grades - 1)`` moves the means of per-case feature
distributions that overlap on purpose: higher grades are larger, more irregular, carry more
oedema, enhance more often and more strongly and are more often necrotic, but some low-grade
tumours enhance faintly and some high-grade ones have no necrosis or enhancement, so no
single feature grades perfectly. Grades are balanced in every block of ``grades`` cases.

Intensities are arbitrary units, stored as whole numbers in float32, with a per-modality
gain (300-3000), a multiplicative bias field and Rician noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from volseg.data.manifest import Case, ImageSource, Manifest, save_manifest
from volseg.errors import VolsegError
from volseg.io import Image, write_image
from volseg.progress import track
from volseg.synth.shapes import (
    Ellipsoid,
    Grid,
    SynthCase,
    case_ids,
    case_rng,
    check_request,
    deformed_blob,
    geometry_params,
    orient,
    partial_volume,
    random_geometry,
    random_rotation,
    smooth_field,
    write_params,
)

MODALITIES: tuple[str, ...] = ("T1", "T1ce", "T2", "FLAIR")
TUMOUR_LABELS: dict[int, str] = {0: "background", 1: "core", 2: "oedema", 3: "enhancing"}

# Tissue signal per modality (T1, T1ce, T2, FLAIR), before gain, bias and noise.
_TISSUE = {
    "air": (0.0, 0.0, 0.0, 0.0),
    "scalp": (0.95, 0.95, 0.55, 0.70),
    "skull": (0.12, 0.12, 0.10, 0.10),
    "csf": (0.25, 0.25, 1.60, 0.15),
    "grey": (0.62, 0.64, 0.95, 0.85),
    "white": (0.85, 0.86, 0.62, 0.65),
    "plexus": (0.60, 1.30, 0.90, 0.70),
    "oedema": (0.55, 0.56, 1.25, 1.25),
    "solid": (0.50, 0.50, 1.15, 1.05),
    "necrosis": (0.30, 0.32, 1.50, 0.60),
    "enhancing": (0.55, 0.55, 1.00, 1.05),
}
_CODE = {name: i for i, name in enumerate(_TISSUE)}
_BRAIN_LEVEL = -0.16  # head level below which is brain (level = normalised radius - 1)


def grade_classes(grades: int) -> list[str]:
    """Class names for ``grades`` in {2, 3}: ``grade2``, ``grade3`` (, ``grade4``)."""
    if grades not in (2, 3):
        raise VolsegError(f"synth glioma: grades must be 2 or 3, got {grades}")
    return [f"grade{g}" for g in range(2, 2 + grades)]


def case_grade(seed: int, index: int, grades: int) -> int:
    """Grade index (0 = lowest) of case ``index``: a random permutation per block of cases."""
    block = index // grades
    order = np.random.default_rng([seed, 0x67726164, block]).permutation(grades)
    return int(order[index % grades])


def make_glioma_case(
    rng: np.random.Generator, shape: tuple[int, int, int], grade: int, grades: int = 2
) -> SynthCase:
    """One four-modality brain MRI with a glioma, in memory.

    Args:
        rng: the case's random generator (see :func:`volseg.synth.shapes.case_rng`).
        shape: ``(X, Y, Z)`` voxels; the head scales with it.
        grade: grade index, 0 (lowest) .. ``grades - 1``.
        grades: number of grades (2 or 3).

    Returns:
        ``SynthCase(image, label, params)``: a float32 ``(4, X, Y, Z)`` image in
        :data:`MODALITIES` order, the uint8 tumour map (:data:`TUMOUR_LABELS`) on the same
        geometry, and the drawn parameters. Spacing is about 1 mm, sometimes with thicker
        slices; the direction may be oblique and/or flipped.
    """
    classes = grade_classes(grades)
    if not 0 <= grade < grades:
        raise ValueError(f"grade index {grade} outside 0..{grades - 1}")
    severity = grade / (grades - 1)
    base = rng.uniform(0.9, 1.1)
    spacing = base * rng.uniform(0.95, 1.05, 3)
    if rng.random() < 0.25:
        spacing[2] = rng.uniform(1.5, 3.0)
    geometry, flips = random_geometry(rng, shape, spacing)
    grid = Grid(shape)

    codes, head_level = _head(rng, grid)
    label, tumour = _tumour(rng, grid, codes, head_level < _BRAIN_LEVEL, severity)

    contrast = {name: np.asarray(v) * rng.uniform(0.95, 1.05, 4) for name, v in _TISSUE.items()}
    contrast["enhancing"][1] += tumour["enhancement"]
    contrast["solid"][1] += 0.3 * tumour["enhancement"]  # faint leak when enhancing at all
    table = np.stack(list(contrast.values())).astype(np.float32)  # (tissues, modalities)

    texture = smooth_field(rng, shape, tuple(max(3, n // 5) for n in shape))
    hetero = np.where(label > 0, tumour["heterogeneity"], 0.03).astype(np.float32)
    modulation = 1 + hetero * texture
    gains = rng.uniform(300.0, 3000.0, 4)
    noise = rng.uniform(0.02, 0.05)
    sigma = (0.6, 0.6, 0.6 / max(1.0, spacing[2] / spacing[0]))
    image = np.empty((4, *shape), dtype=np.float32)
    for m in range(4):
        signal = partial_volume(table[codes, m] * modulation, sigma)
        signal *= np.exp(rng.uniform(0.05, 0.2) * smooth_field(rng, shape, (3, 3, 3)))
        # Rician magnitude |signal + n_re + i n_im|, computed in place to spare memory.
        signal += noise * rng.standard_normal(shape, dtype=np.float32)
        imag = rng.standard_normal(shape, dtype=np.float32)
        imag *= noise
        np.multiply(imag, imag, out=imag)
        np.multiply(signal, signal, out=signal)
        signal += imag
        np.sqrt(signal, out=signal)
        # Whole numbers, like scanner data: far below the noise, and files compress well.
        np.rint(signal * np.float32(gains[m]), out=image[m])

    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(label.ravel(), minlength=4)
    params: dict[str, Any] = {
        **geometry_params(geometry, flips),
        "grade": classes[grade],
        "severity": severity,
        **tumour,
        "volume_ml": {TUMOUR_LABELS[v]: counts[v] * voxel_ml for v in (1, 2, 3)},
        "gains": gains,
        "noise": noise,
    }
    return SynthCase(
        Image(orient(image, flips), geometry), Image(orient(label, flips), geometry), params
    )


def _head(rng: np.random.Generator, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Tissue codes (uint8, ``_CODE``) and the head's level (normalised radius - 1)."""
    shape = grid.shape
    head = Ellipsoid(
        np.array([0.0, 0.0, -0.05]) + rng.normal(0, 0.02, 3),
        np.array([0.78, 0.90, 0.92]) * rng.uniform(0.93, 1.05, 3),
        random_rotation(rng, 5.0),
    )
    full = tuple(slice(0, n) for n in shape)
    level = head.level(grid, full) + np.float32(0.015) * smooth_field(rng, shape, (5, 5, 5))
    folds = np.float32(0.05) * smooth_field(rng, shape, tuple(max(4, n // 4) for n in shape))
    tissue = np.full(shape, _CODE["air"], dtype=np.uint8)
    tissue[level < 0] = _CODE["scalp"]
    tissue[level < -0.06] = _CODE["skull"]
    tissue[level < -0.13] = _CODE["csf"]
    tissue[level < _BRAIN_LEVEL] = _CODE["grey"]
    tissue[(level + folds) < -0.30] = _CODE["white"]
    for side in (-1, 1):
        centre = np.array([0.11 * side, -0.02, 0.12]) + rng.normal(0, 0.015, 3)
        ventricle = Ellipsoid(centre, np.array([0.06, 0.26, 0.13]), random_rotation(rng, 8.0))
        box, v_level = deformed_blob(rng, grid, [ventricle], amplitude=0.12, cells=4)
        tissue[box][v_level < 0] = _CODE["csf"]
        plexus = Ellipsoid(centre + [0.0, 0.12, -0.02], np.array([0.03, 0.05, 0.03]), np.eye(3))
        box, p_level = deformed_blob(rng, grid, [plexus], amplitude=0.1, cells=3)
        tissue[box][p_level < 0] = _CODE["plexus"]
    return tissue, level


def _tumour(
    rng: np.random.Generator, grid: Grid, codes: np.ndarray, brain: np.ndarray, severity: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw the tumour's features for ``severity`` in [0, 1]; paint its tissues into ``codes``.

    Returns:
        ``(label, features)``: uint8 ``(X, Y, Z)`` map (:data:`TUMOUR_LABELS`) and the drawn
        features (radii and centre in normalised canonical units, fractions of the core
        radius for the rim and the necrosis).
    """
    s = severity
    size = float(np.clip(rng.normal(0.14 + 0.05 * s, 0.04), 0.07, 0.30))
    oedema = float(np.clip(rng.normal(1.5 + 0.3 * s, 0.3), 1.1, 2.5))
    irregular = float(np.clip(rng.normal(0.08 + 0.12 * s, 0.04), 0.02, 0.3))
    enhances = bool(rng.random() < 0.25 + 0.55 * s)
    strength = float(rng.uniform(0.1, 0.35) + 0.45 * s) if enhances else 0.0
    coverage = float(np.clip(rng.uniform(0.3, 0.7) + 0.3 * s, 0.0, 1.0)) if enhances else 0.0
    necrotic = bool(rng.random() < 0.15 + 0.6 * s)
    necrosis = float(rng.uniform(0.3, 0.65)) if necrotic else 0.0
    features = {
        "core_radius": size,
        "oedema_factor": oedema,
        "irregularity": irregular,
        "enhancement": strength,
        "enhancing_coverage": coverage,
        "rim_thickness": float(rng.uniform(0.15, 0.35)),
        "necrosis_fraction": necrosis,
        "heterogeneity": float(0.03 + 0.07 * s + rng.uniform(0, 0.04)),
    }
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    reach = 0.84 * np.array([0.78, 0.90, 0.92]) - 1.3 * size  # keep the core in the brain
    centre = direction * rng.uniform(0.1, 0.85) * np.maximum(reach, 0.05) + [0, 0, -0.05]
    features["centre_normalised"] = centre
    radii = size * rng.uniform(0.75, 1.25, 3)
    tilt = random_rotation(rng, 90.0)
    label = np.zeros(grid.shape, dtype=np.uint8)

    cloud = Ellipsoid(centre, radii * oedema, tilt)
    box, o_level = deformed_blob(rng, grid, [cloud], amplitude=0.15 + irregular, cells=6)
    # Oedema spreads along white matter and spares CSF spaces; deep inside it takes all.
    tissue = codes[box]
    spread = (tissue == _CODE["white"]) | ((o_level < -0.3) & (tissue == _CODE["grey"]))
    oedema_mask = (o_level < 0) & brain[box] & spread
    label[box][oedema_mask] = 2
    codes[box][oedema_mask] = _CODE["oedema"]

    core = Ellipsoid(centre, radii, tilt)
    box, c_level = deformed_blob(rng, grid, [core], amplitude=irregular, cells=5)
    inside = (c_level < 0) & brain[box]
    label[box][inside] = 1
    codes[box][inside] = _CODE["solid"]
    if necrotic:  # the innermost part of the core
        codes[box][inside & (c_level < necrosis - 1)] = _CODE["necrosis"]
    if enhances:
        patches = smooth_field(rng, c_level.shape, (4, 4, 4))
        rim = inside & (c_level > -features["rim_thickness"]) & (patches > 1.5 - 3 * coverage)
        label[box][rim] = 3
        codes[box][rim] = _CODE["enhancing"]
    return label, features


def synthesize_glioma(
    out_dir: str | Path,
    *,
    cases: int,
    shape: tuple[int, int, int],
    seed: int = 0,
    grades: int = 2,
) -> Path:
    """Write a glioma grading dataset (four MRI modalities per case) and its manifest.

    Layout: ``imagesTr/glioma_000_<T1|T1ce|T2|FLAIR>.nii.gz`` (float32, same grid),
    ``labelsTr/glioma_000.nii.gz`` (uint8 :data:`TUMOUR_LABELS`), ``manifest.json`` (task
    classification, each case's ``class`` its grade, ``mask`` and ``label`` the tumour map)
    and ``synth.json`` (the request and each case's drawn parameters). Case ``k`` depends only
    on ``seed`` and ``k``.

    Args:
        out_dir: output folder (created).
        cases: number of cases.
        shape: ``(X, Y, Z)`` voxels per case.
        seed: random seed.
        grades: 2 (``grade2``/``grade3``) or 3 (adds ``grade4``).

    Returns:
        The manifest path.
    """
    classes = grade_classes(grades)
    shape = check_request(cases, shape)
    out_dir = Path(out_dir).resolve()
    entries, drawn = [], []
    for k, case_id in track(enumerate(case_ids("glioma", cases)), "synth glioma", total=cases):
        grade = case_grade(seed, k, grades)
        image, label, params = make_glioma_case(case_rng(seed, k), shape, grade, grades)
        sources = {}
        for m, modality in enumerate(MODALITIES):
            path = out_dir / "imagesTr" / f"{case_id}_{modality}.nii.gz"
            sources[modality] = ImageSource(write_image(image.channel(m), path))
        label_path = write_image(label, out_dir / "labelsTr" / f"{case_id}.nii.gz", label=True)
        entries.append(
            Case(case_id, sources, label=label_path, target=classes[grade], mask=label_path)
        )
        drawn.append({"id": case_id, **params})
    request = {"kind": "glioma", "cases": cases, "shape": list(shape), "seed": seed}
    write_params(
        out_dir,
        {
            **request,
            "grades": grades,
            "classes": classes,
            "labels": TUMOUR_LABELS,
            "cases_drawn": drawn,
        },
    )
    manifest = Manifest(
        "synthetic_glioma",
        "classification",
        list(MODALITIES),
        entries,
        labels=TUMOUR_LABELS,
        classes=classes,
    )
    return save_manifest(manifest, out_dir / "manifest.json")
