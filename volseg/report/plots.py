"""The report's charts as PNG bytes, drawn with matplotlib's Agg backend (no display needed):
metric distributions, paired differences, ROC curves, confusion matrices and training curves.
Overlays of label maps on the scan are in :mod:`volseg.report.overlays`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

UNIT_METRICS = ("Dice", "IoU", "NSD", "AUC", "accuracy", "balanced_accuracy", "F1")


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (no timestamp metadata, so equal figures give equal bytes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def class_distributions(values: Mapping[str, Mapping[str, Sequence[float]]]) -> bytes:
    """Box plots with every case as a dot, one panel per metric, one box per class.

    Args:
        values: metric -> class name -> per-case values (NaN are left out of the drawing).
    """
    metrics = list(values)
    classes = list(next(iter(values.values()))) if values else []
    width = max(3.4, 0.55 * len(classes) + 1.6)
    fig = Figure(figsize=(width * len(metrics), 3.6), layout="constrained")
    rng = np.random.default_rng(0)  # deterministic jitter
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        data = [np.asarray(values[metric][c], dtype=float) for c in classes]
        data = [d[np.isfinite(d)] for d in data]
        positions = [k + 1 for k, d in enumerate(data) if d.size]
        if positions:
            ax.boxplot(
                [d for d in data if d.size],
                positions=positions,
                widths=0.55,
                showfliers=False,
                medianprops={"color": "#1f2937"},
            )
        for k, d in enumerate(data):
            jitter = rng.uniform(-0.15, 0.15, d.size)
            ax.scatter(k + 1 + jitter, d, s=14, alpha=0.75, color="#2563eb", zorder=3)
        ax.set_xticks(range(1, len(classes) + 1), classes, rotation=30 if len(classes) > 3 else 0)
        ax.set_title(metric + (" (mm)" if metric in ("HD95", "ASSD") else ""))
        ax.set_xlim(0.4, len(classes) + 0.6)
        if metric in UNIT_METRICS:
            ax.set_ylim(-0.03, 1.03)
        ax.grid(axis="y", alpha=0.3)
    return to_png(fig)


def paired_differences(differences: Mapping[str, Sequence[float]], title: str) -> bytes:
    """Per-case paired differences (one dot per case, one column per class) around zero."""
    names = list(differences)
    fig = Figure(figsize=(max(4.0, 0.7 * len(names) + 2), 3.4), layout="constrained")
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    ax.axhline(0, color="#6b7280", linewidth=1)
    for k, name in enumerate(names):
        d = np.asarray(differences[name], dtype=float)
        d = d[np.isfinite(d)]
        if d.size:
            ax.boxplot([d], positions=[k + 1], widths=0.5, showfliers=False)
            ax.scatter(k + 1 + rng.uniform(-0.12, 0.12, d.size), d, s=14, color="#7c3aed", zorder=3)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30 if len(names) > 3 else 0)
    ax.set_xlim(0.4, len(names) + 0.6)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return to_png(fig)


def roc_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    aucs: Mapping[str, tuple[float | None, Sequence[float | None] | None]],
) -> bytes:
    """ROC curves, one per class (one-vs-rest), with the AUC and its 95% CI in the legend.

    Args:
        curves: class -> ``{"fpr": [...], "tpr": [...]}`` as summary.json holds them.
        aucs: class -> (AUC, [low, high] or None).
    """
    fig = Figure(figsize=(4.6, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#9ca3af", linewidth=1)
    for name, curve in curves.items():
        if not curve.get("fpr"):
            continue
        auc, ci = aucs.get(name, (None, None))
        label = f"{name}: AUC {_num(auc)}"
        if ci and ci[0] is not None and ci[1] is not None:
            label += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
        ax.step(curve["fpr"], curve["tpr"], where="post", linewidth=1.8, label=label)
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title("ROC (95% bootstrap CI)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return to_png(fig)


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """Confusion matrix: rows true class, columns predicted; counts and row percentages."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 1.1 * len(classes) + 1.8
    fig = Figure(figsize=(size + 0.6, size), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        colour = "white" if share[i, j] > 0.6 else "#111827"
        ax.text(
            j,
            i,
            f"{int(n)}\n{100 * share[i, j]:.0f}%",
            ha="center",
            va="center",
            color=colour,
            fontsize=9,
        )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix (row %)")
    return to_png(fig)


# Logged per-epoch counters and sizes: bookkeeping, not curves (``val_cases`` is no score)
BOOKKEEPING = {"epoch", "step", "iteration", "batch", "cases", "samples", "batches"}
BOOKKEEPING_ENDS = ("_cases", "_count", "_batches", "_epochs", "_steps", "_samples")
SCORE_COLUMNS = ("dice_mean", "auc", "val_dice_mean", "val_auc", "balanced_accuracy")
GROUP_LABELS = {
    "loss": "loss",
    "validation": "score (0-1, higher is better)",
    "other metrics": "value",
    "learning rate": "learning rate",
}


def reliability(bins: Sequence[Sequence[float]], ece: float | None) -> bytes:
    """Reliability diagram: accuracy against mean confidence per bin (``[lo, hi, n, conf,
    acc]``, :func:`volseg.metrics.classification.reliability_bins`), bar width = bin."""
    fig = Figure(figsize=(4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for lo, hi, n, conf, acc in bins:
        ax.bar(lo, acc, width=hi - lo, align="edge", color="tab:blue", alpha=0.7, edgecolor="k")
        ax.plot([conf], [acc], "o", color="tab:red", ms=3)
        ax.text((lo + hi) / 2, acc + 0.02, str(int(n)), ha="center", fontsize=7)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.08), xlabel="confidence (max probability)", ylabel="accuracy")
    title = "reliability" if ece is None else f"reliability, ECE {ece:.3f}"
    ax.set_title(title, fontsize=9)
    return to_png(fig)


def is_bookkeeping(key: str) -> bool:
    """True for logged columns that are counters, sizes, time or memory, not curves."""
    lowered = key.lower()
    return (
        lowered in BOOKKEEPING
        or lowered.endswith(BOOKKEEPING_ENDS)
        or lowered.startswith(("n_", "num_"))
        or is_resource_column(key)
    )


def curve_groups(rows: Sequence[Mapping[str, float]]) -> dict[str, list[str]]:
    """The logged columns drawn as curves, by panel: ``loss``, ``validation`` (scores in
    [0, 1]), ``other metrics`` and ``learning rate``; bookkeeping columns are left out."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if not is_bookkeeping(k)]
    lr = [k for k in keys if is_lr(k)]
    loss = [k for k in keys if "loss" in k and k not in lr]
    rest = [k for k in keys if k not in lr and k not in loss]
    unit = [k for k in rest if all(0 <= r[k] <= 1 for r in rows if k in r)]
    groups = (
        ("loss", loss),
        ("validation", unit),
        ("other metrics", [k for k in rest if k not in unit]),
        ("learning rate", lr),
    )
    return {name: ks for name, ks in groups if ks}


def score_column(rows: Sequence[Mapping[str, float]]) -> str | None:
    """The column that picks the best epoch: mean Dice or AUC as training logs them (else the
    first column named like Dice or AUC that is not per class); None without one."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    for key in SCORE_COLUMNS:
        if key in keys:
            return key
    return next((k for k in keys if ("dice" in k or "auc" in k) and "/" not in k), None)


def best_epoch(rows: Sequence[Mapping[str, float]]) -> tuple[str, float, float] | None:
    """``(score column, epoch, score)`` of the best logged score (the first of equal ones, as
    training keeps best.pt); None without a score column."""
    key = score_column(rows)
    x_key = next((k for k in ("epoch", "step") if any(k in r for r in rows)), None)
    points = [(r[x_key] if x_key else n, r[key]) for n, r in enumerate(rows) if key and key in r]
    if not key or not points:
        return None
    x, value = max(points, key=lambda p: p[1])  # max returns the first maximum
    return key, float(x), float(value)


def training_curves(rows: Sequence[Mapping[str, float]], title: str) -> bytes | None:
    """Logged values against epoch (else step), one panel per :func:`curve_groups` group,
    with the best epoch (:func:`best_epoch`) marked in every panel.

    Returns None when nothing numeric is left to draw.
    """
    x_key = next((k for k in ("epoch", "step") if any(k in r for r in rows)), None)
    groups = curve_groups(rows)
    if not groups:
        return None
    best = best_epoch(rows)
    fig = Figure(figsize=(4.4 * len(groups), 3.6), layout="constrained")
    if best is not None:
        title += f": best {best[0]} {best[2]:.3f} at {x_key or 'row'} {best[1]:g}"
    fig.suptitle(title, fontsize=10)
    for i, (name, ks) in enumerate(groups.items()):
        ax = fig.add_subplot(1, len(groups), i + 1)
        for key in ks:
            points = [(r[x_key] if x_key else n, r[key]) for n, r in enumerate(rows) if key in r]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
        if best is not None:
            ax.axvline(best[1], color="#6b7280", linestyle="--", linewidth=1, label="best epoch")
            if best[0] in ks:
                ax.plot([best[1]], [best[2]], marker="*", markersize=13, color="#dc2626",
                        linestyle="none", zorder=4)  # fmt: skip
        if name == "learning rate" and all(v > 0 for r in rows for k, v in r.items() if k in ks):
            ax.set_yscale("log")
        if name == "validation":
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(x_key or "logged row")
        ax.set_ylabel(GROUP_LABELS[name])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
    return to_png(fig)


def is_lr(key: str) -> bool:
    """True for logged learning-rate columns (``lr``, ``lr_head``, ``encoder_lr``)."""
    return key.startswith("lr") or key.endswith("_lr") or "learning_rate" in key


def is_resource_column(key: str) -> bool:
    """True for logged columns about time or memory (reported in the timing table)."""
    lowered = key.lower()
    return any(w in lowered for w in ("second", "time", "memory", "mem_", "_mb", "_gb"))


def _num(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
