"""The slices a grading model attended to, per case: each modality's most-attended slice.

``volseg predict`` writes, for every graded case, the slices of each modality with the largest
MIL attention (``top_slices``, file voxel indices along ``top_slices_axis``) and each
modality's share of the attention (``modality_attention``) into ``predictions.json``. The
grading report draws, for the misclassified cases first and then the least confident ones,
one row per case: each modality's most-attended slice in radiological convention, the case's
mask (tumour) outlined when the manifest has one, and the slice index in the file's grid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure as MplFigure

from volseg.data import Case, Manifest, load_manifest
from volseg.errors import VolsegError
from volseg.io import Image, read_image
from volseg.report import overlays
from volseg.report.collect import Evaluation, manifest_path
from volseg.report.plots import to_png
from volseg.report.render import Block, Figure, Text

ATTENTION_CASES = 6
MASK_COLOUR = "#ef4444"
_VIEWS = {2: "axial", 1: "coronal", 0: "sagittal"}  # LPS axis a slice is taken across -> view


def attention_blocks(ev: Evaluation, limit: int = ATTENTION_CASES) -> list[Block]:
    """The attended-slices figures of a grading evaluation, or a note saying why there are none.

    Args:
        ev: a ``volseg evaluate`` folder of a grading prediction.
        limit: at most this many cases (misclassified first, then the least confident).
    """
    predictions = ev.resolve(ev.summary.get("prediction"))
    doc_path = predictions.with_name("predictions.json") if predictions is not None else None
    if doc_path is None or not doc_path.is_file():
        return []  # not a volseg prediction (e.g. a CSV of another tool): nothing to draw
    try:
        records = json.loads(doc_path.read_text())["cases"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [Text(f"attended slices skipped: {doc_path} is unreadable ({e})", note=True)]
    if not any(r.get("top_slices") for r in records):
        return []
    manifest = _manifest(ev)
    if manifest is None:
        return [
            Text(
                "attended slices skipped: the reference manifest of summary.json "
                f"({ev.summary.get('reference')}) is not readable from here",
                note=True,
            )
        ]
    chosen = pick_cases(records, manifest)[:limit]
    blocks: list[Block] = []
    for record in chosen:
        case = _case(manifest, record["case_id"])
        if case is None:
            continue
        png, problem = _case_png(record, case)
        if problem:
            blocks.append(Text(f"attended slices of {record['case_id']}: {problem}", note=True))
        else:
            blocks.append(Figure(f"{ev.name}_attention_{record['case_id']}", png, _caption(record)))
    if blocks:
        blocks.insert(
            0,
            Text(
                f"Attended slices ({len(chosen)} of {len(records)} cases: misclassified "
                "first, then the least confident). Each panel is the modality's slice with "
                "the largest MIL attention; its title gives the modality's share of the "
                "attention and the slice index in the file's voxel grid; red outline: the "
                "case's mask from the manifest."
            ),
        )
    return blocks


def pick_cases(records: Sequence[dict[str, Any]], manifest: Manifest) -> list[dict[str, Any]]:
    """Records in display order: misclassified cases first, then by rising confidence."""
    truth = {c.id: c.target for c in manifest.cases}

    def key(record: dict[str, Any]) -> tuple[bool, float]:
        probabilities = record.get("probabilities") or {}
        confidence = max((float(v) for v in probabilities.values()), default=0.0)
        right = truth.get(record["case_id"]) == record.get("predicted")
        return right, confidence

    return sorted((r for r in records if r["case_id"] in truth), key=key)


def attended_slices_figure(
    record: Mapping[str, Any], images: Mapping[str, Image | None], mask: Image | None, title: str
) -> MplFigure:
    """One row of panels: each modality's most-attended slice, the mask outlined.

    Args:
        record: the case's ``predictions.json`` entry.
        images: modality -> its image (None: missing, drawn as an empty panel).
        mask: the case's mask on the images' grid, or None.
        title: figure title.
    """
    modalities = list(images)
    fig = MplFigure(figsize=(2.6 * len(modalities) + 0.4, 3.3), layout="constrained")
    fig.suptitle(title, fontsize=10)
    axes = np.atleast_1d(fig.subplots(1, len(modalities)))
    attention = record.get("modality_attention") or {}
    for ax, modality in zip(axes, modalities, strict=True):
        ax.set_xticks([])
        ax.set_yticks([])
        image, top = images[modality], (record.get("top_slices") or {}).get(modality) or []
        if image is None or not top:
            ax.set_title(f"{modality}\nnot used", fontsize=8)
            ax.set_facecolor("#e5e7eb")
            continue
        axis = int((record.get("top_slices_axis") or {}).get(modality, 2))
        grey, outline, (pw, ph), letters, lps_axis = _slice(image, mask, axis, int(top[0]))
        low, high = np.percentile(grey, [0.5, 99.5])
        height, width = grey.shape
        extent = (0, width * pw, height * ph, 0)
        ax.imshow(grey, cmap="gray", vmin=low, vmax=high, interpolation="nearest", extent=extent)
        if outline is not None and outline.any() and not outline.all():
            xs, ys = (np.arange(width) + 0.5) * pw, (np.arange(height) + 0.5) * ph
            ax.contour(xs, ys, outline, levels=[0.5], colors=MASK_COLOUR, linewidths=1.2)
        ax.set_xlim(0, width * pw)
        ax.set_ylim(height * ph, 0)
        ax.set_aspect("equal")
        n = image.geometry.shape[axis]
        share = attention.get(modality)
        share_text = f", attention {float(share):.2f}" if share is not None else ""
        ax.set_title(
            f"{modality}{share_text}\n{_VIEWS[lps_axis]} slice {'ijk'[axis]} = {int(top[0])} "
            f"(of 0-{n - 1})",
            fontsize=8,
        )
        overlays.edge_letters(ax, letters)
    return fig


def _slice(
    image: Image, mask: Image | None, axis: int, index: int
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float], tuple[str, str, str, str], int]:
    """The file slice ``index`` across voxel ``axis``, in radiological convention."""
    volume, spacing = overlays.to_lps(np.asarray(image.array, dtype=np.float32), image)
    lps_axis = next(a for a in range(3) if overlays.file_slice(image, a, 0)[0] == axis)
    lps_index = overlays.file_slice(image, lps_axis, index)[1]  # the same flip, undone
    centre = [s // 2 for s in volume.shape]
    centre[lps_axis] = lps_index
    view = 2 - lps_axis  # radiological_slices: axial, coronal, sagittal
    _, grey, size, letters = overlays.radiological_slices(volume, spacing, centre)[view]
    outline = None
    if mask is not None:
        lps_mask, _ = overlays.to_lps(np.asarray(mask.array) > 0, image)
        outline = overlays.radiological_slices(lps_mask, spacing, centre)[view][1]
        outline = outline.astype(np.float32)
    return grey, outline, size, letters, lps_axis


def _case_png(record: dict[str, Any], case: Case) -> tuple[bytes, str]:
    images: dict[str, Image | None] = {}
    for modality in record.get("top_slices") or {}:
        source = case.images.get(modality)
        if source is None or modality not in (record.get("modalities_used") or [modality]):
            images[modality] = None
            continue
        try:
            image = read_image(source.path)
            if source.channel is not None:
                image = image.channel(source.channel)
            images[modality] = image
        except (VolsegError, IndexError) as e:
            return b"", f"{source.path} is unreadable ({e})"
    reference = next((i for i in images.values() if i is not None), None)
    mask = None
    if case.mask is not None and reference is not None:
        try:
            mask = read_image(case.mask)
        except VolsegError:
            mask = None
        if mask is not None and mask.geometry.differences(reference.geometry, atol=1e-2):
            mask = None  # not on the image grid: no outline rather than a wrong one
    probabilities = record.get("probabilities") or {}
    p = probabilities.get(record.get("predicted"), float("nan"))
    title = (
        f"{case.id}: true {case.target}, predicted {record.get('predicted')} (p = {float(p):.2f})"
    )
    return to_png(attended_slices_figure(record, images, mask, title)), ""


def _caption(record: dict[str, Any]) -> str:
    tops = "; ".join(
        f"{m}: {', '.join(str(i) for i in slices)}"
        for m, slices in (record.get("top_slices") or {}).items()
        if slices
    )
    return f"Most-attended slices, in order ({tops})."


def _manifest(ev: Evaluation) -> Manifest | None:
    path: Path | None = manifest_path(ev.summary.get("reference"), ev.path)
    try:
        return load_manifest(path) if path is not None else None
    except VolsegError:
        return None


def _case(manifest: Manifest, case_id: str) -> Case | None:
    try:
        return manifest.case(case_id)
    except KeyError:
        return None
