"""``volseg evaluate``: score a folder of predictions (or a predictions CSV) against references.

Writes ``summary.json`` (layout close to nnU-Net's: ``metric_per_case``, ``mean``,
``foreground_mean``, plus ``std``, ``median``, bootstrap ``ci95`` and the conventions used) and
``per_case.csv`` into the output folder (:mod:`volseg.metrics.summary_files`). Predictions and
references are matched by case id; predictions are never resampled: a grid mismatch is an
error. Grading lives in :mod:`volseg.metrics.evaluate_grading` (re-exported here).
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from volseg.data import load_manifest
from volseg.errors import VolsegError
from volseg.io import output_folder, read_image
from volseg.io.names import IMAGE_FORMATS, case_name
from volseg.metrics.bootstrap import METHOD, bootstrap_mean_ci
from volseg.metrics.evaluate_grading import evaluate_classification
from volseg.metrics.segmentation import (
    CONVENTIONS,
    SEGMENTATION_METRICS,
    both_empty,
    nsd_tolerances,
    segmentation_metrics,
)
from volseg.metrics.summary_files import match_cases, write_summary
from volseg.progress import track

__all__ = ["evaluate_classification", "evaluate_segmentation"]

CI_METRICS = ("Dice", "IoU", "NSD", "HD95", "ASSD")
GEOMETRY_ATOL_MM = 1e-3
_AGGREGATE_NOTES = {
    "std": "sample standard deviation (ddof=1) over cases",
    "foreground_mean": "mean over labels of the per-label means (nnU-Net's foreground_mean)",
    "ci95_foreground": "bootstrap over cases of each case's mean over labels",
}


def evaluate_segmentation(
    pred: str | Path,
    ref: str | Path,
    out_dir: str | Path,
    *,
    labels: Mapping[int, str] | None = None,
    tolerance_mm: float | Mapping[int, float] = 2.0,
    workers: int = 2,
    allow_missing: bool = False,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score predicted label maps against references; write summary.json and per_case.csv.

    Args:
        pred: folder of predicted label maps ``<case_id>.nii.gz`` (any extension volseg reads).
        ref: folder of reference label maps with the same names, or a segmentation manifest
            (file, or a folder holding ``dataset.json``/``manifest.json``) whose cases' label
            files are the references.
        out_dir: output folder (created).
        labels: label value -> name to score. Default: the manifest's label map, or every
            non-zero value found in the references. Background 0 is never scored.
        tolerance_mm: NSD tolerance in mm, one number or one per label.
        workers: processes scoring cases in parallel (1 = in this process).
        allow_missing: score only the matched cases when some references have no prediction
            (they are listed in the summary) instead of failing.
        n_resamples: bootstrap resamples for the CIs of the means (0 skips them).
        seed: bootstrap seed.

    Empty references: when every reference is empty there is nothing to score, which is an
    error; when some are, they are scored by the conventions of
    :data:`~volseg.metrics.segmentation.CONVENTIONS` (kept, so a false positive on a healthy
    case counts) and ``summary["warnings"]`` says how many, since MONAI's
    ``DiceMetric(ignore_empty=True)`` would leave them out. Predicted labels that ``labels``
    (or the manifest's map) does not have are not scored, and ``summary["warnings"]`` names
    them.

    Returns:
        The summary exactly as written to ``summary.json`` (label keys as strings, NaN as None).

    Raises:
        VolsegError: every reference empty, unreadable input, missing predictions, no matching
            cases, a prediction on another grid than its reference (names the case and what
            differs), a label map with fractional or negative values, or an output folder that
            cannot be written.
    """
    pred, out_dir = Path(pred), Path(out_dir)
    refs, manifest_labels = _reference_files(Path(ref))
    output_folder(out_dir, "--out")  # before the scoring, not after it
    preds = _image_files(pred, "prediction")
    matched, missing, extra = match_cases(list(refs), preds, pred, allow_missing)
    wanted = _wanted_labels(labels if labels is not None else manifest_labels)
    if wanted is not None:
        nsd_tolerances(tolerance_mm, list(wanted))  # fail before any work
    jobs = [(cid, preds[cid], refs[cid], wanted, tolerance_mm) for cid in matched]
    results = _run(_score_case, jobs, workers)
    empty = [
        cid for cid, (_, ref_labels, _) in zip(matched, results, strict=True) if not ref_labels
    ]
    if len(empty) == len(matched):
        raise VolsegError(
            f"{ref}: all {len(matched)} reference label maps are empty (no voxel above 0), so "
            "there is nothing to score; check that --ref names the label maps (not the images)"
        )
    warnings = _empty_reference_warning(empty, len(matched))
    if wanted is None:
        found = sorted(set().union(*(found for _, found, _ in results)))
        wanted = {label: str(label) for label in found}
    else:
        warnings += _unknown_label_warning(matched, results, wanted, ref)
    tolerances = nsd_tolerances(tolerance_mm, list(wanted))
    per_case = [
        {
            "case": cid,
            "prediction_file": str(preds[cid]),
            "reference_file": str(refs[cid]),
            "metrics": {label: scores.get(label) or both_empty() for label in wanted},
        }
        for cid, (scores, _, _) in zip(matched, results, strict=True)
    ]
    summary = {
        "task": "segmentation",
        "prediction": str(pred),
        "reference": str(ref),
        "n_cases": len(matched),
        "labels": dict(wanted),
        "metric_names": list(SEGMENTATION_METRICS),
        "tolerance_mm": tolerances,
        "conventions": {**CONVENTIONS, **_AGGREGATE_NOTES},
        "metric_per_case": per_case,
        **_aggregate(per_case, list(wanted), n_resamples, seed),
        "bootstrap": {"method": METHOD, "n_resamples": n_resamples, "seed": seed, "alpha": 0.05},
        "missing_predictions": missing,
        "unmatched_predictions": extra,
        "warnings": warnings,
    }
    rows = [
        {"case": c["case"], "label": label, "name": wanted[label]}
        | {"prediction_file": c["prediction_file"], "reference_file": c["reference_file"]}
        | c["metrics"][label]
        for c in per_case
        for label in wanted
    ]
    return write_summary(out_dir, summary, rows)


# --- segmentation helpers ----------------------------------------------------------------------


def _empty_reference_warning(empty: list[str], total: int) -> list[str]:
    """One line when some (not all) references are empty (see :func:`evaluate_segmentation`)."""
    if not empty:
        return []
    shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
    return [
        f"{len(empty)} of {total} reference label maps are empty ({shown}); they are scored "
        "by the empty-mask conventions (nothing predicted: Dice 1, something predicted: "
        "Dice 0), which MONAI's DiceMetric(ignore_empty=True) would leave out"
    ]


def _unknown_label_warning(
    cases: list[str], results: list, wanted: Mapping[int, str], ref: str | Path
) -> list[str]:
    """One line naming predicted labels that the scored label map does not have."""
    unknown: dict[int, list[str]] = {}
    for cid, (_, _, predicted) in zip(cases, results, strict=True):
        for label in sorted(predicted - set(wanted)):
            unknown.setdefault(label, []).append(cid)
    if not unknown:
        return []
    labels = ", ".join(
        f"{label} (case {cids[0]}" + (f" and {len(cids) - 1} more)" if len(cids) > 1 else ")")
        for label, cids in sorted(unknown.items())
    )
    known = ", ".join(str(label) for label in wanted)
    return [
        f"predictions hold labels {labels} that are not in the label map of {ref} "
        f"({known}); they are not scored: check the model was trained with this label map, "
        "or pass --labels"
    ]


def _score_case(
    case_id: str,
    pred_path: Path,
    ref_path: Path,
    labels: Mapping[int, str] | None,
    tolerance_mm: float | Mapping[int, float],
) -> tuple[dict[int, dict[str, float]], set[int], set[int]]:
    """Metrics of one case (runs in a worker), the non-zero labels of its reference and of its
    prediction.

    Without a label list, the labels scored are those in the prediction or the reference;
    the caller fills labels absent from both with the both-empty convention.
    """
    ref = read_image(ref_path)
    pred = read_image(pred_path)
    problems = ref.geometry.differences(pred.geometry, atol=GEOMETRY_ATOL_MM)
    if problems:
        raise VolsegError(
            f"case {case_id}: prediction {pred_path} is not on the grid of reference {ref_path} "
            f"({'; '.join(problems)}); write predictions with the reference's geometry, "
            "volseg evaluate never resamples"
        )
    ref_array, pred_array = _label_array(ref.array, ref_path), _label_array(pred.array, pred_path)
    ref_labels, pred_labels = _present(ref_array), _present(pred_array)
    if labels is None:
        scored = sorted(ref_labels | pred_labels)
        if isinstance(tolerance_mm, Mapping):  # labels outside the table fail later, by name
            scored = [label for label in scored if label in tolerance_mm]
    else:
        scored = list(labels)
    scores = segmentation_metrics(
        pred_array, ref_array, scored, ref.spacing, tolerance_mm=tolerance_mm
    )
    return scores, ref_labels, pred_labels


def _aggregate(
    per_case: list[dict], labels: list[int], n_resamples: int, seed: int
) -> dict[str, dict]:
    """Mean, std, median, NaN counts and bootstrap CIs over cases, per label and metric."""
    table = np.array(
        [[[c["metrics"][lab][m] for m in SEGMENTATION_METRICS] for lab in labels] for c in per_case]
    ).reshape(len(per_case), len(labels), len(SEGMENTATION_METRICS))
    out: dict[str, dict] = {"mean": {}, "std": {}, "median": {}, "undefined_count": {}}
    out |= {"ci95": {}, "ci95_foreground": {}, "ci95_skipped": {}}
    for j, label in enumerate(labels):
        values = {m: table[:, j, k] for k, m in enumerate(SEGMENTATION_METRICS)}
        out["mean"][label] = {m: _nan(np.nanmean, v) for m, v in values.items()}
        out["std"][label] = {m: _nan(np.nanstd, v, ddof=1) for m, v in values.items()}
        out["median"][label] = {m: _nan(np.nanmedian, v) for m, v in values.items()}
        nans = {m: int(np.isnan(v).sum()) for m, v in values.items() if np.isnan(v).any()}
        if nans:
            out["undefined_count"][label] = nans
        if n_resamples:
            cis = {
                m: bootstrap_mean_ci(values[m], n_resamples=n_resamples, seed=seed)
                for m in CI_METRICS
            }
            out["ci95"][label] = {m: ci.as_list() for m, ci in cis.items()}
            skipped = {m: ci.n_skipped for m, ci in cis.items() if ci.n_skipped}
            if skipped:
                out["ci95_skipped"][label] = skipped
    out["foreground_mean"] = {
        m: _nan(np.nanmean, np.array([out["mean"][lab][m] for lab in labels], dtype=float))
        for m in SEGMENTATION_METRICS
    }
    if n_resamples and labels:
        for k, m in enumerate(SEGMENTATION_METRICS):
            if m in CI_METRICS:
                case_means = np.array([_nan(np.nanmean, row) for row in table[:, :, k]])
                ci = bootstrap_mean_ci(case_means, n_resamples=n_resamples, seed=seed)
                out["ci95_foreground"][m] = ci.as_list()
    return out


def _nan(fn: Any, values: np.ndarray, **kwargs: Any) -> float:
    """``fn`` over the finite values; NaN when fewer than it needs (no warning)."""
    finite = values[np.isfinite(values)]
    if finite.size <= kwargs.get("ddof", 0):
        return math.nan
    return float(fn(finite, **kwargs))


def _label_array(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 3:
        raise VolsegError(f"{path}: has {array.shape[0]} channels; a label map has one")
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise VolsegError(f"{path}: holds fractional values; write argmax label maps")
        array = array.astype(np.int32)
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise VolsegError(f"{path}: holds negative labels; label values must be >= 0")
    return array


def _present(array: np.ndarray) -> set[int]:
    """Non-zero values of a non-negative integer label map."""
    if array.size and array.max() > np.iinfo(np.uint16).max:  # bincount would be huge
        return {int(v) for v in np.unique(array) if v}
    counts = np.bincount(array.ravel().astype(np.int64, copy=False))
    return {int(v) for v in np.flatnonzero(counts) if v}


def _wanted_labels(labels: Mapping[int, str] | None) -> dict[int, str] | None:
    if labels is None:
        return None
    wanted = {int(k): str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))}
    wanted.pop(0, None)  # background is never scored
    if not wanted or min(wanted) < 0:
        raise VolsegError(f"labels {dict(labels)} must hold at least one positive label value")
    return wanted


def _reference_files(ref: Path) -> tuple[dict[str, Path], dict[int, str] | None]:
    """case id -> reference label file, and the manifest's label map if ``ref`` is a manifest."""
    is_folder_of_maps = ref.is_dir() and not any(
        (ref / name).is_file() for name in ("dataset.json", "manifest.json")
    )
    if is_folder_of_maps:
        return _image_files(ref, "reference"), None
    manifest = load_manifest(ref)
    if manifest.task != "segmentation":
        raise VolsegError(f"{ref}: is a {manifest.task} manifest; pass a segmentation one")
    files = {case.id: case.label for case in manifest.cases if case.label is not None}
    if not files:
        raise VolsegError(f"{ref}: no case has a label file to evaluate against")
    return files, {k: v for k, v in manifest.labels.items() if k != 0} or None


def _image_files(folder: Path, what: str) -> dict[str, Path]:
    """case id -> file for every image file in ``folder`` (id = name without extension)."""
    if not folder.is_dir():
        raise VolsegError(f"{folder}: {what} folder not found; pass a folder of label maps")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        parsed = case_name(name)
        if not parsed.extension or name.startswith(".") or not path.is_file():
            continue
        case_id = parsed.case_id
        if case_id in files:
            raise VolsegError(
                f"{folder}: case {case_id} has two {what} files ({files[case_id].name}, {name}); "
                "keep one"
            )
        files[case_id] = path
    if not files:
        endings = ", ".join(IMAGE_FORMATS)
        raise VolsegError(f"{folder}: no {what} label maps ({endings}) in this folder")
    return files


# --- workers -----------------------------------------------------------------------------------


def _run(fn: Any, jobs: list[tuple], workers: int) -> list:
    """``fn(*job)`` for every job, in order; in ``workers`` spawned processes when > 1. The
    finished jobs are counted on an "evaluating" bar (:func:`volseg.progress.track`)."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in track(jobs, "evaluating")]
    context = multiprocessing.get_context("spawn")  # fork after torch/OpenMP threads can hang
    try:
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            done = pool.map(fn, *zip(*jobs, strict=True))
            return list(track(done, "evaluating", total=len(jobs)))
    except BrokenProcessPool:
        raise VolsegError(
            f"a worker process of {workers} died (out of memory, or a script calling volseg "
            "without an `if __name__ == '__main__':` guard); rerun with workers=1"
        ) from None
