"""DICOM-SEG output: a label map predicted on a DICOM series, as one Segmentation object.

Hospitals exchange segmentations as DICOM; a DICOM-SEG file opens over its source series in
PACS viewers, 3D Slicer and OHIF. What :func:`write_dicom_seg` writes:

- one BINARY Segmentation instance (one ``.dcm`` file) in the source's study, with a new
  series, referencing every source slice (SOP Instance UIDs) and the source series;
- one segment per foreground label of the model's label map (value -> name), numbered 1, 2,
  ... in label-value order, so segment N is the same structure in every case a model writes.
  A label absent from a case keeps its segment but has no frames (readers show it empty), as
  highdicom writes it; a case with no foreground at all keeps every frame, empty (a SEG
  needs at least one);
- each frame on exactly one source slice (same Image Position, Orientation, Pixel Spacing),
  found from the geometry, not from file order;
- segment label = the label's name, Segment Description = ``label value N``; the coded
  property is taken from pydicom's SNOMED CT dictionary for a few common names (liver,
  kidney, oedema ...; ``left``/``right`` become a laterality modifier), else the generic SCT
  category and type "Tissue";
- algorithm identification: family "Artificial Intelligence", name = the model (run) name,
  version = volseg's version, plus free-text parameters (encoder, head).

Needs highdicom (``pip install 'volseg[dicom]'``); it is imported only when a SEG is written.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from volseg.errors import VolsegError
from volseg.io.atomic import atomic_path
from volseg.io.dicom_sources import SourceSlice, source_slices
from volseg.io.image import Image
from volseg.io.read import image_format

INSTALL_HINT = "install it with: pip install 'volseg[dicom]' (or pip install highdicom)"
_KINDS = {"nifti": "a NIfTI file", "nrrd": "an NRRD file", "metaimage": "a MetaImage file"}
# Label names with a SNOMED CT concept of the same name in pydicom's dictionary (so the codes
# come from pydicom, not from memory), grouped by the segmentation property category.
_ANATOMY = {
    "liver", "spleen", "kidney", "pancreas", "stomach", "heart", "lung", "brain", "aorta",
    "gallbladder", "esophagus", "duodenum", "colon", "adrenal gland", "prostate", "trachea",
    "vertebra", "bone", "muscle",
}  # fmt: skip
_ABNORMAL = {"oedema": "Edema", "edema": "Edema", "necrosis": "Necrosis", "tumour": "Neoplasm",
             "tumor": "Neoplasm", "neoplasm": "Neoplasm"}  # fmt: skip
# Distinct display colours (RGB) cycled over the segments.
_COLOURS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]  # fmt: skip


def require_dicom_series(path: str | Path) -> None:
    """Refuse a DICOM-SEG request for an image file (NIfTI, NRRD, MetaImage) as input.

    DICOM folders and slice files pass, and so do manifests and other paths: their cases are
    checked one by one.

    Raises:
        VolsegError: ``path`` is an image file that is not DICOM.
    """
    path = Path(path)
    try:
        kind = _KINDS.get(image_format(path))
    except VolsegError:
        return
    if kind is None:
        return
    raise VolsegError(
        f"--format dicom-seg needs DICOM series input; {path} is {kind} (use --format nii.gz)"
    )


def require_highdicom() -> Any:
    """The highdicom module.

    Raises:
        VolsegError: highdicom is not installed.
    """
    try:
        import highdicom
    except ImportError:
        raise VolsegError(f"--format dicom-seg needs highdicom; {INSTALL_HINT}") from None
    return highdicom


def write_dicom_seg(
    labels: Image,
    series: str | Path | Sequence[str | Path],
    path: str | Path,
    *,
    label_names: Mapping[int, str] | None = None,
    background: int = 0,
    algorithm: str = "volseg",
    parameters: Mapping[str, str] | None = None,
) -> Path:
    """Write a label map predicted on a DICOM series as one binary DICOM-SEG file.

    Args:
        labels: ``(X, Y, Z)`` integer label map on the series' grid, as
            :func:`volseg.io.read_image` read the series (any axis order or flip works: each
            frame is matched to a source slice by position, not by file order).
        series: the series folder, or its slice files.
        path: the ``.dcm`` file to write (atomically).
        label_names: value -> name of every label the model writes; every value but
            ``background`` becomes a segment, present in this case or not. None: the values
            present in ``labels``, named ``label N``.
        background: the label value that is not a segment.
        algorithm: the model's name (Algorithm Name).
        parameters: free-text algorithm parameters (Algorithm Parameters).

    Returns:
        The path written.

    Raises:
        VolsegError: highdicom missing, unreadable series, slices that do not lie on the
            label map's grid, or no foreground label to describe.
    """
    hd = require_highdicom()
    if labels.array.ndim != 3:
        raise VolsegError(f"{path}: DICOM-SEG needs a scalar label map, got {labels.array.shape}")
    slices = source_slices(series, labels.geometry)
    names = _segment_names(labels.array, label_names, background, path)
    values = np.array(list(names), dtype=np.int64)
    frames = np.stack([labels.array[tuple(np.moveaxis(s.index, -1, 0))] for s in slices])
    masks = (frames[..., None] == values).astype(np.uint8)  # (frames, rows, columns, segments)
    version = _volseg_version()
    identity = hd.AlgorithmIdentificationSequence(
        name=algorithm,
        family=_codes().cid7162.ArtificialIntelligence,
        version=version,
        parameters=dict(parameters) if parameters else None,
    )
    segments = [
        _describe(hd, number, value, name, identity)
        for number, (value, name) in enumerate(names.items(), start=1)
    ]
    with warnings.catch_warnings():
        # highdicom warns about one-word patient names (e.g. anonymised "ANON") in the source
        warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
        try:
            seg = _segmentation(hd, slices, masks, segments, algorithm, version)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            # the source headers lack something highdicom needs that source_slices does not
            # fill in: one line naming the series, highdicom's text for --verbose only
            raise VolsegError(_refusal(slices[0].path.parent, e)) from e
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def _segmentation(
    hd: Any,
    slices: list[SourceSlice],
    masks: np.ndarray,
    segments: list[Any],
    algorithm: str,
    version: str,
) -> Any:
    return hd.seg.Segmentation(
        source_images=[s.dataset for s in slices],
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=_series_number(slices[0].dataset),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="volseg",
        manufacturer_model_name=algorithm[:64],
        software_versions=version,
        device_serial_number="0",
        series_description=f"volseg {algorithm}"[:64],
        content_label="VOLSEG",
        content_description=f"{algorithm} segmentation"[:64],
        omit_empty_frames=bool(masks.any()),  # all empty: keep them all (highdicom would warn)
    )


def read_dicom_seg_check(path: str | Path) -> None:
    """Check that ``path`` holds a readable DICOM Segmentation (resuming a cohort).

    Raises:
        VolsegError: unreadable or not a SEG.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # pydicom raises many types on a cut-off file
        raise VolsegError(f"{path}: not a readable DICOM file ({e})") from None
    if ds.get("Modality") != "SEG" or "SegmentSequence" not in ds:
        raise VolsegError(f"{path}: not a DICOM Segmentation")


def _refusal(where: Path, error: Exception) -> str:
    missing = getattr(error, "name", None) if isinstance(error, AttributeError) else None
    what = f"no {missing} tag" if missing else "headers highdicom cannot use"
    return (
        f"{where}: cannot write a DICOM-SEG over this series ({what}); fix the series' "
        "headers (--verbose shows details) or predict with --format nii.gz"
    )


def _segment_names(
    array: np.ndarray, label_names: Mapping[int, str] | None, background: int, path: str | Path
) -> dict[int, str]:
    present = {int(v) for v in np.unique(array)} - {background}
    names = {int(k): str(v) for k, v in (label_names or {}).items()} if label_names else {}
    unnamed = sorted(present - set(names)) if label_names else sorted(present)
    names.update({v: f"label {v}" for v in unnamed})
    names.pop(background, None)
    if not names:
        raise VolsegError(
            f"{path}: no foreground label to describe; DICOM-SEG needs at least one segment"
        )
    return dict(sorted(names.items()))


def _describe(hd: Any, number: int, value: int, name: str, identity: Any) -> Any:
    category, kind, side = _property_codes(name)
    colour = hd.color.CIELabColor.from_rgb(*_COLOURS[(number - 1) % len(_COLOURS)])
    segment = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identity,
        display_color=colour,
    )
    segment.SegmentDescription = f"label value {value}"
    if side is not None:
        segment.SegmentedPropertyTypeModifierCodeSequence = [hd.sr.CodedConcept.from_code(side)]
    return segment


def _property_codes(name: str) -> tuple[Any, Any, Any]:
    """SNOMED CT category, type and laterality for a label name (generic "Tissue" if unknown)."""
    sct = _codes().SCT
    words = re.sub(r"[^a-z ]+", " ", name.lower()).split()
    side = None
    if words and words[0] in ("left", "right"):
        side = sct.Left if words[0] == "left" else sct.Right
        words = words[1:]
    term = " ".join(words)
    if term in _ANATOMY:
        keyword = "".join(w.capitalize() for w in words)
        return sct.AnatomicalStructure, getattr(sct, keyword), side
    if term in _ABNORMAL:
        return sct.MorphologicallyAbnormalStructure, getattr(sct, _ABNORMAL[term]), side
    return sct.Tissue, sct.Tissue, None


def _codes() -> Any:
    from pydicom.sr.codedict import codes

    return codes


def _series_number(source: Any) -> int:
    """A series number after the source's (viewers sort series by it)."""
    try:
        return int(source.get("SeriesNumber") or 0) + 1000
    except (TypeError, ValueError):
        return 1000


def _volseg_version() -> str:
    try:
        return metadata.version("volseg")
    except metadata.PackageNotFoundError:
        return "unknown"
