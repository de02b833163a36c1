"""The cases of a cohort: what ``--input`` names, one :class:`CaseSpec` per case.

Inputs (:func:`discover_cases`):

- a **file** (NIfTI, NRRD, MetaImage) or a **DICOM series folder**: one case;
- a **folder**: every image file in it and every sub-folder (a DICOM series) is a case. Files
  named the nnU-Net way, ``{case}_{XXXX}.nii.gz``, are grouped into one case with modality
  ``XXXX`` (for a one-modality model ``_0000`` is simply dropped from the id). For a model with
  several modalities, files named ``{case}_{modality}.nii.gz`` after the model's modality
  names (``case_T1.nii.gz``, ``case_FLAIR.nii.gz``; any letter case) are grouped too, a
  modality without a file being missing. Hidden files, other files, and the output folder
  are skipped;
- a **manifest** (volseg JSON, MSD/nnU-Net ``dataset.json`` or its folder, classification
  CSV): all its cases, labelled and test, with their modalities and masks by name.

Outputs (:mod:`volseg.inference.outputs`): ``--output`` is a folder, or, for an input of one
volume, the label-map file itself. :func:`check_request` checks models, input and output
before torch is imported.

Case ids are file names without extension (DICOM: the folder name), read by
:func:`volseg.io.names.case_name` as manifests and evaluation read them, or the manifest's ids.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from volseg.errors import VolsegError
from volseg.inference.outputs import check_output_file, output_file
from volseg.io import input_path
from volseg.io.names import DICOM_SLICE, CaseName, case_name, split_extension

if TYPE_CHECKING:  # not imported at run time: checking a request must not load torch
    from volseg.data.manifest import Case
    from volseg.inference.case_input import Source

log = logging.getLogger(__name__)

MANIFEST_NAMES = ("dataset.json", "manifest.json")


@dataclass(frozen=True)
class CaseSpec:
    """One case to predict.

    Attributes:
        id: case id; names the outputs.
        sources: one source per model modality (None: missing), or a single volume.
        input: the file or folder named in messages (the first present source).
        suffix: the input's extension (``""`` for DICOM), for ``output_format="same"``.
        mask: optional region mask (grading).
        files: every file the case reads or its manifest references (images, label, mask,
            the manifest itself), each with what it is: no output may replace one of them.
        origin: the manifest, folder or file that named the case (for messages).
    """

    id: str
    sources: Source | tuple[Source | None, ...]
    input: Path
    suffix: str = ""
    mask: Path | None = None
    files: tuple[tuple[Path, str], ...] = ()
    origin: Path | None = None


def discover_cases(
    path: str | Path, modalities: Sequence[str], *, exclude: Sequence[Path] = ()
) -> list[CaseSpec]:
    """The cases of a file, DICOM folder, folder of cases, or manifest (module docstring).

    Args:
        path: what ``--input`` names.
        modalities: the model's modality names (manifest cases are matched by name).
        exclude: folders never taken for cases (the output folder).

    Raises:
        VolsegError: missing input, a FIFO or device, an empty folder, a manifest without the
            model's modalities, or two cases with one id.
    """
    path = check_input(path)
    if path.is_file():
        if path.suffix.lower() in (".json", ".csv"):
            cases = _manifest_cases(path, modalities)
        elif path.name.lower().endswith(DICOM_SLICE):
            cases = [_dicom_case(path.parent)]
        else:
            cases = [_file_case(path)]
    elif any((path / name).is_file() for name in MANIFEST_NAMES):
        cases = _manifest_cases(path, modalities)
    else:
        cases = _folder_cases(path, modalities, {p.resolve() for p in exclude})
    ids = [c.id for c in cases]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise VolsegError(
            f"{path}: several inputs give the case ids {repeated[:5]}; outputs are named by "
            "case id, so rename the files"
        )
    return cases


def check_input(path: str | Path) -> Path:
    """``--input`` as a path, refused at once if it is missing or not a file or folder.

    Raises:
        VolsegError: no such path, a FIFO, a device.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise VolsegError(
            f"{path}: no such file or folder; pass an image file, a DICOM folder, a folder of "
            "images or a manifest"
        )
    input_path(path, "input")
    return path


def check_request(
    models: Sequence[object],
    inputs: str | Path,
    output: str | Path,
    output_format: str = "nii.gz",
) -> None:
    """What can be checked before torch loads: models, input and output paths.

    Args:
        models: what ``--model`` names (paths are checked; loaded models pass).
        inputs: what ``--input`` names.
        output: what ``--output`` names.
        output_format: what ``--format`` names.

    Raises:
        VolsegError: a model path that is no checkpoint or run folder, a missing input, a
            label-map file as output for an input of several cases, or one that cannot be
            written for this input (:func:`~volseg.inference.outputs.check_output_file`), or
            ``dicom-seg`` for an input that is not a DICOM series.
    """
    from volseg.io.paths import resolve_checkpoint

    for model in models:
        if isinstance(model, str | Path):
            resolve_checkpoint(model)
    path = check_input(inputs)
    if output_file(Path(output)):
        if not _one_volume(path):
            raise VolsegError(
                f"--output {output} names one label-map file, but --input {path} is a folder "
                "of cases or a manifest; pass an output folder"
            )
        check_output_file(Path(output), path, output_format)
    if output_format == "dicom-seg":  # an image file as input fails here, before torch loads
        from volseg.io.dicom_seg import require_dicom_series

        require_dicom_series(path)


# --- finding cases ----------------------------------------------------------------------------


def _file_case(path: Path) -> CaseSpec:
    name = case_name(path.name)
    if not name.extension:
        raise VolsegError(
            f"{path}: not an image volseg reads (NIfTI, NRRD, MetaImage, a DICOM folder) nor "
            "a manifest (.json, .csv)"
        )
    files = ((path, "the input image"),)
    return CaseSpec(name.case_id, path, path, name.extension, files=files, origin=path)


def _dicom_case(folder: Path) -> CaseSpec:
    absolute = Path(os.path.normpath(folder.absolute()))  # "." and ".." named as the folder
    name = case_name(absolute.name, folder=True).case_id
    files = tuple((p, f"a slice of DICOM series {name}") for p in folder.iterdir() if p.is_file())
    return CaseSpec(name, folder, folder, "", files=files, origin=folder)


def _folder_entries(folder: Path, exclude: set[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """``(visible entries, image files, sub-folders)`` of a folder, each sorted."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    images = [p for p in entries if p.is_file() and split_extension(p.name)[1]]
    folders = [p for p in entries if p.is_dir() and p.resolve() not in exclude]
    return entries, images, folders


def _one_volume(path: Path) -> bool:
    """Whether ``--input`` is one volume: an image file, or one DICOM series (a slice of it
    or its folder), not a folder of cases or a manifest."""
    if path.is_file():
        return path.suffix.lower() not in (".json", ".csv")
    if any((path / name).is_file() for name in MANIFEST_NAMES):
        return False
    entries, images, folders = _folder_entries(path, set())
    return not images and not folders and any(p.is_file() for p in entries)


def _folder_cases(folder: Path, modalities: Sequence[str], exclude: set[Path]) -> list[CaseSpec]:
    entries, images, folders = _folder_entries(folder, exclude)
    if not images and not folders:
        if any(p.is_file() for p in entries):
            return [_dicom_case(folder)]  # slices of one DICOM series
        raise VolsegError(f"{folder}: folder holds no images; pass files, a folder or a manifest")
    skipped = [p.name for p in entries if p not in images and p not in folders]
    if skipped:
        log.info("%s: skipping %d non-image entries (%s...)", folder, len(skipped), skipped[0])
    names = [case_name(p.name, channels=True) for p in images]
    channels = [n.channel for n in names]
    one_channel = all(n.modality == "0000" for n in names)  # for one modality: _0000 dropped
    grouped = images and None not in channels and (len(modalities) > 1 or one_channel)
    if grouped:
        cases = _grouped_cases(images, names, folder)
    else:
        cases, singles = _modality_cases(images, modalities, folder)
        cases = sorted([*cases, *map(_file_case, singles)], key=lambda c: c.id)
    return cases + [_dicom_case(p) for p in folders]


def _modality_cases(
    images: list[Path], modalities: Sequence[str], folder: Path
) -> tuple[list[CaseSpec], list[Path]]:
    """Files ``{case}_{modality}{ext}`` named after the model's modalities (any letter case),
    grouped into cases (a modality without a file is missing); and the files left over.

    Only for a model with several modalities: for one, ``ct_liver.nii.gz`` is a case's name.
    """
    if len(modalities) < 2:
        return [], images
    by_case: dict[str, dict[str, Path]] = {}
    rest = []
    for path in images:
        name = case_name(path.name, modalities=modalities)
        case_id, modality = name.case_id, name.modality
        if modality is None:
            rest.append(path)
            continue
        found = by_case.setdefault(case_id, {})
        if modality in found:
            raise VolsegError(
                f"{folder}: {found[modality].name} and {path.name} are both the {modality} "
                f"image of case {case_id!r}; keep one of them"
            )
        found[modality] = path
    cases = []
    for case_id, found in by_case.items():
        sources = tuple(found.get(m) for m in modalities)
        first = next(p for p in sources if p is not None)
        files = tuple((p, f"the {m} image of case {case_id}") for m, p in found.items())
        suffix = split_extension(first.name)[1]
        cases.append(CaseSpec(case_id, sources, first, suffix, files=files, origin=folder))
    return cases, rest


def _grouped_cases(images: list[Path], names: list[CaseName], folder: Path) -> list[CaseSpec]:
    """nnU-Net naming: ``{case}_{XXXX}{ext}`` files are the modalities ``XXXX`` of ``case``."""
    by_case: dict[str, dict[int, Path]] = {}
    for path, name in zip(images, names, strict=True):
        assert name.channel is not None
        by_case.setdefault(name.case_id, {})[name.channel] = path
    cases = []
    for case_id, channels in by_case.items():
        sources = tuple(channels.get(c) for c in range(max(channels) + 1))
        first = channels[min(channels)]
        files = tuple((p, f"an image of case {case_id}") for p in channels.values())
        suffix = split_extension(first.name)[1]
        cases.append(CaseSpec(case_id, sources, first, suffix, files=files, origin=folder))
    return cases


def _manifest_cases(path: Path, modalities: Sequence[str]) -> list[CaseSpec]:
    from volseg.data import load_manifest

    manifest = load_manifest(path)
    if not set(modalities) & set(manifest.modalities):
        raise VolsegError(
            f"{manifest.source}: modalities {manifest.modalities} include none of the model's "
            f"{list(modalities)}; name them as the model was trained"
        )
    source = manifest.source or path
    cases = []
    for case in manifest.cases + manifest.test_cases:
        sources = tuple(case.images.get(m) for m in modalities)
        first = next((s.path for s in sources if s is not None), None)
        if first is None:  # none of the model's modalities: let the case fail with a message
            first = next(iter(case.images.values())).path
        suffix = split_extension(first.name)[1] if first.is_file() else ""
        files = (
            (source, "the manifest"),
            *((s.path, f"the {m} image of case {case.id}") for m, s in case.images.items()),
            *((p, f"the {what} of case {case.id}") for p, what in _labels_and_masks(case)),
        )
        cases.append(CaseSpec(case.id, sources, first, suffix, case.mask, files, source))
    return cases


def _labels_and_masks(case: Case) -> list[tuple[Path, str]]:
    found = [(case.label, "label"), (case.mask, "mask")]
    return [(path, what) for path, what in found if path is not None]
