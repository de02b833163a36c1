"""Read every dataset format volseg accepts into one :class:`Manifest`.

Accepted inputs (see :func:`load_manifest`):

- volseg JSON (``"format": "volseg-manifest/1"``, described in :mod:`volseg.data.manifest`);
- a Medical Segmentation Decathlon ``dataset.json`` (``modality``, ``labels``, ``training``);
- an nnU-Net v2 raw dataset folder (``dataset.json`` with ``channel_names`` and
  ``file_ending``, files ``imagesTr/{case}_{XXXX}{ending}`` and ``labelsTr/{case}{ending}``);
- a CSV for classification (``case_id``, one path column per modality, ``label``, optional
  ``mask`` and ``subject``).

All paths come out absolute (relative ones are taken from the manifest file's folder); symlinks
are kept as they are, not resolved. The two ``dataset.json`` dialects are read in
:mod:`volseg.data.dataset_json`, the field helpers all formats share live in
:mod:`volseg.data.manifest_fields`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from volseg.data.dataset_json import load_msd, load_nnunet
from volseg.data.manifest import MANIFEST_FORMAT, Case, ImageSource, Manifest
from volseg.data.manifest_fields import (
    absolute,
    absolute_or_none,
    get_key,
    hint,
    int_keyed,
    read_json,
)
from volseg.errors import VolsegError
from volseg.io.names import DICOM_SLICE, split_extension
from volseg.io.paths import input_path

ACCEPTED = (
    "a volseg manifest JSON, an MSD or nnU-Net v2 dataset.json (or its folder), "
    "or a classification CSV"
)
TOP_KEYS = {"format", "name", "task", "modalities", "labels", "classes", "cases", "test"}
EXTRA_TOP_KEYS = {"description", "reference", "license", "layout"}
CASE_KEYS = ["id", "subject", "images", "label", "class", "mask"]
CSV_RESERVED = ("case_id", "label", "mask", "subject")
TASKS = ("segmentation", "classification")


def load_manifest(path: str | Path, *, classes: list[str] | None = None) -> Manifest:
    """Read a dataset description in any accepted format.

    Args:
        path: a volseg JSON, an MSD or nnU-Net v2 ``dataset.json``, a folder holding one of
            them (``dataset.json`` or ``manifest.json``), or a classification ``.csv``.
        classes: classification class names in class-id order. For a CSV they replace the
            sorted unique labels; for any classification manifest every target must be one of
            them. Not allowed for segmentation datasets.

    Returns:
        The manifest, with absolute paths, ``source`` and ``format`` set. Files are not
        checked here; see :func:`volseg.data.validate.validate_manifest`.

    Raises:
        VolsegError: unknown format, bad JSON/CSV, a missing or mistyped key, or a class that
            is not in ``classes``; the message names the file and key.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise VolsegError(f"{path}: no such file or folder; pass {ACCEPTED}")
    input_path(path, "manifest")  # a FIFO would block the read below forever
    if path.is_dir():
        for name in ("dataset.json", "manifest.json"):
            if (path / name).is_file():
                return load_manifest(path / name, classes=classes)
        raise VolsegError(
            f"{path}: folder holds neither dataset.json nor manifest.json; pass {ACCEPTED}"
        )
    if path.suffix.lower() == ".csv":
        manifest = _load_csv(path, classes)
    elif path.suffix.lower() == ".json":
        doc = read_json(path)
        if "format" in doc:
            if doc["format"] != MANIFEST_FORMAT:
                raise VolsegError(
                    f"{path}: key 'format' is {doc['format']!r}; volseg reads "
                    f"{MANIFEST_FORMAT!r} manifests"
                )
            manifest = _load_volseg(doc, path)
        elif "channel_names" in doc or "file_ending" in doc:
            manifest = load_nnunet(doc, path)
        elif "modality" in doc and "training" in doc:
            manifest = load_msd(doc, path)
        else:
            raise VolsegError(
                f"{path}: JSON has none of the keys 'format' (volseg), 'channel_names'/"
                f"'file_ending' (nnU-Net v2) or 'modality'+'training' (MSD); pass {ACCEPTED}"
            )
    else:
        raise VolsegError(f"{path}: not a .json or .csv file; pass {ACCEPTED}")
    if classes is not None:
        _apply_classes(manifest, classes, path)
    return manifest


# --- volseg JSON ------------------------------------------------------------------------------


def _load_volseg(doc: dict[str, Any], path: Path) -> Manifest:
    for key in doc:
        if key not in TOP_KEYS | EXTRA_TOP_KEYS:
            raise VolsegError(
                f"{path}: unknown top-level key {key!r}{hint(key, TOP_KEYS | EXTRA_TOP_KEYS)}; "
                f"allowed: {', '.join(sorted(TOP_KEYS | EXTRA_TOP_KEYS))}"
            )
    task = get_key(doc, "task", str, path)
    if task not in TASKS:
        raise VolsegError(f"{path}: key 'task' is {task!r}; use 'segmentation' or 'classification'")
    modalities = get_key(doc, "modalities", list, path)
    if not modalities or not all(isinstance(m, str) and m for m in modalities):
        raise VolsegError(f"{path}: key 'modalities' must be a non-empty list of names")
    if len(set(modalities)) != len(modalities):
        raise VolsegError(f"{path}: key 'modalities' repeats a name: {modalities}")
    labels: dict[int, str] = {}
    if "labels" in doc or task == "segmentation":
        labels = int_keyed(get_key(doc, "labels", dict, path), path, "labels")
    classes: list[str] = []
    if "classes" in doc or task == "classification":
        classes = get_key(doc, "classes", list, path)
        if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
            raise VolsegError(f"{path}: key 'classes' must be a list of distinct names")
    root = path.parent
    cases = [
        _volseg_case(entry, f"cases[{i}]", modalities, root, path)
        for i, entry in enumerate(get_key(doc, "cases", list, path))
    ]
    test = [
        _volseg_case(entry, f"test[{i}]", modalities, root, path)
        for i, entry in enumerate(get_key(doc, "test", list, path, required=False) or [])
    ]
    name = get_key(doc, "name", str, path, required=False) or path.parent.name
    info = {key: doc[key] for key in EXTRA_TOP_KEYS if key in doc}
    return Manifest(name, task, modalities, cases, labels, classes, test, path, "volseg", info)


def _volseg_case(entry: Any, where: str, modalities: list[str], root: Path, path: Path) -> Case:
    if not isinstance(entry, dict):
        raise VolsegError(f"{path}: {where} must be an object with keys {', '.join(CASE_KEYS)}")
    for key in entry:
        if key not in CASE_KEYS:
            raise VolsegError(
                f"{path}: unknown key {where}.{key}{hint(key, CASE_KEYS)}; "
                f"allowed: {', '.join(CASE_KEYS)}"
            )
    case_id = get_key(entry, "id", str, path, where)
    where = f"{where} ({case_id})"
    images = {}
    for modality, value in get_key(entry, "images", dict, path, where).items():
        if modality not in modalities:
            raise VolsegError(
                f"{path}: {where}.images has modality {modality!r}, which is not in "
                f"'modalities' {modalities}; add it there or fix the name"
            )
        images[modality] = _image_source(value, f"{where}.images.{modality}", root, path)
    # keep the manifest's modality order whatever order the case lists them in
    images = {m: images[m] for m in modalities if m in images}
    optional = {key: get_key(entry, key, str, path, where, required=False) for key in CASE_KEYS[3:]}
    return Case(
        case_id,
        images,
        label=absolute_or_none(optional["label"], root),
        target=optional["class"],
        mask=absolute_or_none(optional["mask"], root),
        subject=get_key(entry, "subject", str, path, where, required=False),
    )


def _image_source(value: Any, where: str, root: Path, path: Path) -> ImageSource:
    if isinstance(value, str) and value:
        return ImageSource(absolute(value, root))
    if isinstance(value, dict) and set(value) <= {"path", "channel"}:
        channel = get_key(value, "channel", int, path, where, required=False)
        if channel is not None and channel < 0:
            raise VolsegError(f"{path}: {where}.channel must be >= 0, got {channel}")
        return ImageSource(absolute(get_key(value, "path", str, path, where), root), channel)
    raise VolsegError(
        f'{path}: {where} must be a path or {{"path": ..., "channel": N}}, got {value!r}'
    )


# --- classification CSV ------------------------------------------------------------------------


def _load_csv(path: Path, classes: list[str] | None) -> Manifest:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VolsegError(f"{path}: cannot read as CSV ({e})") from None
    if not rows:
        raise VolsegError(f"{path}: CSV is empty; it needs a header row with 'case_id'")
    header = [h.strip() for h in rows[0]]
    if "case_id" not in header:
        raise VolsegError(f"{path}: CSV header {header} has no 'case_id' column; add it")
    if len(set(header)) != len(header) or "" in header:
        raise VolsegError(f"{path}: CSV header {header} has an empty or repeated column name")
    modalities = [h for h in header if h not in CSV_RESERVED]
    if not modalities:
        raise VolsegError(
            f"{path}: CSV has no image column; add one path column per modality "
            f"(any name except {', '.join(CSV_RESERVED)})"
        )
    root = path.parent
    if "label" not in header:
        _refuse_class_column(path, header, modalities, rows[1:], root)
    cases, test = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise VolsegError(
                f"{path}: line {line} has {len(row)} cells but the header has {len(header)}"
            )
        cells = {h: cell.strip() for h, cell in zip(header, row, strict=True)}
        if not cells["case_id"]:
            raise VolsegError(f"{path}: line {line} has an empty case_id")
        case = Case(
            cells["case_id"],
            {m: ImageSource(absolute(cells[m], root)) for m in modalities if cells[m]},
            target=cells.get("label") or None,
            mask=absolute_or_none(cells.get("mask") or None, root),
            subject=cells.get("subject") or None,
        )
        (cases if case.target is not None else test).append(case)
    found = classes if classes is not None else _sorted_classes({c.target for c in cases})
    return Manifest(
        path.stem, "classification", modalities, cases, [], list(found), test, path, "csv"
    )


def _refuse_class_column(
    path: Path, header: list[str], modalities: list[str], rows: list[list[str]], root: Path
) -> None:
    """Without a ``label`` column every other column is read as image paths; a column of
    values that name no file and have no image extension (``0``, ``high``) is surely the class
    column under another name, so say that instead of one missing file per row."""
    for column in modalities:
        index = header.index(column)
        values = [row[index].strip() for row in rows if len(row) > index and row[index].strip()]
        if values and not any(_looks_like_image(value, root) for value in values):
            shown = ", ".join(repr(v) for v in sorted(set(values))[:4])
            raise VolsegError(
                f"{path}: CSV has no 'label' column (columns: {', '.join(header)}), and column "
                f"{column!r} holds {shown}, which are no image paths; if {column!r} is the "
                "class, rename that column to 'label' (volseg reads classes only from a column "
                "named 'label'; a CSV without one lists unlabelled cases)"
            )


def _looks_like_image(value: str, root: Path) -> bool:
    is_image = bool(split_extension(value)[1]) or value.lower().endswith(DICOM_SLICE)
    return is_image or absolute(value, root).exists()


def _sorted_classes(values: set[str | None]) -> list[str]:
    """Sort class names numbers-aware: '2' < '3' < '10', 'grade2' < 'grade10'."""

    def key(value: str) -> list[tuple[int, float | str]]:
        try:
            return [(0, float(value))]
        except ValueError:
            parts = re.split(r"(\d+)", value)
            return [(0, float(p)) if p.isdigit() else (1, p) for p in parts if p]

    return sorted((v for v in values if v is not None), key=key)


def _apply_classes(manifest: Manifest, classes: list[str], path: Path) -> None:
    if manifest.task != "classification":
        raise VolsegError(
            f"{path}: 'classes' was given but this is a {manifest.task} dataset; drop it"
        )
    if not classes or len(set(classes)) != len(classes):
        raise VolsegError(f"classes {classes} must be a non-empty list of distinct names")
    unknown = sorted({c.target for c in manifest.cases if c.target not in classes})
    if unknown:
        raise VolsegError(
            f"{path}: labels {unknown} are not in the given classes {list(classes)}; "
            "add them to the classes or fix the labels"
        )
    manifest.classes = [str(c) for c in classes]
