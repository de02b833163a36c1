"""What every converter shares: the templates in ``data_manifests/``, finding folders and
NIfTI files in a download, and reporting a case with a missing file.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path

from volseg.data.manifest import Case, Manifest
from volseg.errors import VolsegError

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "data_manifests"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
SEARCH_DEPTH = 2  # how far below SOURCE_DIR a layout's root may sit (Kaggle adds wrapper folders)

Warn = Callable[[str], None]


def warn_on_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- templates


def read_template(filename: str) -> dict:
    """The template ``data_manifests/<filename>`` as parsed JSON (a volseg manifest, no cases)."""
    path = TEMPLATES_DIR / filename
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VolsegError(f"{path}: template not found; run from a full volseg checkout") from None


def from_template(
    template: dict,
    cases: list[Case],
    test_cases: list[Case] | None = None,
    *,
    name: str | None = None,
    modalities: list[str] | None = None,
) -> Manifest:
    """A manifest with the template's task, label map, classes (and name, modalities)."""
    return Manifest(
        name=name or template["name"],
        task=template["task"],
        modalities=modalities or list(template["modalities"]),
        cases=cases,
        labels={int(k): v for k, v in template.get("labels", {}).items()},
        classes=list(template.get("classes", [])),
        test_cases=test_cases or [],
    )


# --------------------------------------------------------------------------- file finding


def require_dir(path: Path, hint: str) -> Path:
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "folder not found"
        raise VolsegError(f"{path}: {what}; {hint}")
    return path.resolve()


def subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def visible_files(folder: Path) -> list[Path]:
    """Visible files of ``folder``, sorted; macOS ``._*`` and other dot files are skipped."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def folder_levels(root: Path, depth: int = SEARCH_DEPTH) -> list[list[Path]]:
    """``[[root], root's subfolders, their subfolders, ...]`` down to ``depth`` levels below."""
    levels = [[root]]
    for _ in range(depth):
        levels.append([sub for folder in levels[-1] for sub in subdirs(folder)])
    return levels


def search_folders(
    root: Path, found: Callable[[Path], bool], depth: int = SEARCH_DEPTH
) -> list[Path]:
    """Folders at ``root`` or up to ``depth`` levels below it for which ``found`` holds.

    Returns the matches of the shallowest level that has any, so a wrapper folder (Kaggle's
    ``BraTS2020_TrainingData/``) is looked through but nested copies are not mixed in.
    """
    for level in folder_levels(root, depth):
        hits = [folder for folder in level if found(folder)]
        if hits:
            return hits
    return []


def nifti_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii``, whichever exists."""
    for suffix in NIFTI_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def nifti_stem(path: Path) -> str:
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def report_missing(
    case_id: str, what: str, path: Path, skip: bool, warn: Warn, fix: str = "add the file"
) -> None:
    """Report a case with a missing file or value: a warning when skipping, else an error."""
    if skip:
        warn(f"{path}: {what} of case {case_id} not found; case left out")
        return
    raise VolsegError(
        f"{path}: {what} of case {case_id} not found; {fix}, or pass --skip-incomplete "
        "to leave incomplete cases out"
    )


def no_cases_error(source: Path, expected: str) -> VolsegError:
    return VolsegError(f"{source}: no cases found (expected {expected}); check SOURCE_DIR")


def read_csv_column(path: Path, key: str, value: str) -> dict[str, str]:
    """``{row[key]: row[value]}`` of a CSV file, both stripped; a missing column is an error."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for column in (key, value):
            if column not in columns:
                raise VolsegError(
                    f"{path}: no column {column!r} (found {', '.join(columns)}); "
                    "pass the dataset's original CSV"
                )
        return {
            (row[key] or "").strip(): (row[value] or "").strip()
            for row in reader
            if (row[key] or "").strip()
        }
