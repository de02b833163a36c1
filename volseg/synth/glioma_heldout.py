"""A second glioma MRI generator, written apart from :mod:`volseg.synth.glioma`, kept as a
held-out grading test that no recipe is tuned on.

Same layout and labels as :func:`volseg.synth.synthesize_glioma` (T1, T1ce, T2, FLAIR; labels
1 core, 2 oedema, 3 enhancing; classes ``grade2``, ``grade3`` (, ``grade4``)), other models:

- **Anatomy in millimetres.** The head is an ellipsoid sized to the in-plane field of view
  with a slightly lumpy outline: fatty scalp, dark skull, CSF with a falx, an enhancing dural
  lining (a distractor on T1ce), a gyral grey-matter ribbon, deep grey nuclei and two lateral
  ventricles. Slices are 1-3 mm apart (in-plane 0.8-1.2 mm), so a thin stack is a slab of
  the head, as in a real anisotropic scan.
- **Tumours** are unions of 1-7 spherical lobes with margins roughened by a smooth noise
  field, sometimes with a satellite focus; oedema spreads from the margin (in tumour radii)
  further in white matter than in grey matter.
- **Grade cues** follow one latent aggressiveness per case, drawn from overlapping
  distributions per grade. Aggressive tumours more often enhance (a ring around a necrotic
  core, or nodular patches), have more oedema, more lobes and a more heterogeneous texture;
  indolent ones are T2/FLAIR bright, homogeneous, non-enhancing and sometimes show the
  T2-FLAIR mismatch (FLAIR darker than T2 in the solid tumour). Every cue has its own noise
  on top of the latent, so each cue grades only partly.
- **Scanner**: per-case tissue contrast jitter, a gain per modality, a smooth multiplicative
  bias field (the exponential of a random quadratic polynomial), Rician noise, and in some
  cases one missing modality (left out of the manifest, as a real archive does).

Case ``k`` depends only on ``seed`` and ``k``; grades are balanced in each block of ``grades``
cases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from volseg.data.manifest import Case, ImageSource, Manifest, save_manifest
from volseg.errors import VolsegError
from volseg.io import Image, write_image
from volseg.progress import track
from volseg.synth.shapes import (
    SynthCase,
    case_ids,
    check_request,
    geometry_params,
    orient,
    random_geometry,
    write_params,
)

MODALITIES: tuple[str, ...] = ("T1", "T1ce", "T2", "FLAIR")
TUMOUR_LABELS: dict[int, str] = {0: "background", 1: "core", 2: "oedema", 3: "enhancing"}
MISSING_PROB = 0.12  # chance that a case lacks one modality

# Relative signal per tissue and modality (T1, T1ce, T2, FLAIR), before per-case jitter.
_SIGNAL: dict[str, tuple[float, float, float, float]] = {
    "air": (0.0, 0.0, 0.0, 0.0),
    "scalp": (1.25, 1.27, 0.85, 0.75),
    "skull": (0.12, 0.12, 0.10, 0.08),
    "dura": (0.70, 1.45, 0.70, 0.60),
    "csf": (0.28, 0.29, 1.60, 0.12),
    "grey": (0.72, 0.74, 0.85, 0.85),
    "white": (1.00, 1.01, 0.60, 0.68),
    "deep": (0.82, 0.83, 0.74, 0.78),
    "solid": (0.62, 0.64, 1.20, 1.15),
    "necrosis": (0.35, 0.36, 1.45, 0.55),
    "oedema": (0.78, 0.79, 1.05, 1.20),
}
_TISSUES = list(_SIGNAL)
_CODE = {name: i for i, name in enumerate(_TISSUES)}


def heldout_case_rng(seed: int, index: int) -> np.random.Generator:
    """Random generator of case ``index``: its own stream, apart from the other generators'."""
    return np.random.default_rng(np.random.SeedSequence([seed, 0x484F4C44], spawn_key=(index,)))


def heldout_grade(seed: int, index: int, grades: int) -> int:
    """Grade index (0 = lowest) of case ``index``; each block of ``grades`` cases has each once."""
    order = np.random.default_rng([seed, 0x4752, index // grades]).permutation(grades)
    return int(order[index % grades])


def _classes(grades: int) -> list[str]:
    if grades not in (2, 3):
        raise VolsegError(f"synth glioma-heldout: --grades must be 2 or 3, got {grades}")
    return [f"grade{g}" for g in range(2, 2 + grades)]


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def _noise(rng: np.random.Generator, mm: list[np.ndarray], wavelength: float) -> np.ndarray:
    """Smooth unit-variance noise on the grid of axis coordinates ``mm``, features of about
    ``wavelength`` mm (cubic interpolation of a coarse white-noise lattice)."""
    lo = [a[0] for a in mm]
    cells = [max(2, int(np.ceil((a[-1] - a[0]) / wavelength)) + 1) for a in mm]
    lattice = rng.standard_normal([c + 2 for c in cells])
    idx = [(a - a0) / wavelength + 1.0 for a, a0 in zip(mm, lo, strict=True)]
    coords = np.meshgrid(*idx, indexing="ij")
    field = ndimage.map_coordinates(lattice, coords, order=3, mode="nearest")
    return ((field - field.mean()) / (field.std() + 1e-6)).astype(np.float32)


def _cues(rng: np.random.Generator, severity: float) -> dict[str, Any]:
    """Per-case tumour character from one latent aggressiveness; each cue with its own noise."""
    a = float(np.clip(rng.normal(0.28 + 0.44 * severity, 0.2), 0.0, 1.0))
    enhances = bool(rng.random() < _sigmoid((a - 0.5) * 9.0))
    necrotic = enhances and bool(rng.random() < _sigmoid((a - 0.55) * 8.0))
    strength = rng.uniform(0.35, 0.9) * (0.6 + 0.6 * a) if enhances else rng.uniform(0.0, 0.15)
    return {
        "aggressiveness": a,
        "enhances": enhances,
        "necrotic": necrotic,
        "enhancement": float(strength),
        "enhancing_fraction": float(rng.uniform(0.55, 1.0) if enhances else 0.0),
        "oedema_extent": float(rng.uniform(0.1, 0.3) + 0.9 * a * rng.uniform(0.4, 1.3)),
        "heterogeneity": float(0.03 + 0.18 * a * rng.uniform(0.4, 1.5)),
        "lobes": int(min(7, 1 + rng.poisson(0.8 + 2.5 * a))),
        "irregularity": float(0.08 + 0.3 * a * rng.uniform(0.5, 1.5)),
        "satellite": bool(rng.random() < 0.05 + 0.25 * a),
        "flair_mismatch": bool(a < 0.4 and not enhances and rng.random() < 0.35),
    }


def _head(
    rng: np.random.Generator, mm: list[np.ndarray], fov: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Canonical (LPS) tissue codes, a white-matter fraction in [0, 1] and head sizes (mm)."""
    ay = 0.47 * fov[1] * rng.uniform(0.9, 1.0)
    ax = ay * rng.uniform(0.8, 0.9)
    az = ay * rng.uniform(0.8, 0.9)
    z0 = rng.uniform(-0.25, 0.25) * max(az - fov[2] / 2, 0.0)
    x, y, z = np.meshgrid(*mm, indexing="ij")
    zz = z - z0
    r = np.sqrt((x / ax) ** 2 + (y / ay) ** 2 + (zz / az) ** 2)
    r = r * (1.0 + 0.02 * _noise(rng, mm, 40.0))
    tissue = np.full(r.shape, _CODE["air"], np.uint8)
    for name, edge in (("scalp", 1.0), ("skull", 0.93), ("dura", 0.885), ("csf", 0.875)):
        tissue[r < edge] = _CODE[name]
    brain = r < 0.86
    ribbon = 0.72 + 0.05 * _noise(rng, mm, 6.0)  # gyral folding of the cortex
    tissue[brain] = _CODE["white"]
    tissue[brain & (r > ribbon)] = _CODE["grey"]
    for side in (-1.0, 1.0):
        deep = ((x - side * 0.22 * ax) / (0.13 * ax)) ** 2 + ((y - 0.05 * ay) / (0.2 * ay)) ** 2
        tissue[brain & (deep + (zz / (0.16 * az)) ** 2 < 1)] = _CODE["deep"]
        vent = ((x - side * 0.1 * ax) / (0.065 * ax)) ** 2 + ((y + 0.04 * ay) / (0.32 * ay)) ** 2
        tissue[brain & (vent + ((zz - 0.1 * az) / (0.17 * az)) ** 2 < 1)] = _CODE["csf"]
    tissue[brain & (np.abs(x) < 0.9) & (zz > 0.15 * az)] = _CODE["csf"]  # falx cerebri
    white = ndimage.gaussian_filter((tissue == _CODE["white"]).astype(np.float32), 1.5)
    return tissue, white, {"head_mm": [ax, ay, az], "head_z0_mm": z0}


def _tumour_level(
    rng: np.random.Generator, mm: list[np.ndarray], centre: np.ndarray, radius: float, cues: dict
) -> np.ndarray:
    """Signed level of the tumour (< 0 inside, about mm / radius outside) from its lobes."""
    x, y, z = np.meshgrid(*mm, indexing="ij")
    level = np.full(x.shape, np.inf, np.float32)
    foci = [(centre, radius, cues["lobes"])]
    if cues["satellite"]:
        step = rng.normal(size=3)
        far = centre + step / np.linalg.norm(step) * radius * rng.uniform(1.8, 2.6)
        foci.append((far, radius * rng.uniform(0.3, 0.5), 1))
    for c0, r0, lobes in foci:
        for i in range(lobes):
            step = rng.normal(size=3)
            c = c0 + (0 if i == 0 else step / np.linalg.norm(step) * r0 * rng.uniform(0.3, 0.8))
            r = r0 * (1.0 if i == 0 else rng.uniform(0.4, 0.8))
            d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / r - 1.0
            level = np.minimum(level, d * r / radius)
    rough = _noise(rng, mm, max(radius * 0.6, 2.0))
    return level + cues["irregularity"] * rough


def make_heldout_case(
    rng: np.random.Generator, shape: tuple[int, int, int], grade: int, grades: int = 2
) -> SynthCase:
    """One held-out glioma case in memory.

    Args:
        rng: the case's generator (:func:`heldout_case_rng`).
        shape: ``(X, Y, Z)`` voxels.
        grade: grade index, 0 = lowest.
        grades: number of grades (2 or 3).

    Returns:
        A :class:`SynthCase`: image ``(4, X, Y, Z)`` float32 in :data:`MODALITIES` order (all
        four drawn; ``params["missing"]`` names a modality the dataset leaves out, or None),
        label uint8 :data:`TUMOUR_LABELS`, params the drawn values.
    """
    severity = grade / (grades - 1)
    spacing = np.array([rng.uniform(0.8, 1.2)] * 2 + [rng.uniform(1.0, 3.0)])
    spacing[1] *= rng.uniform(0.95, 1.05)
    fov = spacing * np.asarray(shape)
    mm = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    tissue, white, head = _head(rng, mm, fov)
    cues = _cues(rng, severity)
    ax, ay, az = head["head_mm"]
    radius = ax * rng.uniform(0.13, 0.22) * (0.85 + 0.35 * cues["aggressiveness"])
    angle, rho = rng.uniform(0, 2 * np.pi), 0.5 * np.sqrt(rng.uniform(0.05, 1.0))
    zc = rng.uniform(-0.25, 0.25) * min(fov[2], az)
    centre = np.array([rho * ax * np.cos(angle), rho * ay * np.sin(angle), zc])
    level = _tumour_level(rng, mm, centre, radius, cues)

    brain = np.isin(tissue, [_CODE[t] for t in ("white", "grey", "deep", "csf")])
    tumour = brain & (level < 0)
    label = np.zeros(tissue.shape, np.uint8)
    comp = tissue.copy()
    comp[tumour] = _CODE["solid"]
    label[tumour] = 1
    enh = np.zeros(tissue.shape, np.float32)
    patch = _noise(rng, mm, max(radius * 0.5, 2.0))
    patchy = patch > np.quantile(patch, 1.0 - cues["enhancing_fraction"])
    if cues["necrotic"]:
        rim = rng.uniform(1.5, 4.0) / radius  # rim thickness in level units
        necrosis = tumour & (level < -rim)
        comp[necrosis] = _CODE["necrosis"]
        ring = tumour & ~necrosis & patchy
        enh[ring] = 1.0
    elif cues["enhances"]:
        enh[tumour & patchy] = 1.0
    else:
        enh[tumour & patchy] = rng.uniform(0.0, 1.0)  # faint patchy uptake (no label)
    if cues["enhances"]:
        label[enh > 0.5] = 3
    oedema_reach = (
        radius * cues["oedema_extent"] * (0.45 + 0.8 * white) * (1 + 0.3 * _noise(rng, mm, 8.0))
    )
    parenchyma = brain & (tissue != _CODE["csf"])
    oedema = parenchyma & ~tumour & (level * radius < oedema_reach)
    comp[oedema] = _CODE["oedema"]
    label[oedema] = 2

    images = []
    texture = _noise(rng, mm, 3.0)
    fine = _noise(rng, mm, 10.0)
    x, y, z = np.meshgrid(*[a / (f / 2) for a, f in zip(mm, fov, strict=True)], indexing="ij")
    terms = [x, y, z, x * y, x * z, y * z, x * x, y * y, z * z]
    gains = np.exp(rng.uniform(np.log(200), np.log(4000), size=len(MODALITIES)))
    for m in range(len(MODALITIES)):
        table = np.array([_SIGNAL[t][m] for t in _TISSUES]) * rng.normal(1, 0.05, len(_TISSUES))
        if m == 3 and cues["flair_mismatch"]:
            table[_CODE["solid"]] *= rng.uniform(0.55, 0.75)
        img = table[comp].astype(np.float32)
        img *= 1.0 + 0.03 * fine
        img[tumour] *= 1.0 + cues["heterogeneity"] * texture[tumour]
        if m == 1:
            img += cues["enhancement"] * enh * (1.0 + 0.25 * texture)
        img = ndimage.gaussian_filter(img, (0.6, 0.6, 0.35), truncate=3.0)
        bias = np.exp(sum(c * t for c, t in zip(rng.normal(0, 0.08, 9), terms, strict=True)))
        img = gains[m] * img * bias
        sigma = gains[m] * rng.uniform(0.015, 0.045)
        real = img + rng.normal(0, sigma, img.shape)
        img = np.sqrt(real**2 + rng.normal(0, sigma, img.shape) ** 2)  # Rician magnitude
        images.append(img.astype(np.float32))
    missing = MODALITIES[rng.integers(4)] if rng.random() < MISSING_PROB else None

    geometry, flips = random_geometry(rng, shape, spacing)
    image = Image(orient(np.stack(images), flips), geometry)
    label_image = Image(orient(label, flips), geometry)
    params = {
        "grade": _classes(grades)[grade],
        "severity": severity,
        **cues,
        "tumour_radius_mm": radius,
        "tumour_centre_mm": centre,
        "missing": missing,
        **head,
        **geometry_params(geometry, flips),
    }
    return SynthCase(image, label_image, params)


def synthesize_glioma_heldout(
    out_dir: str | Path,
    *,
    cases: int,
    shape: tuple[int, int, int],
    seed: int = 0,
    grades: int = 2,
) -> Path:
    """Write the held-out glioma grading dataset and its manifest.

    Layout as :func:`volseg.synth.synthesize_glioma`: ``imagesTr/heldout_000_<modality>.nii.gz``
    (float32), ``labelsTr/heldout_000.nii.gz`` (uint8 :data:`TUMOUR_LABELS`), ``manifest.json``
    (classification; ``class`` the grade, ``mask`` and ``label`` the tumour map; a case missing
    a modality has no file and no manifest entry for it) and ``synth.json``.

    Args:
        out_dir: output folder (created).
        cases: number of cases.
        shape: ``(X, Y, Z)`` voxels per case; the slice spacing (Z) is 1-3 mm per case.
        seed: random seed; case ``k`` depends only on ``seed`` and ``k``.
        grades: 2 (``grade2``/``grade3``) or 3 (adds ``grade4``).

    Returns:
        The manifest path.
    """
    classes = _classes(grades)
    shape = check_request(cases, shape)
    out_dir = Path(out_dir).resolve()
    entries, drawn = [], []
    ids = case_ids("heldout", cases)
    for k, case_id in track(enumerate(ids), "synth glioma-heldout", total=cases):
        grade = heldout_grade(seed, k, grades)
        image, label, params = make_heldout_case(heldout_case_rng(seed, k), shape, grade, grades)
        sources = {}
        for m, modality in enumerate(MODALITIES):
            if modality != params["missing"]:
                path = out_dir / "imagesTr" / f"{case_id}_{modality}.nii.gz"
                sources[modality] = ImageSource(write_image(image.channel(m), path))
        label_path = write_image(label, out_dir / "labelsTr" / f"{case_id}.nii.gz", label=True)
        entries.append(
            Case(case_id, sources, label=label_path, target=classes[grade], mask=label_path)
        )
        drawn.append({"id": case_id, **params})
    write_params(
        out_dir,
        {
            "kind": "glioma-heldout",
            "cases": cases,
            "shape": list(shape),
            "seed": seed,
            "grades": grades,
            "classes": classes,
            "labels": TUMOUR_LABELS,
            "cases_drawn": drawn,
        },
    )
    manifest = Manifest(
        "synthetic_glioma_heldout",
        "classification",
        list(MODALITIES),
        entries,
        labels=TUMOUR_LABELS,
        classes=classes,
    )
    return save_manifest(manifest, out_dir / "manifest.json")
