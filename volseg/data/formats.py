"""Read every dataset format volseg accepts into one :class:`Manifest`.

Accepted inputs (see :func:`load_manifest`):

- volseg JSON (``"format": "volseg-manifest/1"``, described in :mod:`volseg.data.manifest`);
- a Medical Segmentation Decathlon ``dataset.json`` (``modality``, ``labels``, ``training``);
- an nnU-Net v2 raw dataset folder (``dataset.json`` with ``channel_names`` and
  ``file_ending``, files ``imagesTr/{case}_{XXXX}{ending}`` and ``labelsTr/{case}{ending}``);
- a CSV for classification (``case_id``, one path column per modality, ``label``, optional
  ``mask`` and ``subject``).

All paths come out absolute (relative ones are taken from the manifest file's folder); symlinks
are kept as they are, not resolved.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

from volseg.data.manifest import MANIFEST_FORMAT, Case, ImageSource, Manifest
from volseg.errors import VolsegError
from volseg.io.paths import input_path
from volseg.io.read import FORMATS as IMAGE_ENDINGS

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
        doc = _read_json(path)
        if "format" in doc:
            if doc["format"] != MANIFEST_FORMAT:
                raise VolsegError(
                    f"{path}: key 'format' is {doc['format']!r}; volseg reads "
                    f"{MANIFEST_FORMAT!r} manifests"
                )
            manifest = _load_volseg(doc, path)
        elif "channel_names" in doc or "file_ending" in doc:
            manifest = _load_nnunet(doc, path)
        elif "modality" in doc and "training" in doc:
            manifest = _load_msd(doc, path)
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
                f"{path}: unknown top-level key {key!r}{_hint(key, TOP_KEYS | EXTRA_TOP_KEYS)}; "
                f"allowed: {', '.join(sorted(TOP_KEYS | EXTRA_TOP_KEYS))}"
            )
    task = _get(doc, "task", str, path)
    if task not in TASKS:
        raise VolsegError(f"{path}: key 'task' is {task!r}; use 'segmentation' or 'classification'")
    modalities = _get(doc, "modalities", list, path)
    if not modalities or not all(isinstance(m, str) and m for m in modalities):
        raise VolsegError(f"{path}: key 'modalities' must be a non-empty list of names")
    if len(set(modalities)) != len(modalities):
        raise VolsegError(f"{path}: key 'modalities' repeats a name: {modalities}")
    labels: dict[int, str] = {}
    if "labels" in doc or task == "segmentation":
        labels = _int_keyed(_get(doc, "labels", dict, path), path, "labels")
    classes: list[str] = []
    if "classes" in doc or task == "classification":
        classes = _get(doc, "classes", list, path)
        if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
            raise VolsegError(f"{path}: key 'classes' must be a list of distinct names")
    root = path.parent
    cases = [
        _volseg_case(entry, f"cases[{i}]", modalities, root, path)
        for i, entry in enumerate(_get(doc, "cases", list, path))
    ]
    test = [
        _volseg_case(entry, f"test[{i}]", modalities, root, path)
        for i, entry in enumerate(_get(doc, "test", list, path, required=False) or [])
    ]
    name = _get(doc, "name", str, path, required=False) or path.parent.name
    info = {key: doc[key] for key in EXTRA_TOP_KEYS if key in doc}
    return Manifest(name, task, modalities, cases, labels, classes, test, path, "volseg", info)


def _volseg_case(entry: Any, where: str, modalities: list[str], root: Path, path: Path) -> Case:
    if not isinstance(entry, dict):
        raise VolsegError(f"{path}: {where} must be an object with keys {', '.join(CASE_KEYS)}")
    for key in entry:
        if key not in CASE_KEYS:
            raise VolsegError(
                f"{path}: unknown key {where}.{key}{_hint(key, CASE_KEYS)}; "
                f"allowed: {', '.join(CASE_KEYS)}"
            )
    case_id = _get(entry, "id", str, path, where)
    where = f"{where} ({case_id})"
    images = {}
    for modality, value in _get(entry, "images", dict, path, where).items():
        if modality not in modalities:
            raise VolsegError(
                f"{path}: {where}.images has modality {modality!r}, which is not in "
                f"'modalities' {modalities}; add it there or fix the name"
            )
        images[modality] = _image_source(value, f"{where}.images.{modality}", root, path)
    # keep the manifest's modality order whatever order the case lists them in
    images = {m: images[m] for m in modalities if m in images}
    optional = {key: _get(entry, key, str, path, where, required=False) for key in CASE_KEYS[3:]}
    return Case(
        case_id,
        images,
        label=_abs_or_none(optional["label"], root),
        target=optional["class"],
        mask=_abs_or_none(optional["mask"], root),
        subject=_get(entry, "subject", str, path, where, required=False),
    )


def _image_source(value: Any, where: str, root: Path, path: Path) -> ImageSource:
    if isinstance(value, str) and value:
        return ImageSource(_abs(value, root))
    if isinstance(value, dict) and set(value) <= {"path", "channel"}:
        channel = _get(value, "channel", int, path, where, required=False)
        if channel is not None and channel < 0:
            raise VolsegError(f"{path}: {where}.channel must be >= 0, got {channel}")
        return ImageSource(_abs(_get(value, "path", str, path, where), root), channel)
    raise VolsegError(
        f'{path}: {where} must be a path or {{"path": ..., "channel": N}}, got {value!r}'
    )


# --- Medical Segmentation Decathlon ----------------------------------------------------------


def _load_msd(doc: dict[str, Any], path: Path) -> Manifest:
    modality = _int_keyed(_get(doc, "modality", dict, path), path, "modality")
    modalities = _unique(list(modality.values()))
    labels = _int_keyed(_get(doc, "labels", dict, path), path, "labels")
    root = path.parent

    def images(file: str) -> dict[str, ImageSource]:
        image = _abs(file, root)
        if len(modalities) == 1:
            return {modalities[0]: ImageSource(image)}
        return {m: ImageSource(image, channel=i) for i, m in enumerate(modalities)}

    cases = []
    for i, entry in enumerate(_get(doc, "training", list, path)):
        where = f"training[{i}]"
        if not isinstance(entry, dict):
            raise VolsegError(f'{path}: {where} must be {{"image": ..., "label": ...}}')
        image = _get(entry, "image", str, path, where)
        label = _get(entry, "label", str, path, where)
        cases.append(Case(_case_id(image), images(image), label=_abs(label, root)))
    test = []
    for i, entry in enumerate(_get(doc, "test", list, path, required=False) or []):
        # the real files list test images as plain strings; accept {"image": ...} as well
        image = entry if isinstance(entry, str) else None
        if isinstance(entry, dict):
            image = _get(entry, "image", str, path, f"test[{i}]")
        if not image:
            raise VolsegError(f"{path}: test[{i}] must be an image path, got {entry!r}")
        test.append(Case(_case_id(image), images(image)))
    name = _get(doc, "name", str, path, required=False) or path.parent.name
    return Manifest(name, "segmentation", modalities, cases, labels, [], test, path, "msd")


# --- nnU-Net v2 raw ----------------------------------------------------------------------------


def _load_nnunet(doc: dict[str, Any], path: Path) -> Manifest:
    channels = _int_keyed(_get(doc, "channel_names", dict, path), path, "channel_names")
    if sorted(channels) != list(range(len(channels))):
        raise VolsegError(
            f"{path}: key 'channel_names' must number channels 0..{len(channels) - 1}, "
            f"got {sorted(channels)}"
        )
    modalities = _unique(list(channels.values()))
    ending = _get(doc, "file_ending", str, path)
    labels: dict[int, str] = {}
    for name, value in _get(doc, "labels", dict, path).items():
        if isinstance(value, list | tuple):
            raise VolsegError(
                f"{path}: labels.{name} is a region {value} (nnU-Net region-based training); "
                "volseg needs one integer per label, so give each label its own value"
            )
        if not isinstance(value, int) or isinstance(value, bool):
            raise VolsegError(f"{path}: labels.{name} must be an integer, got {value!r}")
        if value in labels:
            raise VolsegError(f"{path}: labels {labels[value]!r} and {name!r} share value {value}")
        labels[value] = name
    labels = dict(sorted(labels.items()))
    root = path.parent

    def case(case_id: str, folder: str, label: bool) -> Case:
        images = {
            m: ImageSource(_abs(f"{folder}/{case_id}_{i:04d}{ending}", root))
            for i, m in enumerate(modalities)
        }
        label_path = _abs(f"labelsTr/{case_id}{ending}", root) if label else None
        return Case(case_id, images, label=label_path)

    if "dataset" in doc:  # explicit file list instead of the folder convention
        cases = [
            _nnunet_listed(case_id, entry, modalities, root, path)
            for case_id, entry in _get(doc, "dataset", dict, path).items()
        ]
    else:
        if not (root / "imagesTr").is_dir():
            raise VolsegError(
                f"{path}: nnU-Net dataset has no imagesTr/ folder next to dataset.json; "
                "put the training images in imagesTr/{CASE}_{XXXX}" + ending
            )
        ids = _channel_files(root / "imagesTr", ending) | _plain_files(root / "labelsTr", ending)
        cases = [case(case_id, "imagesTr", label=True) for case_id in sorted(ids)]
    test_ids = _channel_files(root / "imagesTs", ending)
    test = [case(case_id, "imagesTs", label=False) for case_id in sorted(test_ids)]
    name = _get(doc, "name", str, path, required=False) or path.parent.name
    return Manifest(name, "segmentation", modalities, cases, labels, [], test, path, "nnunetv2")


def _nnunet_listed(case_id: str, entry: Any, modalities: list[str], root: Path, path: Path) -> Case:
    where = f"dataset.{case_id}"
    if not isinstance(entry, dict):
        raise VolsegError(f'{path}: {where} must be {{"images": [...], "label": ...}}')
    files = _get(entry, "images", list, path, where)
    if len(files) != len(modalities) or not all(isinstance(f, str) for f in files):
        raise VolsegError(
            f"{path}: {where}.images must list {len(modalities)} paths, one per channel"
        )
    images = {m: ImageSource(_abs(f, root)) for m, f in zip(modalities, files, strict=True)}
    return Case(case_id, images, label=_abs(_get(entry, "label", str, path, where), root))


def _channel_files(folder: Path, ending: str) -> set[str]:
    pattern = re.compile(r"(.+)_\d{4}" + re.escape(ending))
    return {m.group(1) for name in _listing(folder) if (m := pattern.fullmatch(name))}


def _plain_files(folder: Path, ending: str) -> set[str]:
    return {name[: -len(ending)] for name in _listing(folder) if name.endswith(ending)}


def _listing(folder: Path) -> list[str]:
    """File names in ``folder``, without hidden ones (macOS ``._x.nii.gz`` junk included)."""
    if not folder.is_dir():
        return []
    return [p.name for p in folder.iterdir() if not p.name.startswith(".")]


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
            {m: ImageSource(_abs(cells[m], root)) for m in modalities if cells[m]},
            target=cells.get("label") or None,
            mask=_abs_or_none(cells.get("mask") or None, root),
            subject=cells.get("subject") or None,
        )
        (cases if case.target is not None else test).append(case)
    found = classes if classes is not None else _sorted_classes({c.target for c in cases})
    return Manifest(
        path.stem, "classification", modalities, cases, [], list(found), test, path, "csv"
    )


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


# --- shared helpers ----------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise VolsegError(
            f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); fix the file"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise VolsegError(f"{path}: cannot read ({e})") from None
    if not isinstance(doc, dict):
        raise VolsegError(f"{path}: top level must be a JSON object, got {type(doc).__name__}")
    return doc


_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def _get(
    doc: dict[str, Any],
    key: str,
    kind: type,
    path: Path,
    where: str = "",
    *,
    required: bool = True,
) -> Any:
    """``doc[key]`` checked to be of type ``kind``; None when absent and not required."""
    name = f"{where}.{key}" if where else key
    if key not in doc or doc[key] is None:
        if required:
            raise VolsegError(f"{path}: required key {name!r} is missing; add it")
        return None
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise VolsegError(
            f"{path}: key {name!r} must be {_TYPE_NAMES.get(kind, kind.__name__)}, "
            f"got {type(value).__name__} {value!r:.60}"
        )
    return value


def _int_keyed(mapping: dict[str, Any], path: Path, key: str) -> dict[int, str]:
    """``{"0": "CT", "1": "PET"}`` -> ``{0: "CT", 1: "PET"}``, sorted by the integer."""
    out: dict[int, str] = {}
    for k, v in mapping.items():
        try:
            index = int(k)
        except ValueError:
            raise VolsegError(f"{path}: {key} key {k!r} is not an integer") from None
        if not isinstance(v, str) or not v:
            raise VolsegError(f"{path}: {key}.{k} must be a non-empty name, got {v!r}")
        out[index] = v
    if not out:
        raise VolsegError(f"{path}: key {key!r} is empty")
    return dict(sorted(out.items()))


def _unique(names: list[str]) -> list[str]:
    """Modality names made unique: ``["zscore", "zscore"]`` -> ``["zscore", "zscore_1"]``."""
    out: list[str] = []
    for i, name in enumerate(names):
        out.append(name if name not in out else f"{name}_{i}")
    return out


def _abs(value: str | Path, root: Path) -> Path:
    """Absolute, normalised path (``./x`` and ``..`` folded, symlinks kept)."""
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else root.absolute() / path))


def _abs_or_none(value: str | None, root: Path) -> Path | None:
    return None if value is None else _abs(value, root)


def _case_id(file: str) -> str:
    """Case id of an image path: the file name without its image extension."""
    name = Path(file).name
    for ending in IMAGE_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def _hint(key: str, allowed: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
