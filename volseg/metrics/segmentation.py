"""Per-case, per-label segmentation metrics at the reference's physical spacing (mm).

Every label gets the same set of numbers (:data:`SEGMENTATION_METRICS`): overlap (Dice, IoU,
voxel counts), surface distances (HD95, ASSD in mm; NSD at a tolerance in mm) and volumes (ml).
Distance definitions match MONAI's metrics; see :mod:`volseg.metrics.surface`. What happens
when the reference and/or the prediction is empty is fixed by :data:`CONVENTIONS`, which
``summary.json`` carries so that every report states it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from volseg.errors import VolsegError
from volseg.metrics import surface

SEGMENTATION_METRICS = (
    "Dice",
    "IoU",
    "HD95",
    "ASSD",
    "NSD",
    "TP",
    "FP",
    "FN",
    "ref_ml",
    "pred_ml",
    "vol_diff_ml",
    "vol_diff_rel",
)
"""Keys of every per-label result; distances in mm, volumes in ml, counts in voxels."""

NAN = float("nan")

CONVENTIONS: dict[str, str] = {
    "both_empty": (
        "label absent from reference and prediction: Dice=1, IoU=1, NSD=1, HD95=0, ASSD=0, "
        "vol_diff_rel=0 (a correct 'absent' call scores perfectly)"
    ),
    "reference_empty": (
        "label absent from the reference but predicted: Dice=0, IoU=0, NSD=0, "
        "HD95=ASSD=NaN (no reference surface to measure to), vol_diff_rel=NaN"
    ),
    "prediction_empty": (
        "label in the reference but not predicted: Dice=0, IoU=0, NSD=0, "
        "HD95=ASSD=NaN (no predicted surface to measure from), vol_diff_rel=-1"
    ),
    "nan_in_aggregates": (
        "NaN values are left out of means, std, medians and CIs; the summary counts them per "
        "label, so a mean HD95 covers only cases where both masks exist"
    ),
    "surface": (
        "boundary voxels: foreground voxels with a 6-neighbour in the background or outside "
        "the image; distances are Euclidean in mm between voxel centres (spacing-scaled)"
    ),
    "HD95": (
        "max of the two directed 95th percentiles (linear interpolation) of surface-to-surface "
        "distances, as MONAI HausdorffDistanceMetric(percentile=95)"
    ),
    "ASSD": (
        "mean of both directed surface-distance sets pooled, as MONAI "
        "SurfaceDistanceMetric(symmetric=True)"
    ),
    "NSD": (
        "fraction of both surfaces' boundary voxels within tolerance_mm (<=) of the other "
        "surface, as MONAI compute_surface_dice(use_subvoxels=False)"
    ),
    "volumes": (
        "ref_ml, pred_ml = voxel count x voxel volume / 1000; vol_diff_ml = pred_ml - ref_ml; "
        "vol_diff_rel = vol_diff_ml / ref_ml"
    ),
}

_DISTANCES_UNDEFINED = {"HD95": NAN, "ASSD": NAN}


def segmentation_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float],
    *,
    tolerance_mm: float | Mapping[int, float] = 2.0,
) -> dict[int, dict[str, float]]:
    """Overlap, surface-distance and volume metrics for each label of one case.

    Args:
        pred: predicted integer label map ``(X, Y, Z)`` (bool is read as label 1).
        ref: reference label map, same shape and grid as ``pred``.
        labels: positive label values to score (background 0 is never scored).
        spacing: voxel size in mm along X, Y, Z (the reference's).
        tolerance_mm: NSD tolerance in mm, one for all labels or one per label.

    Returns:
        label -> {metric: value} with the keys of :data:`SEGMENTATION_METRICS`; HD95 and ASSD
        in mm, volumes in ml, TP/FP/FN in voxels. Empty masks follow :data:`CONVENTIONS`.

    Raises:
        ValueError: on mismatched shapes, non-integer arrays, labels <= 0 or bad spacing.
        VolsegError: if a per-label ``tolerance_mm`` lacks one of ``labels``.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and ref {ref.shape} must be equal 3D shapes")
    if pred.dtype.kind not in "biu" or ref.dtype.kind not in "biu":
        raise ValueError(f"label maps must be integer or bool, got {pred.dtype} and {ref.dtype}")
    spacing = [float(s) for s in spacing]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive mm values, got {spacing}")
    labels = [int(label) for label in labels]
    if any(label <= 0 for label in labels):
        raise ValueError(f"labels must be positive (background 0 is not scored), got {labels}")
    tolerances = nsd_tolerances(tolerance_mm, labels)
    voxel_ml = math.prod(spacing) / 1000.0
    boxes = surface.label_boxes(pred, ref, labels)
    results = {}
    for label in labels:
        box = boxes[label]
        if box is None:
            results[label] = both_empty()
            continue
        results[label] = _label_metrics(
            pred[box] == label, ref[box] == label, spacing, tolerances[label], voxel_ml
        )
    return results


def both_empty() -> dict[str, float]:
    """The metrics of a label absent from both reference and prediction (see CONVENTIONS)."""
    values = dict.fromkeys(SEGMENTATION_METRICS, 0.0)
    values.update(Dice=1.0, IoU=1.0, NSD=1.0)
    return values


def nsd_tolerances(tolerance_mm: float | Mapping[int, float], labels: Sequence[int]) -> dict:
    """label -> NSD tolerance in mm from one number or a per-label mapping.

    Raises:
        VolsegError: a mapping without an entry for some label, or a negative tolerance.
    """
    if isinstance(tolerance_mm, Mapping):
        table = {int(k): float(v) for k, v in tolerance_mm.items()}
        missing = [label for label in labels if label not in table]
        if missing:
            raise VolsegError(
                f"tolerance_mm has no entry for labels {missing}; give one per label or a "
                "single number of mm"
            )
    else:
        table = dict.fromkeys(labels, float(tolerance_mm))
    if any(not (math.isfinite(t) and t >= 0) for t in table.values()):
        raise VolsegError(f"tolerance_mm must be finite and >= 0 mm, got {table}")
    return table


def _label_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: list[float], tolerance: float, voxel_ml: float
) -> dict[str, float]:
    """All metrics of one label from boolean masks cropped to their union box."""
    tp = int(np.count_nonzero(pred & ref))
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    values = {
        "Dice": 2 * tp / (2 * tp + fp + fn),
        "IoU": tp / (tp + fp + fn),
        "TP": float(tp),
        "FP": float(fp),
        "FN": float(fn),
        "ref_ml": n_ref * voxel_ml,
        "pred_ml": n_pred * voxel_ml,
        "vol_diff_ml": (n_pred - n_ref) * voxel_ml,
        "vol_diff_rel": (n_pred - n_ref) / n_ref if n_ref else NAN,
    }
    if n_pred and n_ref:
        d_pr, d_rp = surface.surface_distances(pred, ref, spacing)
        values.update(
            HD95=surface.hd95(d_pr, d_rp),
            ASSD=surface.assd(d_pr, d_rp),
            NSD=surface.nsd(d_pr, d_rp, tolerance),
        )
    else:
        values.update(_DISTANCES_UNDEFINED, NSD=0.0)
    return {key: float(values[key]) for key in SEGMENTATION_METRICS}
