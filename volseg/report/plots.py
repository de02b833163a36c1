"""The report's figures as PNG bytes, drawn with matplotlib's Agg backend (no display needed).

Overlays are shown in radiological convention: the volumes are first reoriented to the
nearest LPS axes (array index i grows to the patient's Left, j to Posterior, k to Superior;
an oblique tilt is not resampled away, as in a viewer's "voxel" mode), then

- axial: anterior up, the patient's right on the left of the screen (looking from the feet);
- coronal: superior up, the patient's right on the left (looking from the front);
- sagittal: superior up, anterior on the left.

Every pixel is drawn with its physical size (spacing), so anisotropic volumes keep their true
proportions. Reference contours are green, predicted contours red.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patheffects import withStroke
from matplotlib.ticker import MaxNLocator
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from volseg.io import Image

REFERENCE_COLOUR = "#22c55e"
PREDICTION_COLOUR = "#ef4444"
UNIT_METRICS = ("Dice", "IoU", "NSD", "AUC", "accuracy", "balanced_accuracy", "F1")
_VIEWS = ("axial", "coronal", "sagittal")


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


def training_curves(rows: Sequence[Mapping[str, float]], title: str) -> bytes | None:
    """Logged values against epoch (else step): losses, other metrics, learning rates.

    Columns about time or memory are left to the timing table. Returns None when nothing
    numeric is left to draw.
    """
    x_key = next((k for k in ("epoch", "step") if any(k in r for r in rows)), None)
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("epoch", "step")]
    keys = [k for k in keys if not is_resource_column(k)]
    lr = [k for k in keys if is_lr(k)]
    loss = [k for k in keys if "loss" in k and k not in lr]
    other = [k for k in keys if k not in lr and k not in loss]
    groups = {n: ks for n, ks in (("loss", loss), ("metrics", other), ("learning rate", lr)) if ks}
    if not groups:
        return None
    fig = Figure(figsize=(4.4 * len(groups), 3.4), layout="constrained")
    fig.suptitle(title, fontsize=10)
    for i, (name, ks) in enumerate(groups.items()):
        ax = fig.add_subplot(1, len(groups), i + 1)
        for key in ks:
            points = [(r[x_key] if x_key else n, r[key]) for n, r in enumerate(rows) if key in r]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
        if name == "learning rate" and all(v > 0 for r in rows for k, v in r.items() if k in ks):
            ax.set_yscale("log")
        ax.set_xlabel(x_key or "logged row")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return to_png(fig)


def is_lr(key: str) -> bool:
    """True for logged learning-rate columns (``lr``, ``lr_head``, ``encoder_lr``)."""
    return key.startswith("lr") or key.endswith("_lr") or "learning_rate" in key


def is_resource_column(key: str) -> bool:
    """True for logged columns about time or memory (reported in the timing table)."""
    lowered = key.lower()
    return any(w in lowered for w in ("second", "time", "memory", "mem_", "_mb", "_gb"))


# --- overlays ----------------------------------------------------------------------------------


def to_lps(array: np.ndarray, image: Image) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a ``(X, Y, Z)`` array on ``image``'s grid to the nearest LPS axes.

    Returns:
        The array with index i growing to the patient's Left, j to Posterior, k to Superior,
        and its spacing (mm) in that axis order.
    """
    transform = ornt_transform(io_orientation(image.affine), axcodes2ornt(("L", "P", "S")))
    spacing = np.empty(3)
    for axis, (target, _) in enumerate(transform):
        spacing[int(target)] = image.spacing[axis]
    return apply_orientation(array, transform), spacing


def radiological_slices(
    volume: np.ndarray, spacing: np.ndarray, centre: Sequence[int]
) -> list[tuple[str, np.ndarray, tuple[float, float], tuple[str, str, str, str]]]:
    """Axial, coronal and sagittal slices of an LPS-ordered volume through ``centre``.

    Returns:
        ``(view, slice (rows, cols), (pixel width, pixel height) in mm, edge letters
        (top, bottom, left, right))`` per view; row 0 is the top of the screen.
    """
    i, j, k = (int(c) for c in centre)
    sx, sy, sz = (float(s) for s in spacing)
    return [
        ("axial", volume[:, :, k].T, (sx, sy), ("A", "P", "R", "L")),
        ("coronal", volume[:, j, :].T[::-1], (sx, sz), ("S", "I", "R", "L")),
        ("sagittal", volume[i, :, :].T[::-1], (sy, sz), ("S", "I", "A", "P")),
    ]


def overlay(reference: Image, prediction: Image, image: Image | None, title: str) -> bytes:
    """Axial, coronal and sagittal slices through the reference's centroid with contours.

    Args:
        reference: reference label map.
        prediction: predicted label map on the same grid.
        image: the scan on the same grid (first channel used), or None to draw the reference
            as a grey silhouette instead.
        title: figure title (case, rank, score).
    """
    ref, spacing = to_lps(np.asarray(reference.array), reference)
    pred, _ = to_lps(np.asarray(prediction.array), reference)
    if image is not None:
        background, _ = to_lps(np.asarray(image.channel(0).array, dtype=np.float32), reference)
        low, high = np.percentile(background, [0.5, 99.5])
    else:
        background, low, high = (ref > 0).astype(np.float32) * 0.35, 0.0, 1.0
    centre = _centroid(ref if ref.any() else pred)
    labels = sorted(int(v) for v in np.union1d(np.unique(ref), np.unique(pred)) if v)
    panels = list(
        zip(
            radiological_slices(background, spacing, centre),
            radiological_slices(ref, spacing, centre),
            radiological_slices(pred, spacing, centre),
            strict=True,
        )
    )
    widths = [p[0][1].shape[1] * p[0][2][0] for p in panels]
    heights = [p[0][1].shape[0] * p[0][2][1] for p in panels]
    row_height = 3.3
    fig = Figure(
        figsize=(sum(row_height * w / max(heights) for w in widths) + 0.6, row_height + 0.7),
        layout="constrained",
    )
    fig.suptitle(title, fontsize=10)
    axes = fig.subplots(1, 3, width_ratios=widths)
    for ax, ((view, grey, (pw, ph), letters), (_, r, _, _), (_, p, _, _)) in zip(
        axes, panels, strict=True
    ):
        rows, cols = grey.shape
        ax.imshow(
            grey,
            cmap="gray",
            vmin=low,
            vmax=high,
            interpolation="nearest",
            extent=(0, cols * pw, rows * ph, 0),
        )
        xs, ys = (np.arange(cols) + 0.5) * pw, (np.arange(rows) + 0.5) * ph
        for label in labels:  # reference under prediction, wider: a perfect match shows both
            for mask, colour, width in (
                (r == label, REFERENCE_COLOUR, 2.4),
                (p == label, PREDICTION_COLOUR, 1.2),
            ):
                if mask.any() and not mask.all():
                    ax.contour(
                        xs,
                        ys,
                        mask.astype(np.float32),
                        levels=[0.5],
                        colors=colour,
                        linewidths=width,
                    )
        ax.set_xlim(0, cols * pw)
        ax.set_ylim(rows * ph, 0)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(view, fontsize=9)
        for text, xy, align in zip(
            letters,
            ((0.5, 0.98), (0.5, 0.02), (0.02, 0.5), (0.98, 0.5)),
            (("center", "top"), ("center", "bottom"), ("left", "center"), ("right", "center")),
            strict=True,
        ):
            ax.text(
                *xy,
                text,
                transform=ax.transAxes,
                ha=align[0],
                va=align[1],
                color="#facc15",
                fontsize=9,
                fontweight="bold",
                path_effects=[withStroke(linewidth=2.5, foreground="black")],
            )
    handles = [
        Line2D([], [], color=REFERENCE_COLOUR, label="reference"),
        Line2D([], [], color=PREDICTION_COLOUR, label="prediction"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return to_png(fig)


def _centroid(mask: np.ndarray) -> tuple[int, int, int]:
    """Rounded centre of mass of the non-zero voxels; the volume centre when there are none."""
    points = np.argwhere(mask)
    if not points.size:
        return tuple(s // 2 for s in mask.shape)  # type: ignore[return-value]
    centre = np.rint(points.mean(axis=0)).astype(int)
    return tuple(int(c) for c in centre)  # type: ignore[return-value]


def _num(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
