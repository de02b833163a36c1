"""Convert a public dataset from its download layout to a volseg manifest.

Usage::

    python tools/convert_dataset.py DATASET SOURCE_DIR -o OUT.json [options]

Each dataset has a template in ``data_manifests/`` that holds its label map or classes and its
modality names (the one source of truth); the converter finds the cases in SOURCE_DIR's native
layout and writes the full manifest, with paths relative to OUT.json. Every converter is a
function (``convert_msd``, ``convert_btcv``, ...) returning a :class:`Manifest` whose paths are
absolute; :func:`write_manifest` saves it.

Errors a user can cause (folder missing, no cases, a file missing, a grade not found) are
:class:`VolsegError`; the script prints them as one ``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout: use the in-repo volseg
    sys.path.insert(0, str(REPO_ROOT))

from volseg.data.manifest import Case, ImageSource, Manifest, save_manifest  # noqa: E402
from volseg.errors import VolsegError  # noqa: E402

TEMPLATES_DIR = REPO_ROOT / "data_manifests"
MSD_TEMPLATES = {1: "msd_task01_braintumour.json", 9: "msd_task09_spleen.json"}
# AMOS22: amos_0001-0500 are CT, amos_0501-0600 MRI. The AMOS readme says "less than 500", but
# the release has 500 CT scans numbered from 1 and amos_0500 is a CT volume, so 500 is CT.
AMOS_LAST_CT_ID = 500
AMOS_MODALITY = {"ct": "CT", "mri": "MRI", "all": "CT_or_MRI"}
BRATS_FILES = {"T1": "t1", "T1ce": "t1ce", "T2": "t2", "FLAIR": "flair"}
UCSF_FILES = {"T1": "T1", "T1ce": "T1c", "T2": "T2", "FLAIR": "FLAIR"}
NIFTI_SUFFIXES = (".nii.gz", ".nii")
SEARCH_DEPTH = 2  # how far below SOURCE_DIR a layout's root may sit (Kaggle adds wrapper folders)

Warn = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- templates


def read_template(filename: str) -> dict:
    """The template ``data_manifests/<filename>`` as parsed JSON (a volseg manifest, no cases)."""
    path = TEMPLATES_DIR / filename
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VolsegError(f"{path}: template not found; run from a full volseg checkout") from None


def _from_template(
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


def _require_dir(path: Path, hint: str) -> Path:
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "folder not found"
        raise VolsegError(f"{path}: {what}; {hint}")
    return path.resolve()


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path) -> list[Path]:
    """Visible files of ``folder``, sorted; macOS ``._*`` and other dot files are skipped."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _levels(root: Path, depth: int = SEARCH_DEPTH) -> list[list[Path]]:
    """``[[root], root's subfolders, their subfolders, ...]`` down to ``depth`` levels below."""
    levels = [[root]]
    for _ in range(depth):
        levels.append([sub for folder in levels[-1] for sub in _subdirs(folder)])
    return levels


def _search(root: Path, found: Callable[[Path], bool], depth: int = SEARCH_DEPTH) -> list[Path]:
    """Folders at ``root`` or up to ``depth`` levels below it for which ``found`` holds.

    Returns the matches of the shallowest level that has any, so a wrapper folder (Kaggle's
    ``BraTS2020_TrainingData/``) is looked through but nested copies are not mixed in.
    """
    for level in _levels(root, depth):
        hits = [folder for folder in level if found(folder)]
        if hits:
            return hits
    return []


def _nifti(folder: Path, stem: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii``, whichever exists."""
    for suffix in NIFTI_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _nifti_stem(path: Path) -> str:
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _missing(
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


def _no_cases(source: Path, expected: str) -> VolsegError:
    return VolsegError(f"{source}: no cases found (expected {expected}); check SOURCE_DIR")


# --------------------------------------------------------------------------- MSD


def _msd_path(root: Path, entry: str) -> Path:
    return root / entry.removeprefix("./")


def convert_msd(source: Path, *, skip_incomplete: bool = False, warn: Warn = _stderr) -> Manifest:
    """Any Medical Segmentation Decathlon task, read from its ``dataset.json``.

    Args:
        source: the extracted task folder ``TaskXX_Name`` (holding ``dataset.json``).
        skip_incomplete: leave out cases whose files are missing instead of failing.
        warn: called with a message for every case left out or template mismatch.

    Returns:
        The manifest; multi-modal (4D) images become one :class:`ImageSource` per channel.
        Cases come from ``dataset.json``, so stray files (macOS ``._*``) are never picked up.
    """
    root = _require_dir(Path(source), "pass the extracted MSD task folder, e.g. Task09_Spleen")
    json_path = root / "dataset.json"
    if not json_path.is_file():
        raise VolsegError(f"{json_path}: not found; pass the MSD task folder that holds it")
    try:
        info = json.loads(json_path.read_text())
        modality = {int(k): v for k, v in info["modality"].items()}
        labels = {int(k): v for k, v in info["labels"].items()}
        training = [(e["image"], e["label"]) for e in info.get("training", [])]
        test = [e if isinstance(e, str) else e["image"] for e in info.get("test", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VolsegError(
            f"{json_path}: not an MSD dataset.json ({type(exc).__name__}: {exc}); "
            "pass an unmodified MSD task folder"
        ) from None
    modalities = [modality[k] for k in sorted(modality)]

    def images(path: Path) -> dict[str, ImageSource]:
        if len(modalities) == 1:
            return {modalities[0]: ImageSource(path)}
        return {m: ImageSource(path, channel=i) for i, m in enumerate(modalities)}

    cases: list[Case] = []
    for image_entry, label_entry in training:
        image, label = _msd_path(root, image_entry), _msd_path(root, label_entry)
        case_id = _nifti_stem(image)
        if not image.is_file():
            _missing(case_id, "image", image, skip_incomplete, warn)
        elif not label.is_file():
            _missing(case_id, "label", label, skip_incomplete, warn)
        else:
            cases.append(Case(id=case_id, images=images(image), label=label))
    test_cases: list[Case] = []
    for entry in test:
        image = _msd_path(root, entry)
        if image.is_file():
            test_cases.append(Case(id=_nifti_stem(image), images=images(image)))
        else:
            _missing(_nifti_stem(image), "test image", image, skip_incomplete, warn)
    if not cases and not test_cases:
        raise _no_cases(root, "training entries in dataset.json with files in imagesTr/")

    match = re.match(r"Task(\d+)_", root.name)
    template_file = MSD_TEMPLATES.get(int(match.group(1))) if match else None
    if template_file is None:
        return Manifest(
            name=f"msd_{root.name.lower()}",
            task="segmentation",
            modalities=modalities,
            cases=cases,
            labels=labels,
            test_cases=test_cases,
        )
    template = read_template(template_file)
    manifest = _from_template(template, cases, test_cases)
    if manifest.labels != labels or manifest.modalities != modalities:
        warn(f"{json_path}: labels or modalities differ from {template_file}; using dataset.json")
        manifest.labels, manifest.modalities = labels, modalities
    return manifest


# --------------------------------------------------------------------------- BTCV


def convert_btcv(source: Path, *, skip_incomplete: bool = False, warn: Warn = _stderr) -> Manifest:
    """BTCV Abdomen ("Synapse" multi-organ CT) from the unzipped ``RawData.zip``.

    Args:
        source: the folder holding ``RawData/`` (or ``Abdomen/RawData/``), or ``RawData`` itself.
        skip_incomplete: leave out training images without a label instead of failing.
        warn: called with a message for every case left out.

    Returns:
        Labelled cases ``btcv_NNNN`` from ``Training/``, test cases from ``Testing/img``.
    """
    source = _require_dir(Path(source), "pass the folder extracted from RawData.zip")
    candidates = [source, source / "RawData", source / "Abdomen" / "RawData"]
    root = next((c for c in candidates if (c / "Training" / "img").is_dir()), None)
    if root is None:
        raise VolsegError(
            f"{source}: no RawData/Training/img folder; pass the folder extracted from "
            "RawData.zip (holding RawData/) or RawData itself"
        )
    pattern = re.compile(r"img(\d+)\.nii(\.gz)?$")

    def found(folder: Path) -> list[tuple[str, Path]]:
        return [(m.group(1), p) for p in _files(folder) if (m := pattern.match(p.name))]

    cases: list[Case] = []
    for number, image in found(root / "Training" / "img"):
        label = _nifti(root / "Training" / "label", f"label{number}")
        if label is None:
            where = root / "Training" / "label" / f"label{number}.nii.gz"
            _missing(f"btcv_{number}", "label", where, skip_incomplete, warn)
            continue
        cases.append(Case(id=f"btcv_{number}", images={"CT": ImageSource(image)}, label=label))
    test_cases = [
        Case(id=f"btcv_{number}", images={"CT": ImageSource(image)})
        for number, image in found(root / "Testing" / "img")
    ]
    if not cases:
        raise _no_cases(root / "Training" / "img", "imgNNNN.nii.gz files")
    return _from_template(read_template("btcv.json"), cases, test_cases)


# --------------------------------------------------------------------------- AMOS22


def convert_amos22(
    source: Path,
    *,
    modality: str = "ct",
    skip_incomplete: bool = False,
    warn: Warn = _stderr,
) -> Manifest:
    """AMOS22 (post-challenge release) from the unzipped ``amos22.zip``.

    Args:
        source: the ``amos22`` folder (holding ``imagesTr/``), or the folder holding ``amos22/``.
        modality: ``"ct"`` (ids <= 500), ``"mri"`` (ids > 500) or ``"all"``; the manifest's one
            modality is named ``CT``, ``MRI`` or ``CT_or_MRI``.
        skip_incomplete: leave out training/validation images without a label instead of failing.
        warn: called with a message for every case left out.

    Returns:
        Labelled cases from ``imagesTr`` and ``imagesVa`` (validation labels are public), test
        cases from ``imagesTs`` (labelled if a ``labelsTs`` file exists).
    """
    if modality not in AMOS_MODALITY:
        raise VolsegError(f"--modality {modality}: unknown; use one of {', '.join(AMOS_MODALITY)}")
    source = _require_dir(Path(source), "pass the folder extracted from amos22.zip")
    root = next((c for c in (source, source / "amos22") if (c / "imagesTr").is_dir()), None)
    if root is None:
        raise VolsegError(f"{source}: no imagesTr folder; pass the amos22 folder from amos22.zip")
    template = read_template("amos22.json")
    _check_amos_labels(root / "dataset.json", template, warn)

    def wanted(number: int) -> bool:
        is_ct = number <= AMOS_LAST_CT_ID
        return modality == "all" or (modality == "ct") == is_ct

    name = AMOS_MODALITY[modality]
    pattern = re.compile(r"amos_(\d+)\.nii(\.gz)?$")
    cases: list[Case] = []
    test_cases: list[Case] = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesVa", "labelsVa")):
        for image in _files(root / images_dir):
            match = pattern.match(image.name)
            if not match or not wanted(int(match.group(1))):
                continue
            case_id = _nifti_stem(image)
            label = _nifti(root / labels_dir, case_id)
            if label is None:
                where = root / labels_dir / image.name
                _missing(case_id, "label", where, skip_incomplete, warn)
                continue
            cases.append(Case(id=case_id, images={name: ImageSource(image)}, label=label))
    for image in _files(root / "imagesTs"):
        match = pattern.match(image.name)
        if match and wanted(int(match.group(1))):
            case_id = _nifti_stem(image)
            label = _nifti(root / "labelsTs", case_id)
            case = Case(id=case_id, images={name: ImageSource(image)}, label=label)
            (cases if label else test_cases).append(case)
    if not cases and not test_cases:
        raise _no_cases(root, f"{modality.upper()} amos_NNNN.nii.gz files in imagesTr/imagesVa")
    suffix = "" if modality == "all" else f"_{modality}"
    return _from_template(
        template, cases, test_cases, name=f"{template['name']}{suffix}", modalities=[name]
    )


def _check_amos_labels(json_path: Path, template: dict, warn: Warn) -> None:
    """Warn when the download's dataset.json has other label values than the template."""
    try:
        native = set(json.loads(json_path.read_text())["labels"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # dataset.json is optional: the template defines the labels
    if native != set(template["labels"]):
        warn(f"{json_path}: label values differ from data_manifests/amos22.json")


# --------------------------------------------------------------------------- BraTS


def _brats_images(
    folder: Path, case_id: str, skip: bool, warn: Warn
) -> dict[str, ImageSource] | None:
    images: dict[str, ImageSource] = {}
    for name, token in BRATS_FILES.items():
        path = _nifti(folder, f"{case_id}_{token}")
        if path is None:
            _missing(case_id, name, folder / f"{case_id}_{token}.nii.gz", skip, warn)
            return None
        images[name] = ImageSource(path)
    return images


def _brats_seg(folder: Path, case_id: str) -> Path | None:
    """``CASE_seg.nii[.gz]``, or the single other segmentation-like file of the case folder.

    The fallback exists for BraTS20_Training_355, whose segmentation ships as
    ``W39_1998.09.19_Segm.nii``.
    """
    seg = _nifti(folder, f"{case_id}_seg")
    if seg is not None:
        return seg
    modality_files = {f"{case_id}_{token}" for token in BRATS_FILES.values()}
    others = [
        p
        for p in _files(folder)
        if p.name.endswith(NIFTI_SUFFIXES)
        and _nifti_stem(p) not in modality_files
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
        for p in _files(folder)
    )


def convert_brats2021(
    source: Path, *, skip_incomplete: bool = False, warn: Warn = _stderr
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
    source = _require_dir(Path(source), "pass the extracted BraTS 2021 training data folder")
    # Case folders at any of the top levels: the Kaggle copy ships BraTS2021_00495 and
    # BraTS2021_00621 as separate archives next to BraTS2021_Training_Data.tar.
    found: dict[str, Path] = {}
    for level in _levels(source, SEARCH_DEPTH + 1):
        for folder in level:
            if _is_brats_case(folder, "BraTS2021_"):
                found.setdefault(folder.name, folder)
    folders = [found[name] for name in sorted(found)]
    if not folders:
        raise _no_cases(source, "BraTS2021_NNNNN/BraTS2021_NNNNN_*.nii.gz case folders")
    labelled = any(_nifti(f, f"{f.name}_seg") is not None for f in folders)
    cases: list[Case] = []
    for folder in folders:
        images = _brats_images(folder, folder.name, skip_incomplete, warn)
        if images is None:
            continue
        seg = _nifti(folder, f"{folder.name}_seg")
        if labelled and seg is None:
            where = folder / f"{folder.name}_seg.nii.gz"
            _missing(folder.name, "segmentation", where, skip_incomplete, warn)
            continue
        cases.append(Case(id=folder.name, images=images, label=seg))
    template = read_template("brats2021.json")
    if labelled:
        return _from_template(template, cases)
    return _from_template(template, [], cases)


def convert_brats_grading(
    source: Path, *, skip_incomplete: bool = False, warn: Warn = _stderr
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
    source = _require_dir(Path(source), "pass the extracted BraTS 2019/2020 training data")
    graded: list[tuple[Path, str | None]] = []  # (case folder, grade or None if unknown)
    by_folder = _search(source, lambda f: (f / "HGG").is_dir() and (f / "LGG").is_dir())
    by_csv = _search(source, lambda f: (f / "name_mapping.csv").is_file())
    grade_source: Path
    if by_folder:  # BraTS 2019 (and 2018): the grade is the parent folder
        grade_source = by_folder[0]
        for grade in ("LGG", "HGG"):
            graded += [(c, grade) for c in _subdirs(grade_source / grade) if _is_brats_case(c)]
    elif by_csv:  # BraTS 2020: the grade is in name_mapping.csv
        grade_source = by_csv[0] / "name_mapping.csv"
        grades = _read_csv_column(grade_source, "BraTS_2020_subject_ID", "Grade")
        for folder in _subdirs(by_csv[0]):
            if _is_brats_case(folder):
                graded.append((folder, grades.get(folder.name)))
    else:
        raise VolsegError(
            f"{source}: neither HGG/ and LGG/ folders (BraTS 2019) nor name_mapping.csv "
            "(BraTS 2020) found; pass the extracted BraTS training data folder"
        )
    if not graded:
        raise _no_cases(grade_source, "case folders CASE/ holding CASE_*.nii[.gz] files")

    template = read_template("brats_grading.json")
    classes = template["classes"]
    cases: list[Case] = []
    for folder, grade in graded:
        case_id = folder.name
        if not grade:
            _missing(case_id, "Grade", grade_source, skip_incomplete, warn, "add the case's row")
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
            _missing(case_id, "segmentation", where, skip_incomplete, warn)
            continue
        cases.append(Case(id=case_id, images=images, target=grade, mask=seg))
    year = re.match(r"brats(\d+)", graded[0][0].name.lower())
    name = f"brats20{year.group(1)}_grading" if year else template["name"]
    return _from_template(template, cases, name=name)


def _read_csv_column(path: Path, key: str, value: str) -> dict[str, str]:
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
    warn: Warn = _stderr,
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
    source = _require_dir(Path(source), "pass the extracted UCSF-PDGM folder (UCSF-PDGM-v3)")
    roots = _search(source, lambda f: any(UCSF_FOLDER.match(c.name) for c in _subdirs(f)))
    folders = [c for root in roots for c in _subdirs(root) if UCSF_FOLDER.match(c.name)]
    if not folders:
        raise _no_cases(source, "UCSF-PDGM-NNNN_nifti case folders")
    if metadata is None:
        metadata = _ucsf_metadata(source, roots)
    elif not Path(metadata).is_file():
        raise VolsegError(f"{metadata}: metadata CSV not found; check --metadata")
    metadata = Path(metadata).resolve()
    grades: dict[int, tuple[str, str]] = {}  # patient number -> (CSV id, grade)
    for csv_id, grade in _read_csv_column(metadata, "ID", "WHO CNS Grade").items():
        number = csv_id.rsplit("-", 1)[-1]
        if number.isdigit():
            grades[int(number)] = (csv_id, _grade(grade))

    classes = read_template("ucsf_pdgm.json")["classes"]
    cases: list[Case] = []
    for folder in folders:
        match = UCSF_FOLDER.match(folder.name)
        assert match is not None
        case_id, number = folder.name.removesuffix("_nifti"), int(match.group(1))
        subject = f"UCSF-PDGM-{number:04d}"
        csv_id, grade = grades.get(number, ("", ""))
        if not grade:
            what = f"WHO CNS Grade (ID UCSF-PDGM-{number:03d})"
            _missing(case_id, what, metadata, skip_incomplete, warn, "add it to the CSV")
            continue
        if grade not in classes:
            raise VolsegError(
                f"{metadata}: WHO CNS Grade {grade!r} of {csv_id} is not one of {classes}; "
                "fix the value or leave the row out"
            )
        files = {name: _ucsf_file(folder, case_id, token) for name, token in UCSF_FILES.items()}
        files["mask"] = _ucsf_file(folder, case_id, "tumor_segmentation")
        absent = [name for name, path in files.items() if path is None]
        if absent:
            token = {**UCSF_FILES, "mask": "tumor_segmentation"}[absent[0]]
            where = folder / f"{case_id}_{token}.nii.gz"
            _missing(case_id, absent[0], where, skip_incomplete, warn)
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
    return _from_template(read_template("ucsf_pdgm.json"), cases)


def _ucsf_file(folder: Path, case_id: str, token: str) -> Path | None:
    """``CASE_token.nii[.gz]``, else the one file ending in ``_token.nii[.gz]`` (not ``_bias``)."""
    path = _nifti(folder, f"{case_id}_{token}")
    if path is not None:
        return path
    matches = [p for p in _files(folder) if _nifti_stem(p).endswith(f"_{token}")]
    return matches[0] if len(matches) == 1 else None


# --------------------------------------------------------------------------- writing, CLI


def write_manifest(manifest: Manifest, out: str | Path, template: dict, note: str) -> Path:
    """Save ``manifest`` (paths relative to ``out``) with the template's reference and licence.

    Args:
        manifest: the converted manifest (absolute paths).
        out: the JSON file to write.
        template: the dataset's template; its ``reference`` and ``license`` are copied.
        note: the ``description`` to write (where the manifest came from).

    Returns:
        The path written.
    """
    extras = {"description": note}
    extras.update({k: template[k] for k in ("reference", "license") if k in template})
    manifest.info = {**manifest.info, **extras}
    return save_manifest(manifest, out)


DATASETS = {
    "msd": "any Medical Segmentation Decathlon task folder (reads its dataset.json)",
    "btcv": "BTCV Abdomen / Synapse multi-organ CT (RawData.zip)",
    "amos22": "AMOS22 abdominal CT/MRI (amos22.zip; see --modality)",
    "brats2021": "BraTS 2021 Task 1 segmentation",
    "brats_grading": "BraTS 2019 or 2020 training data as LGG-vs-HGG classification",
    "ucsf_pdgm": "UCSF-PDGM WHO CNS grade 2/3/4 classification (see --metadata)",
}


def template_for(dataset: str, manifest: Manifest) -> dict:
    """The template a converted manifest came from; ``{}`` for an MSD task without one."""
    if dataset == "msd":
        match = re.match(r"msd_task(\d+)_", manifest.name)
        filename = MSD_TEMPLATES.get(int(match.group(1))) if match else None
        return read_template(filename) if filename else {}
    return read_template(f"{dataset}.json")


def convert(dataset: str, source: Path, args: argparse.Namespace) -> Manifest:
    """Run the converter for ``dataset`` with the command-line options in ``args``."""
    skip = args.skip_incomplete
    if dataset == "msd":
        return convert_msd(source, skip_incomplete=skip)
    if dataset == "btcv":
        return convert_btcv(source, skip_incomplete=skip)
    if dataset == "amos22":
        return convert_amos22(source, modality=args.modality, skip_incomplete=skip)
    if dataset == "brats2021":
        return convert_brats2021(source, skip_incomplete=skip)
    if dataset == "brats_grading":
        return convert_brats_grading(source, skip_incomplete=skip)
    return convert_ucsf_pdgm(source, metadata=args.metadata, skip_incomplete=skip)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python tools/convert_dataset.py",
        description=(
            "Write a volseg manifest for a public dataset from its native download layout.\n"
            "Label maps, classes and modality names come from the templates in\n"
            "data_manifests/; paths in the output are relative to OUT.json."
        ),
        epilog="datasets:\n"
        + "\n".join(f"  {k:<14} {v}" for k, v in DATASETS.items())
        + "\n\nexample:\n  python tools/convert_dataset.py msd /data/Task09_Spleen "
        "-o manifests/spleen.json\nSee data_manifests/README.md for each dataset's layout.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dataset",
        choices=sorted(DATASETS),
        metavar="DATASET",
        help="one of: " + ", ".join(DATASETS),
    )
    parser.add_argument(
        "source",
        type=Path,
        metavar="SOURCE_DIR",
        help="the extracted download (see data_manifests/README.md)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT.json",
        help="manifest file to write",
    )
    parser.add_argument(
        "--modality",
        choices=sorted(AMOS_MODALITY),
        default="ct",
        help="amos22 only: CT cases (ids <= 500), MRI cases (ids > 500) or all; default: ct",
    )
    parser.add_argument(
        "--metadata",
        type=Path,
        metavar="CSV",
        help="ucsf_pdgm only: the UCSF-PDGM metadata CSV (default: the newest "
        "UCSF-PDGM-metadata*.csv in SOURCE_DIR or its parent)",
    )
    parser.add_argument(
        "--skip-incomplete",
        action="store_true",
        help="leave out cases with a missing file or grade (with a warning) "
        "instead of stopping with an error",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for errors a user can cause)."""
    args = build_parser().parse_args(argv)
    try:
        manifest = convert(args.dataset, args.source, args)
        template = template_for(args.dataset, manifest)
        note = (
            f"{manifest.name}, converted from {Path(args.source).resolve()} by "
            f"tools/convert_dataset.py {args.dataset}"
        )
        out = write_manifest(manifest, args.output, template, note)
    except VolsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = f"{len(manifest.cases)} labelled cases"
    if manifest.test_cases:
        counts += f", {len(manifest.test_cases)} test cases"
    print(f"wrote {out} ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
