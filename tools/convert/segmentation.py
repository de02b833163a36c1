"""Segmentation datasets: any Medical Segmentation Decathlon task, BTCV, AMOS22."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tools.convert.common import (
    Warn,
    from_template,
    nifti_file,
    nifti_stem,
    no_cases_error,
    read_template,
    report_missing,
    require_dir,
    visible_files,
    warn_on_stderr,
)
from volseg.data.manifest import Case, ImageSource, Manifest
from volseg.errors import VolsegError

MSD_TEMPLATES = {1: "msd_task01_braintumour.json", 9: "msd_task09_spleen.json"}
# AMOS22: amos_0001-0500 are CT, amos_0501-0600 MRI. The AMOS readme says "less than 500", but
# the release has 500 CT scans numbered from 1 and amos_0500 is a CT volume, so 500 is CT.
AMOS_LAST_CT_ID = 500
AMOS_MODALITY = {"ct": "CT", "mri": "MRI", "all": "CT_or_MRI"}


# --------------------------------------------------------------------------- MSD


def _msd_path(root: Path, entry: str) -> Path:
    return root / entry.removeprefix("./")


def convert_msd(
    source: Path, *, skip_incomplete: bool = False, warn: Warn = warn_on_stderr
) -> Manifest:
    """Any Medical Segmentation Decathlon task, read from its ``dataset.json``.

    Args:
        source: the extracted task folder ``TaskXX_Name`` (holding ``dataset.json``).
        skip_incomplete: leave out cases whose files are missing instead of failing.
        warn: called with a message for every case left out or template mismatch.

    Returns:
        The manifest; multi-modal (4D) images become one :class:`ImageSource` per channel.
        Cases come from ``dataset.json``, so stray files (macOS ``._*``) are never picked up.
    """
    root = require_dir(Path(source), "pass the extracted MSD task folder, e.g. Task09_Spleen")
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
        case_id = nifti_stem(image)
        if not image.is_file():
            report_missing(case_id, "image", image, skip_incomplete, warn)
        elif not label.is_file():
            report_missing(case_id, "label", label, skip_incomplete, warn)
        else:
            cases.append(Case(id=case_id, images=images(image), label=label))
    test_cases: list[Case] = []
    for entry in test:
        image = _msd_path(root, entry)
        if image.is_file():
            test_cases.append(Case(id=nifti_stem(image), images=images(image)))
        else:
            report_missing(nifti_stem(image), "test image", image, skip_incomplete, warn)
    if not cases and not test_cases:
        raise no_cases_error(root, "training entries in dataset.json with files in imagesTr/")

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
    manifest = from_template(template, cases, test_cases)
    if manifest.labels != labels or manifest.modalities != modalities:
        warn(f"{json_path}: labels or modalities differ from {template_file}; using dataset.json")
        manifest.labels, manifest.modalities = labels, modalities
    return manifest


# --------------------------------------------------------------------------- BTCV


def convert_btcv(
    source: Path, *, skip_incomplete: bool = False, warn: Warn = warn_on_stderr
) -> Manifest:
    """BTCV Abdomen ("Synapse" multi-organ CT) from the unzipped ``RawData.zip``.

    Args:
        source: the folder holding ``RawData/`` (or ``Abdomen/RawData/``), or ``RawData`` itself.
        skip_incomplete: leave out training images without a label instead of failing.
        warn: called with a message for every case left out.

    Returns:
        Labelled cases ``btcv_NNNN`` from ``Training/``, test cases from ``Testing/img``.
    """
    source = require_dir(Path(source), "pass the folder extracted from RawData.zip")
    candidates = [source, source / "RawData", source / "Abdomen" / "RawData"]
    root = next((c for c in candidates if (c / "Training" / "img").is_dir()), None)
    if root is None:
        raise VolsegError(
            f"{source}: no RawData/Training/img folder; pass the folder extracted from "
            "RawData.zip (holding RawData/) or RawData itself"
        )
    pattern = re.compile(r"img(\d+)\.nii(\.gz)?$")

    def found(folder: Path) -> list[tuple[str, Path]]:
        return [(m.group(1), p) for p in visible_files(folder) if (m := pattern.match(p.name))]

    cases: list[Case] = []
    for number, image in found(root / "Training" / "img"):
        label = nifti_file(root / "Training" / "label", f"label{number}")
        if label is None:
            where = root / "Training" / "label" / f"label{number}.nii.gz"
            report_missing(f"btcv_{number}", "label", where, skip_incomplete, warn)
            continue
        cases.append(Case(id=f"btcv_{number}", images={"CT": ImageSource(image)}, label=label))
    test_cases = [
        Case(id=f"btcv_{number}", images={"CT": ImageSource(image)})
        for number, image in found(root / "Testing" / "img")
    ]
    if not cases:
        raise no_cases_error(root / "Training" / "img", "imgNNNN.nii.gz files")
    return from_template(read_template("btcv.json"), cases, test_cases)


# --------------------------------------------------------------------------- AMOS22


def convert_amos22(
    source: Path,
    *,
    modality: str = "ct",
    skip_incomplete: bool = False,
    warn: Warn = warn_on_stderr,
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
    source = require_dir(Path(source), "pass the folder extracted from amos22.zip")
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
        for image in visible_files(root / images_dir):
            match = pattern.match(image.name)
            if not match or not wanted(int(match.group(1))):
                continue
            case_id = nifti_stem(image)
            label = nifti_file(root / labels_dir, case_id)
            if label is None:
                where = root / labels_dir / image.name
                report_missing(case_id, "label", where, skip_incomplete, warn)
                continue
            cases.append(Case(id=case_id, images={name: ImageSource(image)}, label=label))
    for image in visible_files(root / "imagesTs"):
        match = pattern.match(image.name)
        if match and wanted(int(match.group(1))):
            case_id = nifti_stem(image)
            label = nifti_file(root / "labelsTs", case_id)
            case = Case(id=case_id, images={name: ImageSource(image)}, label=label)
            (cases if label else test_cases).append(case)
    if not cases and not test_cases:
        raise no_cases_error(
            root, f"{modality.upper()} amos_NNNN.nii.gz files in imagesTr/imagesVa"
        )
    suffix = "" if modality == "all" else f"_{modality}"
    return from_template(
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
