"""Scores of probe predictions with 95% bootstrap CIs, and the ``probe.csv``/``probe.json`` table.

Grading (one row per case): balanced accuracy and AUC (binary: of the last class; more
classes: the macro one-vs-rest mean), as :func:`volseg.metrics.classification_metrics`
defines them. Segmentation (one row per patch): balanced accuracy over the labels present
(mean per-label recall of the patches) and the patch Dice, ``2 TP / (2 TP + FP + FN)`` per
foreground label on the patches, averaged. Intervals resample **cases** (a case's patches
stay together: they are not independent), with :func:`volseg.metrics.bootstrap_cis`. With
several few-shot seeds the metric is the mean over the seeds, the interval that of this mean,
and the spread across seeds (std, min, max) is reported beside it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from volseg.io.atomic import atomic_path
from volseg.metrics import bootstrap_cis, confusion_matrix, roc_auc

N_RESAMPLES = 1000
COLUMNS = [
    "protocol", "setting", "view", "k", "lr", "shots", "seeds", "metric", "value",
    "ci95_low", "ci95_high", "std", "min", "max", "n_train", "n_val", "n_test", "task",
    "encoder", "weights",
]  # fmt: skip


def grading_scores(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """``{"balanced_accuracy", "AUC"}`` of one set of ``(N, G)`` probabilities."""
    g = probs.shape[1]
    cm = confusion_matrix(y, probs.argmax(axis=1), g)
    n_true = cm.sum(axis=1)
    recall = np.diag(cm)[n_true > 0] / n_true[n_true > 0]
    aucs = [roc_auc(y == c, probs[:, c]) for c in range(g)]
    return {
        "balanced_accuracy": float(recall.mean()) if recall.size else math.nan,
        "AUC": float(aucs[-1]) if g == 2 else float(np.mean(aucs)),
    }


def patch_scores(cm: np.ndarray) -> dict[str, float]:
    """``{"balanced_accuracy", "patch_dice"}`` of a ``(K, K)`` patch confusion matrix
    (rows true, columns predicted; label 0 is background)."""
    tp = np.diag(cm).astype(np.float64)
    n_true, n_pred = cm.sum(axis=1), cm.sum(axis=0)
    present = n_true > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / n_true
        dice = 2 * tp / (n_true + n_pred)
    fg = dice[1:][(n_true + n_pred)[1:] > 0]
    return {
        "balanced_accuracy": float(recall[present].mean()) if present.any() else math.nan,
        "patch_dice": float(fg.mean()) if fg.size else math.nan,
    }


def score_predictions(
    task: str,
    labels: np.ndarray,
    groups: np.ndarray,
    probs: Sequence[np.ndarray],
    n_classes: int,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Metrics of the test rows, averaged over ``probs`` (one array per seed), with CIs.

    Args:
        task: ``classification`` or ``segmentation``.
        labels: ``(N,)`` true class ids of the test rows.
        groups: ``(N,)`` case of every test row (the bootstrap resamples cases).
        probs: one ``(N, G)`` probability array per seed (a single one without seeds).
        n_classes: ``G``.
        n_resamples: bootstrap resamples (0: no intervals).
        seed: bootstrap seed.

    Returns:
        metric -> ``{"value", "ci95_low", "ci95_high"}`` and, with several seeds, ``"std"``,
        ``"min"``, ``"max"`` of the per-seed values.
    """
    stacked = np.stack(probs, axis=1)  # (N, S, G)
    if task == "classification":
        arrays: tuple[np.ndarray, ...] = (labels, stacked)

        def per_seed(y: np.ndarray, p: np.ndarray) -> list[dict[str, float]]:
            return [grading_scores(y, p[:, s]) for s in range(p.shape[1])]
    else:
        cases = np.unique(groups)
        cms = np.zeros((cases.size, stacked.shape[1], n_classes, n_classes), dtype=np.int64)
        for i, case in enumerate(cases):
            rows = groups == case
            for s in range(stacked.shape[1]):
                pred = stacked[rows, s].argmax(axis=1)
                cms[i, s] = confusion_matrix(labels[rows], pred, n_classes)
        arrays = (cms,)

        def per_seed(c: np.ndarray) -> list[dict[str, float]]:
            total = c.sum(axis=0)
            return [patch_scores(total[s]) for s in range(total.shape[0])]

    def mean_over_seeds(*a: np.ndarray) -> dict[str, float]:
        values = per_seed(*a)
        return {m: float(np.mean([v[m] for v in values])) for m in values[0]}

    point = per_seed(*arrays)
    cis = (
        bootstrap_cis(mean_over_seeds, *arrays, n_resamples=n_resamples, seed=seed)
        if (n_resamples)
        else {}
    )
    out = {}
    for metric in point[0]:
        values = np.array([p[metric] for p in point])
        entry = {"value": float(values.mean())}
        ci = cis.get(metric)
        entry["ci95_low"] = ci.low if ci is not None else math.nan
        entry["ci95_high"] = ci.high if ci is not None else math.nan
        if values.size > 1:
            entry.update(std=float(values.std()), min=float(values.min()), max=float(values.max()))
        out[metric] = entry
    return out


def table_rows(setting: dict, scores: dict[str, dict[str, float]]) -> list[dict]:
    """One table row per metric of a protocol setting (``setting`` holds the other columns)."""
    return [{**setting, "metric": metric, **values} for metric, values in scores.items()]


def write_tables(out: Path, rows: list[dict], meta: dict) -> tuple[Path, Path]:
    """Write ``out/probe.csv`` (the rows, :data:`COLUMNS`) and ``out/probe.json`` (rows and
    ``meta``: splits, grid, pooling, notes), atomically. NaN is written as an empty cell / null."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "probe.csv", out / "probe.json"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c)) for c in COLUMNS})
    doc = {"format": "volseg-probe/1", **meta, "rows": [_clean(r) for r in rows]}
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(_clean(doc), indent=2) + "\n", encoding="utf-8")
    return csv_path, json_path


def format_table(rows: list[dict]) -> str:
    """The rows as aligned text for the terminal."""
    header = [
        "protocol",
        "setting",
        "metric",
        "value",
        "95% CI",
        "seeds: std [min, max]",
        "n_train",
    ]
    lines = [header]
    for r in rows:
        spread = (
            f"{r['std']:.3f} [{r['min']:.3f}, {r['max']:.3f}]" if r.get("std") is not None else ""
        )
        lines.append([
            str(r["protocol"]), str(r["setting"]), str(r["metric"]), _num(r["value"]),
            f"[{_num(r['ci95_low'])}, {_num(r['ci95_high'])}]", spread, str(r["n_train"]),
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _num(value: object) -> str:
    return "nan" if value is None or not math.isfinite(float(value)) else f"{float(value):.3f}"


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return "" if value is None else value


def _clean(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
