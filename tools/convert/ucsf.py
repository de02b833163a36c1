"""UCSF-PDGM: WHO CNS grade 2/3/4 classification from the metadata CSV."""

from __future__ import annotations

import re
from pathlib import Path

from tools.convert.common import (
    Warn,
    from_template,
    nifti_file,
    nifti_stem,
    no_cases_error,
    read_csv_column,
    read_template,
    report_missing,
    require_dir,
    search_folders,
    subdirs,
    visible_files,
    warn_on_stderr,
)
from volseg.data.manifest import Case, ImageSource, Manifest
from volseg.errors import VolsegError

UCSF_FILES = {"T1": "T1", "T1ce": "T1c", "T2": "T2", "FLAIR": "FLAIR"}


# --------------------------------------------------------------------------- UCSF-PDGM


UCSF_FOLDER = re.compile(r"UCSF-PDGM-(\d+)(_.+)?_nifti$")


def _ucsf_metadata(source: Path, roots: list[Path]) -> Path:
    folders = dict.fromkeys([source, source.parent, *roots, *(r.parent for r in roots)])
    for folder in folders:
        found = sorted(folder.glob("UCSF-PDGM-metadata*.csv"))
        if found:
            return found[-1]  # the highest version, e.g. _v2 over _v1
    raise VolsegError(
        f"{source}: no UCSF-PDGM-metadata*.csv here or in {source.parent}; pass it with --metadata"
    )


def _grade(value: str) -> str:
    """'4', '4.0' or ' 4 ' -> '4'; anything else is returned unchanged for the error message."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else value


def convert_ucsf_pdgm(
    source: Path,
    *,
    metadata: Path | None = None,
    skip_incomplete: bool = False,
    warn: Warn = warn_on_stderr,
) -> Manifest:
    """UCSF-PDGM as WHO CNS grade classification (classes "2", "3", "4").

    Args:
        source: the ``UCSF-PDGM-v3`` folder of ``UCSF-PDGM-NNNN_nifti`` case folders (or a
            folder up to two levels above it).
        metadata: the metadata CSV; by default the newest ``UCSF-PDGM-metadata*.csv`` in
            ``source``, its parent, or next to the case folders. Its ``ID`` column has 3-digit
            numbers (``UCSF-PDGM-004``), matched to the 4-digit folders by integer value.
        skip_incomplete: leave out cases with a missing file or grade instead of failing.
        warn: called with a message for every case left out.

    Returns:
        Cases with images T1, T1ce (the ``T1c`` file), T2, FLAIR, ``mask`` = the tumour
        segmentation and ``target`` = the grade. Follow-up folders (``_FU..._nifti``) keep the
        patient as ``subject``.
    """
    source = require_dir(Path(source), "pass the extracted UCSF-PDGM folder (UCSF-PDGM-v3)")
    roots = search_folders(source, lambda f: any(UCSF_FOLDER.match(c.name) for c in subdirs(f)))
    folders = [c for root in roots for c in subdirs(root) if UCSF_FOLDER.match(c.name)]
    if not folders:
        raise no_cases_error(source, "UCSF-PDGM-NNNN_nifti case folders")
    if metadata is None:
        metadata = _ucsf_metadata(source, roots)
    elif not Path(metadata).is_file():
        raise VolsegError(f"{metadata}: metadata CSV not found; check --metadata")
    metadata = Path(metadata).resolve()
    grades: dict[int, tuple[str, str]] = {}  # patient number -> (CSV id, grade)
    for csv_id, grade in read_csv_column(metadata, "ID", "WHO CNS Grade").items():
        number = csv_id.rsplit("-", 1)[-1]
        if number.isdigit():
            grades[int(number)] = (csv_id, _grade(grade))

    template = read_template("ucsf_pdgm.json")
    classes = template["classes"]
    cases: list[Case] = []
    for folder in folders:
        match = UCSF_FOLDER.match(folder.name)
        assert match is not None
        case_id, number = folder.name.removesuffix("_nifti"), int(match.group(1))
        subject = f"UCSF-PDGM-{number:04d}"
        csv_id, grade = grades.get(number, ("", ""))
        if not grade:
            what = f"WHO CNS Grade (ID UCSF-PDGM-{number:03d})"
            report_missing(case_id, what, metadata, skip_incomplete, warn, "add it to the CSV")
            continue
        if grade not in classes:
            raise VolsegError(
                f"{metadata}: WHO CNS Grade {grade!r} of {csv_id} is not one of {classes}; "
                "fix the value or leave the row out"
            )
        tokens = {**UCSF_FILES, "mask": "tumor_segmentation"}
        files = {name: _ucsf_file(folder, case_id, token) for name, token in tokens.items()}
        absent = [name for name, path in files.items() if path is None]
        if absent:
            where = folder / f"{case_id}_{tokens[absent[0]]}.nii.gz"
            report_missing(case_id, absent[0], where, skip_incomplete, warn)
            continue
        images = {name: ImageSource(files[name]) for name in UCSF_FILES}  # type: ignore[arg-type]
        cases.append(
            Case(
                id=case_id,
                images=images,
                target=grade,
                mask=files["mask"],
                subject=subject if subject != case_id else None,
            )
        )
    return from_template(template, cases)


def _ucsf_file(folder: Path, case_id: str, token: str) -> Path | None:
    """``CASE_token.nii[.gz]``, else the one file ending in ``_token.nii[.gz]`` (not ``_bias``)."""
    path = nifti_file(folder, f"{case_id}_{token}")
    if path is not None:
        return path
    matches = [p for p in visible_files(folder) if nifti_stem(p).endswith(f"_{token}")]
    return matches[0] if len(matches) == 1 else None
