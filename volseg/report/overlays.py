"""Overlays of a reference and a predicted label map on the scan, as PNG bytes.

Shown in radiological convention: the volumes are first reoriented to the nearest LPS axes
(array index i grows to the patient's Left, j to Posterior, k to Superior; an oblique tilt is
not resampled away, as in a viewer's "voxel" mode), then

- axial: anterior up, the patient's right on the left of the screen (looking from the feet);
- coronal: superior up, the patient's right on the left (looking from the front);
- sagittal: superior up, anterior on the left.

Every pixel is drawn with its physical size (spacing), so anisotropic volumes keep their true
proportions, and each panel has a scale bar in mm. Each label has one colour, fixed by its
value (:func:`label_colour`), so a liver is the same colour in every figure; a legend names
them. The top row shows the reference, the bottom row the prediction, through the same slices,
each titled with its slice index in the file's own voxel grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.patheffects import withStroke
from matplotlib.text import Text
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from volseg.io import Image
from volseg.report.plots import to_png

# tab10 without its grey (grey is the scan): distinct on a grey background
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)
FILL_ALPHA = 0.45
SCALE_STEPS_MM = (1, 2, 5, 10, 20, 50, 100, 200, 500)
MIN_WIDTH_INCHES = 7.5
_STROKE = [withStroke(linewidth=2.5, foreground="black")]


def label_colour(value: int) -> str:
    """The colour of label ``value`` (1 -> first palette colour); the same in every figure."""
    return PALETTE[(int(value) - 1) % len(PALETTE)]


def to_lps(array: np.ndarray, image: Image) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a ``(X, Y, Z)`` array on ``image``'s grid to the nearest LPS axes.

    Returns:
        The array with index i growing to the patient's Left, j to Posterior, k to Superior,
        and its spacing (mm) in that axis order.
    """
    transform = _transform(image)
    spacing = np.empty(3)
    for axis, (target, _) in enumerate(transform):
        spacing[int(target)] = image.spacing[axis]
    return apply_orientation(array, transform), spacing


def file_slice(image: Image, lps_axis: int, lps_index: int) -> tuple[int, int, int]:
    """Where an LPS slice lies in the file: ``(voxel axis, index, slices along it)``.

    Args:
        image: the image whose grid was reoriented with :func:`to_lps`.
        lps_axis: 0 (L), 1 (P) or 2 (S): the axis the slice is taken across.
        lps_index: the slice's index along that LPS axis.
    """
    transform = _transform(image)
    axis = next(a for a, (target, _) in enumerate(transform) if int(target) == lps_axis)
    n = int(image.geometry.shape[axis])
    flipped = transform[axis][1] < 0
    return axis, (n - 1 - lps_index) if flipped else lps_index, n


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


def overlay(
    reference: Image,
    prediction: Image,
    image: Image | None,
    title: str,
    label_names: Mapping[int, str] | None = None,
) -> bytes:
    """:func:`overlay_figure` as PNG bytes."""
    return to_png(overlay_figure(reference, prediction, image, title, label_names))


def overlay_figure(
    reference: Image,
    prediction: Image,
    image: Image | None,
    title: str,
    label_names: Mapping[int, str] | None = None,
) -> Figure:
    """Reference (top row) and prediction (bottom row) on axial, coronal and sagittal slices
    through the reference's centroid, each label filled in its colour, with a legend of the
    label names, the slice index in each panel's title and a scale bar in mm.

    Args:
        reference: reference label map.
        prediction: predicted label map on the same grid.
        image: the scan on the same grid (first channel used), or None to draw the reference
            as a grey silhouette instead.
        title: figure title (case, rank, score).
        label_names: label value -> name for the legend (default: the value).
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
    views = radiological_slices(background, spacing, centre)
    rows = [("reference", radiological_slices(ref, spacing, centre))]
    rows.append(("prediction", radiological_slices(pred, spacing, centre)))
    widths = [grey.shape[1] * pw for _, grey, (pw, _), _ in views]
    heights = [grey.shape[0] * ph for _, grey, (_, ph), _ in views]
    panel_height = 2.7
    fig_width = sum(panel_height * w / max(heights) for w in widths) + 1.0
    fig = Figure(  # narrow volumes still leave room for the titles and the legend
        figsize=(max(fig_width, MIN_WIDTH_INCHES), 2 * panel_height + 1), layout="constrained"
    )
    fig.suptitle(title, fontsize=10)
    axes = fig.subplots(2, 3, width_ratios=widths)
    lut = _label_lut(max([*labels, 0]))
    for row, (what, slices) in enumerate(rows):
        for col, ((view, grey, (pw, ph), letters), (_, mask, _, _)) in enumerate(
            zip(views, slices, strict=True)
        ):
            ax = axes[row, col]
            height, width = grey.shape
            extent = (0, width * pw, height * ph, 0)
            ax.imshow(
                grey, cmap="gray", vmin=low, vmax=high, interpolation="nearest", extent=extent
            )
            ax.imshow(
                np.ma.masked_equal(mask.astype(int), 0),
                cmap=lut,
                vmin=0,
                vmax=lut.N - 1,
                interpolation="nearest",
                extent=extent,
            )
            _outline(ax, mask, labels, pw, ph)
            ax.set_xlim(0, width * pw)
            ax.set_ylim(height * ph, 0)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            lps_axis = {"axial": 2, "coronal": 1, "sagittal": 0}[view]
            axis, index, n = file_slice(reference, lps_axis, centre[lps_axis])
            ax.set_title(f"{view}\nslice {'ijk'[axis]} = {index} (of 0-{n - 1})", fontsize=8)
            if col == 0:
                ax.set_ylabel(what, fontsize=10, fontweight="bold")
            edge_letters(ax, letters)
            _scale_bar(ax, width * pw)
    names = label_names or {}
    handles = [
        Patch(facecolor=label_colour(v), edgecolor="black", label=names.get(v, str(v)))
        for v in labels
    ]
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=min(len(handles), 5),
            fontsize=9,
            frameon=False,
        )
    return fig


def _transform(image: Image) -> np.ndarray:
    return ornt_transform(io_orientation(image.affine), axcodes2ornt(("L", "P", "S")))


def _label_lut(top: int) -> ListedColormap:
    """Colour map of label values 0..top: each label's colour at :data:`FILL_ALPHA`."""
    colours = [(0.0, 0.0, 0.0, 0.0)] + [
        to_rgba(label_colour(v), FILL_ALPHA) for v in range(1, top + 1)
    ]
    return ListedColormap(colours if len(colours) > 1 else colours * 2)


def _outline(ax, mask: np.ndarray, labels: list[int], pw: float, ph: float) -> None:
    """Each label's border in its full colour, so thin structures stay visible."""
    rows, cols = mask.shape
    xs, ys = (np.arange(cols) + 0.5) * pw, (np.arange(rows) + 0.5) * ph
    for label in labels:
        inside = mask == label
        if inside.any() and not inside.all():
            ax.contour(
                xs, ys, inside.astype(np.float32), levels=[0.5],
                colors=label_colour(label), linewidths=1.3,
            )  # fmt: skip


def edge_letters(ax, letters: tuple[str, str, str, str]) -> None:
    """The orientation letters (top, bottom, left, right) at the panel edges."""
    for text, xy, align in zip(
        letters,
        ((0.5, 0.98), (0.5, 0.02), (0.02, 0.5), (0.98, 0.5)),
        (("center", "top"), ("center", "bottom"), ("left", "center"), ("right", "center")),
        strict=True,
    ):
        ax.text(
            *xy, text, transform=ax.transAxes, ha=align[0], va=align[1], color="#facc15",
            fontsize=9, fontweight="bold", path_effects=_STROKE,
        )  # fmt: skip


def scale_length(width_mm: float) -> float:
    """A round scale-bar length (mm) of at most a third of the panel's width."""
    fitting = [s for s in SCALE_STEPS_MM if s <= width_mm / 3]
    return float(fitting[-1]) if fitting else width_mm / 3


def _scale_bar(ax, width_mm: float) -> None:
    length = scale_length(width_mm)
    bar = AnchoredSizeBar(
        ax.transData, length, f"{length:g} mm", "lower right", pad=0.4, color="white",
        frameon=False, size_vertical=width_mm / 150, label_top=True,
        fontproperties={"size": 7.5},
    )  # fmt: skip
    for text in bar.findobj(Text):
        text.set_path_effects(_STROKE)
    ax.add_artist(bar)


def _centroid(mask: np.ndarray) -> tuple[int, int, int]:
    """Rounded centre of mass of the non-zero voxels; the volume centre when there are none."""
    points = np.argwhere(mask)
    if not points.size:
        return tuple(s // 2 for s in mask.shape)  # type: ignore[return-value]
    centre = np.rint(points.mean(axis=0)).astype(int)
    return tuple(int(c) for c in centre)  # type: ignore[return-value]
