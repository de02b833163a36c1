"""A third CT generator, the male pelvis, kept as a held-out test (never tuned on).

Labels :data:`PELVIS_LABELS`: bladder, rectum, prostate, left and right femoral heads. What
makes it hard, and differs from the abdomen generators:

- **same mean, other texture**: the rectum (faeces mottled with gas) has the prostate's mean HU
  within a few HU (set per case), while the prostate, seminal vesicles and muscles are
  homogeneous; fluid-filled bowel loops have the urine's HU but a mottled content;
- femoral heads touch an unlabelled acetabulum and neck of the same bone HU;
- partial volume: every voxel is the average of 2 x 2 x 2-5 sub-voxels (box slice profile);
- correlated noise (white noise through a reconstruction kernel) whose amplitude grows with
  body size and towards the body centre, and a beam-hardening band between the femoral heads;
- per case: body and fat size, skeleton scale, bladder filling, organ shapes and positions,
  contrast phase (native, arterial, venous), noise, FOV, slice thickness, LPS/RAS/oblique grids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from volseg.io.image import Geometry, Image
from volseg.synth.pelvis_parts import (
    ScanFrame,
    ball,
    blob,
    body_section,
    capsule,
    grain,
    render_counts,
    rotation,
    scanner_noise,
    shell,
    texture_sigma,
    tube_along_z,
    wobble,
)
from volseg.synth.shapes import SynthCase, write_ct_segmentation_set

PELVIS_LABELS: dict[int, str] = {
    0: "background",
    1: "bladder",
    2: "rectum",
    3: "prostate",
    4: "femoral_head_left",
    5: "femoral_head_right",
}
TISSUES = (
    "air", "subcutaneous_fat", "muscle", "pelvic_fat", "cortex", "marrow", "vessel",
    "bowel_wall", "bowel_fluid", "faeces", "seminal_vesicle", "bladder_wall", "urine",
    "rectum_wall", "prostate",
)  # fmt: skip
_T = {name: i for i, name in enumerate(TISSUES)}


def _anatomy(rng: np.random.Generator) -> tuple[list[tuple], dict[str, Any]]:
    """The case's structures in paint order: ``(solid, tissue, label)``; and what was drawn."""
    s = rng.uniform(0.9, 1.1)  # skeleton scale
    w = rng.uniform(150.0, 205.0)
    d = w * rng.uniform(0.62, 0.75)
    fat = float(np.clip(8 + 0.35 * (w - 150) + rng.uniform(-5, 5), 6, 40))
    power = rng.uniform(2.2, 2.8)
    lobes = [(n, rng.uniform(-0.04, 0.04), rng.uniform(0, 2 * np.pi)) for n in (2, 3, 4)]
    yc = rng.uniform(5, 20) * s
    outer, inner = body_section(w, d, power, lobes), body_section(w - fat, d - fat, power, lobes)
    layers: list[tuple] = [
        (lambda x, y, z: outer(x, y - yc, z), "subcutaneous_fat", 0),
        (lambda x, y, z: inner(x, y - yc, z), "muscle", 0),
        (blob((0, 15 * s, 60), (62 * s * rng.uniform(0.9, 1.1), 50 * s, 130)), "pelvic_fat", 0),
    ]
    for side in (1, -1):  # ischiorectal fossae
        layers.append((blob((side * 35 * s, 40 * s, -45), (25 * s, 25 * s, 30)), "pelvic_fat", 0))

    def bone(make, label: int = 0, cortex: float = rng.uniform(2.0, 3.0)) -> list[tuple]:
        return [(make(0.0), "cortex", label), (make(-cortex), "marrow", label)]

    heads = {}
    for side, label in ((1, 4), (-1, 5)):  # +x is the patient's left
        c = (side * (92 * s + rng.uniform(-3, 3)), rng.uniform(-5, 5), rng.uniform(-2, 2))
        r = 23 * s * rng.uniform(0.92, 1.08)
        heads[label] = (c, r)
        tro = (c[0] + side * 45 * s, c[1] + 8, -25 * s)
        layers += bone(
            lambda e, c=c, side=side: capsule(
                c, (c[0] + side * 38 * s, c[1] + 5, -30 * s), 14 * s + e
            )
        )
        layers += bone(lambda e, t=tro: ball(t, 20 * s + e))
        layers += bone(
            lambda e, t=tro, side=side: capsule(t, (t[0] - side * 10, t[1], -220), 14 * s + e)
        )
        cup = shell(ball(c, r + 12 * s), ball(c, r + 2.5))
        hemi = np.array([-side * 0.6, 0.0, 0.8])
        layers.append(
            (
                lambda x, y, z, cup=cup, c=c, h=hemi, r=r: (
                    cup(x, y, z) & ((x - c[0]) * h[0] + (z - c[2]) * h[2] > -0.3 * r)
                ),
                "cortex",
                0,
            )
        )
        layers += bone(
            lambda e, side=side: blob(
                (side * 75 * s, 25 * s, 60 * s),
                (9 * s + e, 50 * s + e, 55 * s + e),
                axes=rotation(yaw=side * 0.5),
            )
        )
        layers += bone(
            lambda e, c=c, side=side: capsule(
                (c[0] - side * 15 * s, c[1] - 25 * s, -10 * s),
                (side * 4, -62 * s, -20 * s),
                9 * s + e,
            )
        )
        layers += bone(
            lambda e, c=c, side=side: capsule(
                (c[0] - side * 10 * s, c[1] + 20 * s, -15 * s),
                (side * 60 * s, 35 * s, -50 * s),
                11 * s + e,
            )
        )
    layers += bone(
        lambda e: blob(
            (0, 85 * s, 70 * s), (45 * s + e, 14 * s + e, 50 * s + e), axes=rotation(pitch=0.6)
        )
    )
    layers += bone(lambda e: capsule((0, 80 * s, 20 * s), (0, 65 * s, -15 * s), 6 * s + e))
    for label, (c, r) in heads.items():
        layers += bone(lambda e, c=c, r=r: ball(c, r + e), label)
    for side in (1, -1):  # external iliac / femoral artery and vein
        for dx, rad in ((0.0, 4.5), (8.0, 6.0)):
            x0 = side * (55 * s + dx)
            layers.append(
                (
                    tube_along_z(
                        lambda z, x0=x0, side=side: (
                            x0 + side * 0.2 * (40 - z),
                            -35 * s - 0.15 * (40 - z),
                        ),
                        lambda z, rad=rad: rad + 0 * z,
                        (-60, 140),
                    ),
                    "vessel",
                    0,
                )
            )

    # rectum: an S-curved tube along the sacrum with an ampulla
    y0, x0, xd = 38 * s + rng.uniform(-4, 4), rng.uniform(-6, 6), rng.uniform(-0.1, 0.1)
    r0, ra, za = rng.uniform(7, 10), rng.uniform(5, 12), rng.uniform(0, 25)
    top = rng.uniform(55, 75)

    def centre(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x0 + xd * z, y0 + 0.32 * z - 0.0012 * z * z

    def radius(z: np.ndarray) -> np.ndarray:
        return r0 + ra * np.exp(-(((z - za) / 25.0) ** 2))

    # prostate in front of the rectum, below the bladder; seminal vesicles between
    zp = rng.uniform(-22, -10)
    ps = (rng.uniform(17, 26), rng.uniform(12, 17), rng.uniform(14, 20))
    yr, rr = centre(np.float32(zp))[1], float(radius(np.float32(zp)))
    yp = float(yr) - rr - ps[1] - rng.uniform(1, 4)
    fill = rng.uniform(0, 1)
    bs = (28 + 32 * fill, 20 + 18 * fill, 20 + 30 * fill)
    zb, yb = zp + 0.7 * ps[2] + 0.9 * bs[2], -50 * s + bs[1] + rng.uniform(0, 6)
    wall = 2.5 + 2 * (1 - fill)
    # unlabelled look-alikes: bowel loops above the bladder (fluid or faeces), the sigmoid
    for _ in range(int(rng.integers(3, 7))):
        p0 = np.array([rng.uniform(-60, 60), rng.uniform(-40, 40), rng.uniform(zb, zb + 60)])
        p1 = p0 + rng.normal(size=3) * np.array([30, 20, 10])
        rl = rng.uniform(10, 16)
        content = "faeces" if rng.uniform() < 0.3 else "bowel_fluid"
        layers += [(capsule(p0, p1, rl), "bowel_wall", 0), (capsule(p0, p1, rl - 2.5), content, 0)]
    cx, cy = centre(np.float32(top))
    sig_end = (float(cx) + rng.uniform(-40, -20), float(cy) - 25, top + 30)
    layers += [
        (capsule((float(cx), float(cy), top), sig_end, 14), "bowel_wall", 0),
        (capsule((float(cx), float(cy), top), sig_end, 11), "faeces", 0),
    ]
    for side in (1, -1):
        a = (side * 5, yp + ps[1] + 4, zp + ps[2] * 0.8)
        b = (side * rng.uniform(20, 30), a[1] + 6, a[2] + rng.uniform(8, 15))
        layers.append((capsule(a, b, rng.uniform(5, 7)), "seminal_vesicle", 0))
    ripples, flat = wobble(rng, 0.08), rng.uniform(0, 0.5) * (1 - fill)
    inner_b = tuple(v - wall for v in bs)
    layers += [
        (blob((0, yb, zb), bs, ripples=ripples, flatten_top=flat), "bladder_wall", 1),
        (blob((0, yb, zb), inner_b, ripples=ripples, flatten_top=flat), "urine", 1),
        (
            blob(
                (0, yp, zp),
                ps,
                axes=rotation(pitch=rng.uniform(0.1, 0.4)),
                ripples=wobble(rng, 0.06),
            ),
            "prostate",
            3,
        ),  # fmt: skip
        (tube_along_z(centre, radius, (-55, top)), "rectum_wall", 2),
        (tube_along_z(centre, lambda z: radius(z) - 3.0, (-52, top)), "faeces", 2),
    ]
    drawn = {
        "body_half_width_mm": w, "body_half_depth_mm": d, "fat_mm": fat, "skeleton_scale": s,
        "bladder_fill": fill, "femoral_head_radius_mm": [heads[4][1], heads[5][1]],
    }  # fmt: skip
    return layers, drawn


def _painter(layers: list[tuple]):
    def paint(coords):
        x, y, z = coords
        tissue = np.zeros(x.shape, np.uint8)
        label = np.zeros(x.shape, np.uint8)
        for solid, name, value in layers:
            inside = solid(x, y, z)
            tissue[inside], label[inside] = _T[name], value
        return tissue, label

    return paint


def _scan(rng: np.random.Generator, shape: tuple[int, int, int], half_width: float):
    """Grid (FOV, slice thickness, orientation) and where the patient lies in it."""
    fov, cover = 2 * half_width * rng.uniform(1.1, 1.3), rng.uniform(115, 150)
    spacing = np.array([fov / shape[0], fov / shape[0], cover / shape[2]])
    scan = ("LPS", "RAS", "oblique")[int(rng.integers(3))]
    direction = np.diag([-1.0, -1.0, 1.0]) if rng.uniform() < 0.5 or scan == "RAS" else np.eye(3)
    if scan == "LPS":
        direction = np.eye(3)
    if scan == "oblique":
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        angle = np.radians(rng.uniform(2, 6))
        direction = (np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k) @ direction
    centre = np.array([rng.uniform(-20, 20), rng.uniform(-150, -100), rng.uniform(-800, -700)])
    z_mid = rng.uniform(-65, -50) + cover / 2
    target = centre + np.array([*(rng.uniform(-0.05, 0.05, 2) * fov), z_mid])
    origin = target - direction @ ((np.array(shape) - 1) / 2 * spacing)
    frame = ScanFrame(Geometry(shape, spacing, origin, direction), centre, rng.uniform(-0.14, 0.14))
    return frame, scan


def _means(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    phase = ("native", "arterial", "venous")[int(rng.choice(3, p=[0.35, 0.2, 0.45]))]
    enh = phase != "native"
    m = {"air": -1000.0, "subcutaneous_fat": rng.uniform(-115, -90)}
    m["muscle"] = rng.uniform(40, 55) + 8 * enh
    m["pelvic_fat"] = rng.uniform(-100, -80)
    m["cortex"], m["marrow"] = rng.uniform(900, 1300), rng.uniform(160, 320)
    m["vessel"] = {"native": rng.uniform(35, 50), "arterial": rng.uniform(220, 320)}.get(
        phase, rng.uniform(140, 200)
    )
    m["bowel_wall"] = m["muscle"] + 25 * enh
    m["urine"] = rng.uniform(2, 18)
    m["bowel_fluid"] = m["urine"] + rng.uniform(-4, 8)
    m["prostate"] = rng.uniform(30, 45) + rng.uniform(20, 35) * enh
    m["faeces"] = m["prostate"]  # re-centred on the rectum later
    m["seminal_vesicle"] = m["prostate"] + rng.uniform(-8, 8)
    m["bladder_wall"], m["rectum_wall"] = m["muscle"] + 15 * enh, m["muscle"] + 10 * enh
    return np.array([m[t] for t in TISSUES], np.float32), phase


# texture of each tissue: (grain field, std HU); "mottle" is the faeces model
_TEXTURE = {"subcutaneous_fat": ("soft", 6), "muscle": ("soft", 5), "pelvic_fat": ("fine", 12),
            "marrow": ("fine", 70), "bowel_fluid": ("fine", 15), "prostate": ("soft", 3),
            "urine": ("soft", 2), "seminal_vesicle": ("soft", 6), "vessel": ("soft", 3),
            "bladder_wall": ("soft", 5), "rectum_wall": ("soft", 5), "bowel_wall": ("soft", 5),
            "cortex": ("fine", 60)}  # fmt: skip


def make_pelvis_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> SynthCase:
    """One pelvis phantom: int16 HU image and uint8 label map (:data:`PELVIS_LABELS`)."""
    layers, drawn = _anatomy(rng)
    frame, scan = _scan(rng, shape, drawn["body_half_width_mm"])
    spacing = frame.geometry.spacing
    fz = int(np.clip(np.ceil(2 * spacing[2] / spacing[0]), 2, 5))
    tc, lc = render_counts(frame, _painter(layers), len(TISSUES), len(PELVIS_LABELS), (2, 2, fz))
    n = 4 * fz
    label = lc.argmax(axis=0).astype(np.uint8)
    for value in range(1, len(PELVIS_LABELS)):  # a tiny grid keeps every organ
        if not (label == value).any() and lc[value].any():
            label[np.unravel_index(lc[value].argmax(), label.shape)] = value
    means, phase = _means(rng)
    fields = {
        "soft": grain(rng, shape, texture_sigma(spacing, 4.0)),
        "fine": grain(rng, shape, texture_sigma(spacing, 2.0)),
    }
    mottle = grain(rng, shape, texture_sigma(spacing, 3.0))
    gas_fraction = rng.uniform(0.03, 0.12)
    gas = grain(rng, shape, texture_sigma(spacing, 4.0)) > np.quantile(
        rng.standard_normal(20000), 1 - gas_fraction
    )
    faeces = 45 * mottle + np.where(gas, -900.0 - means[_T["prostate"]], 0.0)
    image = np.zeros(shape, np.float32)
    for name, t in _T.items():
        if name == "faeces" or not tc[t].any():
            continue
        tex = _TEXTURE.get(name)
        value = means[t] + (tex[1] * fields[tex[0]] if tex else 0.0)
        image += tc[t] / n * value
    rect = label == 2
    share = tc[_T["faeces"]] / n
    base = image + share * (means[_T["prostate"]] + faeces)
    # the rectum's mean HU is the prostate's as imaged (partial volume included) within 6 HU
    target = float(base[label == 3].mean()) + rng.uniform(-6, 6)
    shift = (target - base[rect].mean()) / max(share[rect].mean(), 1e-3)
    image = base + share * shift
    # beam hardening between the femoral heads, then correlated scanner noise
    px, py, pz = frame.patient(np.moveaxis(np.indices(shape), 0, -1).astype(np.float32))
    w, d = drawn["body_half_width_mm"], drawn["body_half_depth_mm"]
    body = tc[_T["air"]] < n
    band = np.exp(-(py**2) / (2 * rng.uniform(3, 6) ** 2) - pz**2 / (2 * 25.0**2)) * (
        np.abs(px) < 90
    )
    image -= rng.uniform(10, 40) * band * body
    sigma0 = rng.uniform(8, 16) * (w / 170.0) ** 1.5
    sigma = (
        sigma0 * (0.75 + 0.5 * np.exp(-2 * ((px / w) ** 2 + (py / d) ** 2))) * (0.5 + 0.5 * body)
    )
    kernel = (rng.uniform(0.6, 1.1),) * 2 + (rng.uniform(0.0, 0.4),)
    image += scanner_noise(rng, shape, sigma_hu=sigma, correlation_voxels=kernel)
    hu = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    params = {
        **drawn, "scan": scan, "phase": phase, "spacing_mm": spacing.tolist(),
        "direction": frame.geometry.direction.tolist(), "patient_yaw_deg": np.degrees(frame.yaw),
        "noise_sigma_hu": sigma0, "noise_kernel_voxels": list(kernel), "oversample": [2, 2, fz],
        "rectum_gas_fraction": gas_fraction, "rectum_target_hu": target,
        "tissue_hu_mean": dict(zip(TISSUES, means.tolist(), strict=True)),
        "organ_volume_ml": {
            PELVIS_LABELS[v]: float((label == v).sum()) * voxel_ml for v in range(1, 6)
        },
    }  # fmt: skip
    return SynthCase(Image(hu, frame.geometry), Image(label, frame.geometry), params)


def synthesize_pelvis(
    out_dir: str | Path, *, cases: int, shape: tuple[int, int, int], seed: int = 0
) -> Path:
    """Write a male-pelvis CT segmentation dataset and its volseg manifest.

    Layout as the other CT sets: ``imagesTr/pelvis_000.nii.gz`` (int16 HU),
    ``labelsTr/pelvis_000.nii.gz`` (uint8, :data:`PELVIS_LABELS`), ``manifest.json`` and
    ``synth.json``. Case ``k`` depends only on ``seed`` and ``k``.

    Returns:
        The manifest path.
    """
    return write_ct_segmentation_set(
        out_dir, kind="pelvis", make_case=make_pelvis_case, labels=PELVIS_LABELS,
        cases=cases, shape=shape, seed=seed,
    )  # fmt: skip
