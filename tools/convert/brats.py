"""BraTS: the 2021 segmentation task, and BraTS 2019/2020 as LGG-vs-HGG classification."""

from __future__ import annotations

import re
from pathlib import Path

from tools.convert.common import (
    NIFTI_SUFFIXES,
    SEARCH_DEPTH,
    Warn,
    folder_levels,
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

BRATS_FILES = {"T1": "t1", "T1ce": "t1ce", "T2": "t2", "FLAIR": "flair"}


# --------------------------------------------------------------------------- BraTS


def _brats_images(
    folder: Path, case_id: str, skip: bool, warn: Warn
) -> dict[str, ImageSource] | None:
    images: dict[str, ImageSource] = {}
    for name, token in BRATS_FILES.items():
        path = nifti_file(folder, f"{case_id}_{token}")
        if path is None:
            report_missing(case_id, name, folder / f"{case_id}_{token}.nii.gz", skip, warn)
            return None
        images[name] = ImageSource(path)
    return images


def _brats_seg(folder: Path, case_id: str) -> Path | None:
    """``CASE_seg.nii[.gz]``, or the single other segmentation-like file of the case folder.

    The fallback exists for BraTS20_Training_355, whose segmentation ships as
    ``W39_1998.09.19_Segm.nii``.
    """
    seg = nifti_file(folder, f"{case_id}_seg")
    if seg is not None:
        return seg
    modality_files = {f"{case_id}_{token}" for token in BRATS_FILES.values()}
    others = [
        p
        for p in visible_files(folder)
        if p.name.endswith(NIFTI_SUFFIXES)
        and nifti_stem(p) not in modality_files
        and "seg" in p.name.lower()
    ]
    return others[0] if len(others) == 1 else None


def _is_brats_case(folder: Path, prefix: str = "") -> bool:
    """A folder named ``<prefix>...`` holding some ``<folder name>_*.nii[.gz]`` file.

    Any such file counts, so a case missing a modality is found (and reported), not skipped.
    """
    if not folder.name.startswith(prefix):
        return False
    return any(
        p.name.startswith(f"{folder.name}_") and p.name.endswith(NIFTI_SUFFIXES)
        for p in visible_files(folder)
    )


def convert_brats2021(
    source: Path, *, skip_incomplete: bool = False, warn: Warn = warn_on_stderr
) -> Manifest:
    """BraTS 2021 Task 1 segmentation from its extracted training (or validation) data.

    Args:
        source: the folder of ``BraTS2021_NNNNN`` case folders (or a folder up to two levels
            above it).
        skip_incomplete: leave out cases missing a modality or segmentation instead of failing.
        warn: called with a message for every case left out.

    Returns:
        Labelled cases; when no case folder has a ``_seg`` file (validation data) all cases
        become test cases. Labels keep BraTS values 0, 1, 2, 4.
    """
    source = require_dir(Path(source), "pass the extracted BraTS 2021 training data folder")
    # Case folders at any of the top levels: the Kaggle copy ships BraTS2021_00495 and
    # BraTS2021_00621 as separate archives next to BraTS2021_Training_Data.tar.
    found: dict[str, Path] = {}
    for level in folder_levels(source, SEARCH_DEPTH + 1):
        for folder in level:
            if _is_brats_case(folder, "BraTS2021_"):
                found.setdefault(folder.name, folder)
    folders = [found[name] for name in sorted(found)]
    if not folders:
        raise no_cases_error(source, "BraTS2021_NNNNN/BraTS2021_NNNNN_*.nii.gz case folders")
    segs = {f: nifti_file(f, f"{f.name}_seg") for f in folders}
    labelled = any(seg is not None for seg in segs.values())
    cases: list[Case] = []
    for folder in folders:
        images = _brats_images(folder, folder.name, skip_incomplete, warn)
        if images is None:
            continue
        seg = segs[folder]
        if labelled and seg is None:
            where = folder / f"{folder.name}_seg.nii.gz"
            report_missing(folder.name, "segmentation", where, skip_incomplete, warn)
            continue
        cases.append(Case(id=folder.name, images=images, label=seg))
    template = read_template("brats2021.json")
    if labelled:
        return from_template(template, cases)
    return from_template(template, [], cases)


def convert_brats_grading(
    source: Path, *, skip_incomplete: bool = False, warn: Warn = warn_on_stderr
) -> Manifest:
    """BraTS 2019 or 2020 training data as LGG-vs-HGG classification (layout detected).

    Args:
        source: ``MICCAI_BraTS_2019_Data_Training`` (with ``HGG/`` and ``LGG/``) or
            ``MICCAI_BraTS2020_TrainingData`` (with ``name_mapping.csv``), or a folder up to two
            levels above either.
        skip_incomplete: leave out cases with a missing file or grade instead of failing.
        warn: called with a message for every case left out.

    Returns:
        Cases with ``target`` "LGG" or "HGG" and ``mask`` = the BraTS tumour segmentation.
    """
    source = require_dir(Path(source), "pass the extracted BraTS 2019/2020 training data")
    graded: list[tuple[Path, str | None]] = []  # (case folder, grade or None if unknown)
    by_folder = search_folders(source, lambda f: (f / "HGG").is_dir() and (f / "LGG").is_dir())
    by_csv = search_folders(source, lambda f: (f / "name_mapping.csv").is_file())
    grade_source: Path
    if by_folder:  # BraTS 2019 (and 2018): the grade is the parent folder
        grade_source = by_folder[0]
        for grade in ("LGG", "HGG"):
            graded += [(c, grade) for c in subdirs(grade_source / grade) if _is_brats_case(c)]
    elif by_csv:  # BraTS 2020: the grade is in name_mapping.csv
        grade_source = by_csv[0] / "name_mapping.csv"
        grades = read_csv_column(grade_source, "BraTS_2020_subject_ID", "Grade")
        for folder in subdirs(by_csv[0]):
            if _is_brats_case(folder):
                graded.append((folder, grades.get(folder.name)))
    else:
        raise VolsegError(
            f"{source}: neither HGG/ and LGG/ folders (BraTS 2019) nor name_mapping.csv "
            "(BraTS 2020) found; pass the extracted BraTS training data folder"
        )
    if not graded:
        raise no_cases_error(grade_source, "case folders CASE/ holding CASE_*.nii[.gz] files")

    template = read_template("brats_grading.json")
    classes = template["classes"]
    cases: list[Case] = []
    for folder, grade in graded:
        case_id = folder.name
        if not grade:
            report_missing(
                case_id, "Grade", grade_source, skip_incomplete, warn, "add the case's row"
            )
            continue
        if grade not in classes:
            raise VolsegError(
                f"{grade_source}: grade {grade!r} of case {case_id} is not one of {classes}; "
                "fix the value"
            )
        images = _brats_images(folder, case_id, skip_incomplete, warn)
        if images is None:
            continue
        seg = _brats_seg(folder, case_id)
        if seg is None:
            suffix = ".nii.gz" if images["FLAIR"].path.name.endswith(".gz") else ".nii"
            where = folder / f"{case_id}_seg{suffix}"
            report_missing(case_id, "segmentation", where, skip_incomplete, warn)
            continue
        cases.append(Case(id=case_id, images=images, target=grade, mask=seg))
    year = re.match(r"brats(\d+)", graded[0][0].name.lower())
    name = f"brats20{year.group(1)}_grading" if year else template["name"]
    return from_template(template, cases, name=name)
