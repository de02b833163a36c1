"""``volseg evaluate`` for grading: predicted class probabilities against reference classes.

Reads ``predictions.csv`` as ``volseg predict`` writes it (``case_id``, ``prob_<class>``) and a
classification manifest or a ``case_id,label`` CSV; writes ``summary.json`` and
``per_case.csv`` through :mod:`volseg.metrics.summary_files`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volseg.data import load_manifest
from volseg.errors import VolsegError
from volseg.io import input_path, output_folder
from volseg.metrics.classification import classification_metrics
from volseg.metrics.summary_files import match_cases, write_summary
from volseg.progress import track


def evaluate_classification(
    predictions_csv: str | Path,
    ref: str | Path,
    out_dir: str | Path,
    *,
    classes: Sequence[str] | None = None,
    allow_missing: bool = False,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score predicted class probabilities against reference classes; write the summary files.

    Args:
        predictions_csv: CSV with ``case_id`` and one ``prob_<class>`` column per class (other
            columns, e.g. ``predicted``, are ignored: the predicted class is the argmax).
        ref: classification manifest, or a CSV with ``case_id`` and ``label`` columns.
        out_dir: output folder (created).
        classes: class names in class-id order (the last is positive for binary tasks).
            Default: the manifest's classes, else the order of the ``prob_`` columns.
        allow_missing: score only matched cases when some references have no prediction.
        n_resamples: bootstrap resamples for the CIs (0 skips them).
        seed: bootstrap seed.

    Returns:
        The summary as written to ``summary.json``: the result of
        :func:`volseg.metrics.classification.classification_metrics` plus the inputs and the
        lists of missing and unmatched cases.

    Raises:
        VolsegError: unreadable CSV, missing columns or predictions, unknown classes,
            probabilities that are not finite, outside 0..1 or do not sum to 1, or an output
            folder that cannot be written.
    """
    predictions_csv, ref, out_dir = Path(predictions_csv), Path(ref), Path(out_dir)
    targets, ref_classes = _reference_classes(ref)
    header, rows = _read_csv(predictions_csv, ["case_id"], "predictions table")
    output_folder(out_dir, "--out")
    names = list(classes or ref_classes or [h[5:] for h in header if h.startswith("prob_")])
    _check_prob_columns(header, names, predictions_csv)
    probs = _probabilities(rows, names, predictions_csv)
    matched, missing, extra = match_cases(list(targets), probs, predictions_csv, allow_missing)
    unknown = sorted({targets[c] for c in matched} - set(names))
    if unknown:
        raise VolsegError(
            f"{ref}: reference classes {unknown} are not among {names}; pass the right classes"
        )
    y = np.array([names.index(targets[c]) for c in matched])
    p = np.array([probs[c] for c in matched])
    result = classification_metrics(y, p, classes=names, n_resamples=n_resamples, seed=seed)
    summary = {
        "task": "classification",
        "prediction": str(predictions_csv),
        "reference": str(ref),
        **result,
        "missing_predictions": missing,
        "unmatched_predictions": extra,
    }
    table = [
        {"case_id": c, "true": names[t], "predicted": names[int(np.argmax(row))]}
        | {"correct": int(t == np.argmax(row))}
        | {f"prob_{n}": v for n, v in zip(names, row, strict=True)}
        for c, t, row in zip(matched, y, p, strict=True)
    ]
    return write_summary(out_dir, summary, table)


def _reference_classes(ref: Path) -> tuple[dict[str, str], list[str]]:
    """case id -> true class name, and the class order if the reference defines one."""
    if ref.suffix.lower() == ".csv":
        _, rows = _read_csv(ref, ["case_id", "label"], "reference table")
        return {r["case_id"]: r["label"] for r in rows if r["label"]}, []
    manifest = load_manifest(ref)
    if manifest.task != "classification":
        raise VolsegError(f"{ref}: is a {manifest.task} manifest; pass a classification one")
    return {c.id: c.target for c in manifest.cases if c.target is not None}, manifest.classes


def _read_csv(path: Path, required: list[str], what: str) -> tuple[list[str], list[dict[str, str]]]:
    input_path(path, what)  # a FIFO would block the read forever
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            reader.fieldnames = header
            rows = [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VolsegError(f"{path}: cannot read as CSV ({e})") from None
    absent = [c for c in required if c not in header]
    if absent:
        raise VolsegError(f"{path}: CSV header {header} lacks column(s) {absent}; add them")
    return header, [r for r in rows if r.get("case_id")]


def _check_prob_columns(header: list[str], names: list[str], path: Path) -> None:
    given = [h[5:] for h in header if h.startswith("prob_")]
    if len(names) < 2 or sorted(given) != sorted(names):
        raise VolsegError(
            f"{path}: probability columns {['prob_' + g for g in given]} do not match the "
            f"classes {names}; write one prob_<class> column per class"
        )


def _probabilities(rows: list[dict[str, str]], names: list[str], path: Path) -> dict:
    """case id -> probabilities ``(G,)`` in class order, checked to be a distribution."""
    probs: dict[str, np.ndarray] = {}
    for line, row in track(enumerate(rows, start=2), "reading predictions", total=len(rows)):
        case_id = row["case_id"]
        try:
            p = np.array([float(row[f"prob_{n}"]) for n in names])
        except ValueError:
            raise VolsegError(f"{path}: line {line} ({case_id}) has a non-numeric prob") from None
        if not np.all(np.isfinite(p)) or p.min() < -1e-6 or p.max() > 1 + 1e-6:
            raise VolsegError(f"{path}: line {line} ({case_id}) has probabilities outside 0..1")
        if abs(p.sum() - 1) > 1e-3:
            raise VolsegError(
                f"{path}: line {line} ({case_id}) probabilities sum to {p.sum():.4g}, not 1; "
                "write softmax probabilities"
            )
        if case_id in probs:
            raise VolsegError(f"{path}: case {case_id} appears twice; keep one row per case")
        probs[case_id] = np.clip(p, 0, 1)
    return probs
