from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    SurfaceDistanceMetric,
    compute_surface_dice,
)
from scipy import ndimage

from volseg.errors import VolsegError
from volseg.metrics import SEGMENTATION_METRICS, segmentation_metrics

SPACING = (0.5, 1.0, 3.0)


def cubes(shift: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """6^3 reference cube and the same cube shifted by ``shift`` voxels along X."""
    ref = np.zeros((16, 14, 14), np.uint8)
    pred = np.zeros_like(ref)
    ref[4:10, 4:10, 4:10] = 1
    pred[4 + shift : 10 + shift, 4:10, 4:10] = 1
    return pred, ref


def test_shifted_cubes_known_values():
    pred, ref = cubes(2)
    m = segmentation_metrics(pred, ref, [1], SPACING, tolerance_mm=0.75)[1]
    assert set(m) == set(SEGMENTATION_METRICS)
    # overlap 4x6x6 = 144 voxels of 216 each
    assert (m["TP"], m["FP"], m["FN"]) == (144, 72, 72)
    assert m["Dice"] == pytest.approx(2 / 3, abs=1e-12)
    assert m["IoU"] == pytest.approx(0.5, abs=1e-12)
    # Each surface has 152 voxels: 80 lie on the other surface (0 mm), 20 are 1 voxel (0.5 mm)
    # and 52 are 2 voxels (1.0 mm) away along X, in both directions.
    assert m["HD95"] == pytest.approx(1.0, abs=1e-12)
    assert m["ASSD"] == pytest.approx((20 * 0.5 + 52 * 1.0) / 152, abs=1e-12)
    assert m["NSD"] == pytest.approx(100 / 152, abs=1e-12)
    voxel_ml = 0.5 * 1.0 * 3.0 / 1000
    assert m["ref_ml"] == pytest.approx(216 * voxel_ml)
    assert m["pred_ml"] == pytest.approx(216 * voxel_ml)
    assert m["vol_diff_ml"] == 0 and m["vol_diff_rel"] == 0
    # a tolerance above every distance counts the whole surface
    assert segmentation_metrics(pred, ref, [1], SPACING, tolerance_mm=1.0)[1]["NSD"] == 1.0


def test_identical_masks_and_volume_difference():
    pred, ref = cubes(0)
    m = segmentation_metrics(pred, ref, [1], SPACING)[1]
    assert (m["Dice"], m["IoU"], m["HD95"], m["ASSD"], m["NSD"]) == (1, 1, 0, 0, 1)
    bigger = ref.copy()
    bigger[10, 4:10, 4:10] = 1  # one more 6x6 layer
    m = segmentation_metrics(bigger, ref, [1], SPACING)[1]
    assert m["vol_diff_ml"] == pytest.approx(36 * 1.5 / 1000)
    assert m["vol_diff_rel"] == pytest.approx(36 / 216)


def test_empty_conventions():
    empty = np.zeros((8, 8, 8), np.uint8)
    blob = empty.copy()
    blob[2:5, 2:5, 2:5] = 1
    both = segmentation_metrics(empty, empty, [1], SPACING)[1]
    assert (both["Dice"], both["IoU"], both["NSD"], both["HD95"], both["ASSD"]) == (1, 1, 1, 0, 0)
    assert both["TP"] == both["FP"] == both["FN"] == both["vol_diff_rel"] == 0
    ref_empty = segmentation_metrics(blob, empty, [1], SPACING)[1]
    assert (ref_empty["Dice"], ref_empty["IoU"], ref_empty["NSD"]) == (0, 0, 0)
    assert math.isnan(ref_empty["HD95"]) and math.isnan(ref_empty["ASSD"])
    assert math.isnan(ref_empty["vol_diff_rel"]) and ref_empty["FP"] == 27
    pred_empty = segmentation_metrics(empty, blob, [1], SPACING)[1]
    assert (pred_empty["Dice"], pred_empty["IoU"], pred_empty["NSD"]) == (0, 0, 0)
    assert math.isnan(pred_empty["HD95"]) and math.isnan(pred_empty["ASSD"])
    assert pred_empty["vol_diff_rel"] == -1 and pred_empty["FN"] == 27


def test_labels_and_tolerance_per_label():
    pred, ref = cubes(2)
    pred, ref = pred * 3, ref * 3  # label 3; label 1 absent from both
    out = segmentation_metrics(pred, ref, [1, 3], SPACING, tolerance_mm={1: 5.0, 3: 0.75})
    assert out[1]["Dice"] == 1.0
    assert out[3]["NSD"] == pytest.approx(100 / 152)
    with pytest.raises(VolsegError, match="no entry for labels \\[1\\]"):
        segmentation_metrics(pred, ref, [1, 3], SPACING, tolerance_mm={3: 1.0})
    with pytest.raises(ValueError, match="positive"):
        segmentation_metrics(pred, ref, [0], SPACING)


def test_surface_at_image_border_and_cropping_invariance():
    """Masks touching the array border have border voxels as surface; padding changes nothing."""
    pred, ref = blobs((20, 18, 10), seed=3, n_labels=2)
    ref[:, :, 0] = np.where(ref[:, :, 0] == 0, 1, ref[:, :, 0])  # touch the border
    tight = segmentation_metrics(pred, ref, [1, 2], SPACING)
    padded = segmentation_metrics(np.pad(pred, 3), np.pad(ref, 3), [1, 2], SPACING)
    for label in (1, 2):
        for key in SEGMENTATION_METRICS:
            assert tight[label][key] == pytest.approx(padded[label][key], abs=1e-12, nan_ok=True)


def blobs(shape, seed, n_labels=3, smooth=2.5):
    """Random smooth multi-label reference and an imperfect prediction of it."""
    rng = np.random.default_rng(seed)

    def field(s):
        f = ndimage.gaussian_filter(rng.normal(size=shape), s)
        return f / f.std()

    def labelled(noise):
        fields = np.stack([field(smooth) + noise * field(1.5) for _ in range(n_labels)])
        out = np.argmax(fields, axis=0) + 1
        return np.where(fields.max(axis=0) > 0.6, out, 0).astype(np.uint8)

    state = rng.bit_generator.state
    ref = labelled(0.0)
    rng.bit_generator.state = state  # same smooth fields, plus noise for the prediction
    pred = labelled(0.35)
    return pred, ref


def monai_metrics(pred, ref, labels, spacing, tolerances):
    def onehot(a):
        return torch.from_numpy(np.stack([a == v for v in [0, *labels]])[None].astype(np.float32))

    p, r = onehot(pred), onehot(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "Dice": DiceMetric(include_background=False)(p, r)[0],
            "HD95": HausdorffDistanceMetric(percentile=95)(p, r, spacing=spacing)[0],
            "ASSD": SurfaceDistanceMetric(symmetric=True)(p, r, spacing=spacing)[0],
            "NSD": compute_surface_dice(p, r, tolerances, spacing=list(spacing))[0],
        }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spacing", [(0.8, 1.1, 2.5), (1.0, 1.0, 1.0), (3.0, 0.7, 0.7)])
def test_agrees_with_monai(seed, spacing):
    pred, ref = blobs((32, 28, 18), seed)
    labels = [1, 2, 3]
    tolerances = [1.9, 3.3, 2.7]  # no grid distance equals these, so no <= tie can flip
    ours = segmentation_metrics(
        pred, ref, labels, spacing, tolerance_mm=dict(zip(labels, tolerances, strict=True))
    )
    theirs = monai_metrics(pred, ref, labels, spacing, tolerances)
    for i, label in enumerate(labels):
        assert ours[label]["Dice"] > 0.3  # a meaningful, imperfect prediction
        for key, values in theirs.items():
            # MONAI works in float32; 1e-5 relative covers its rounding.
            assert ours[label][key] == pytest.approx(float(values[i]), rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_atlas_116_labels_realistic_size():
    """116-label 181x217x181 atlas: correct against MONAI on a few labels; prints the time.

    Timing targets belong in benchmarks, so the time is printed, not asserted (about 2.5 s on
    2 CPU cores when written).
    """
    shape = (181, 217, 181)
    rng = np.random.default_rng(0)
    seeds = rng.uniform(0, 1, (116, 3)) * shape
    ref = _voronoi(shape, seeds, rng, 0.0)
    pred = _voronoi(shape, seeds + rng.normal(0, 1.5, seeds.shape), rng, 0.7)
    labels = list(range(1, 117))
    start = time.perf_counter()
    ours = segmentation_metrics(pred, ref, labels, (1.0, 1.2, 0.9), tolerance_mm=2.0)
    print(f"\n116 labels at {shape}: {time.perf_counter() - start:.2f} s")
    crop = tuple(slice(40, 140) for _ in range(3))  # MONAI on the full volume is slow
    counts = np.bincount(ref[crop].ravel(), minlength=117)[1:]
    some = [int(v) + 1 for v in np.argsort(counts)[-3:]]  # labels well inside the crop
    ours_crop = segmentation_metrics(pred[crop], ref[crop], some, (1.0, 1.2, 0.9))
    theirs = monai_metrics(pred[crop], ref[crop], some, (1.0, 1.2, 0.9), [2.0] * 3)
    for i, label in enumerate(some):
        for key in ("Dice", "HD95", "ASSD"):
            expected = float(theirs[key][i])
            assert ours_crop[label][key] == pytest.approx(expected, rel=1e-5, nan_ok=True)
    assert np.mean([ours[lab]["Dice"] for lab in labels]) > 0.5


def _voronoi(shape, seeds, rng, shift):
    """Label map: nearest seed (+1) inside an ellipsoid, with smoothly warped boundaries."""
    from scipy.spatial import cKDTree

    grid = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    warp = np.stack(
        [ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 8) for _ in range(3)],
        axis=-1,
    ).reshape(-1, 3)
    points = grid + 3 * warp / warp.std() + shift
    centre = (np.array(shape) - 1) / 2
    inside = (((points - centre) / (np.array(shape) * 0.45)) ** 2).sum(axis=1) < 1
    nearest = cKDTree(seeds).query(points, workers=2)[1] + 1
    return np.where(inside, nearest, 0).astype(np.uint8).reshape(shape)
