"""What the encoder added: a bench row's score minus its encoder-off row's, paired per case.

Segmentation rows compare per-case foreground-mean Dice with the same head on the image alone;
grading rows compare AUC with the ``size`` row (the tumour's volume, no encoder) on the same
test cases. Both come with a paired bootstrap 95% CI over cases, so a table says what the
encoder contributed, not only what the whole model scored (``volseg bench``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from volseg.metrics.bootstrap import bootstrap_mean_ci
from volseg.metrics.classification import paired_auc_difference


def add_encoder_contribution(
    rows: Sequence[dict[str, Any]], summaries: dict[str, dict], pairs: dict[str, str]
) -> None:
    """Fill ``vs_encoder_off`` and ``vs_encoder_off_ci95``: for a segmentation row the paired
    per-case foreground-mean Dice difference to its encoder-off model, for a grading row the
    AUC difference on the same cases with a paired bootstrap CI.

    Args:
        rows: bench rows (changed in place).
        summaries: model -> its ``summary.json`` content (grading: with ``per_case``, the rows
            of its ``per_case.csv``).
        pairs: model -> the model it is compared with (``""`` or itself: none).
    """
    for row in rows:
        off = pairs.get(row["model"], "")
        if not off or off == row["model"] or off not in summaries:
            continue
        if row["task"] == "classification":
            _add_auc_contribution(row, summaries[row["model"]], summaries[off])
            continue
        reference = _case_foreground_dice(summaries[off])
        mine = _case_foreground_dice(summaries[row["model"]])
        common = [case for case in mine if case in reference]
        if not common:
            continue
        differences = np.array([mine[c] - reference[c] for c in common])
        ci = bootstrap_mean_ci(differences)
        row["vs_encoder_off"] = round(float(np.nanmean(differences)), 4)
        row["vs_encoder_off_ci95"] = f"[{ci.low:.4f}, {ci.high:.4f}]"


def _add_auc_contribution(row: dict[str, Any], mine: dict, reference: dict) -> None:
    """``vs_encoder_off`` of a grading row: its AUC minus the reference's on the cases both
    scored, paired bootstrap 95% CI (blank when the reference is not a grading row)."""
    classes = mine.get("classes") or []
    if not classes or reference.get("classes") != classes:
        return
    ours, theirs = _case_probabilities(mine, classes), _case_probabilities(reference, classes)
    common = [case for case in ours if case in theirs]
    if not common:
        return
    y = np.array([ours[c][0] for c in common])
    delta, ci = paired_auc_difference(
        y, np.array([ours[c][1] for c in common]), np.array([theirs[c][1] for c in common])
    )
    if np.isfinite(delta):
        row["vs_encoder_off"] = round(float(delta), 4)
        row["vs_encoder_off_ci95"] = f"[{ci.low:.4f}, {ci.high:.4f}]"


def _case_probabilities(summary: dict, classes: Sequence[str]) -> dict[str, tuple[int, list]]:
    """Case id -> ``(true class id, probabilities)`` from a grading summary's ``per_case``."""
    return {
        str(r["case_id"]): (classes.index(r["true"]), [float(r[f"prob_{c}"]) for c in classes])
        for r in summary.get("per_case") or []
        if r.get("true") in classes
    }


def _case_foreground_dice(summary: dict) -> dict[str, float]:
    """Case id -> mean Dice over the foreground classes (NaN where none is defined)."""
    out = {}
    for case in summary.get("metric_per_case") or []:
        values = [
            float(m["Dice"])
            for m in (case.get("metrics") or {}).values()
            if isinstance(m, dict) and m.get("Dice") is not None
        ]
        finite = [v for v in values if np.isfinite(v)]
        out[str(case.get("case"))] = float(np.mean(finite)) if finite else float("nan")
    return out
