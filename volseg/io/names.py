"""How a file name becomes a case id and a modality: one rule for every stage.

Manifests (:mod:`volseg.data`), cohorts (:mod:`volseg.inference.cases`) and evaluation
(:mod:`volseg.metrics.evaluate`) all name cases through :func:`case_name`; ``volseg predict``
writes ``<case id>.nii.gz`` and ``volseg evaluate`` matches files by the same ids, so the
rule exists once, here:

- the **id** is the file name without its image extension (:data:`IMAGE_FORMATS`, matched in
  any letter case: ``CASE.NRRD`` is case ``CASE``; ``a.b.nii`` is ``a.b``); a DICOM series is
  named by its folder, whole (``CT 1.2.840`` stays ``CT 1.2.840``);
- with ``channels``, a trailing nnU-Net channel ``_XXXX`` (four digits) is the modality
  (``case_0001.nii.gz`` is channel 1 of case ``case``);
- with ``modalities``, a trailing ``_<modality>`` after one of the given names (any letter case,
  the longest name first: ``case_T1ce`` is ``T1ce``, not ``T1``) is the modality.

Whether a folder's names are read with channels or modalities is the caller's decision (a
cohort groups channels only when every file has one); the reading itself is this module's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

IMAGE_FORMATS = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}
"""Image extension -> format, for the files volseg reads and writes (DICOM: a folder)."""

DICOM_SLICE = ".dcm"
"""Extension of one slice file of a DICOM series (the series is its folder)."""

_CHANNEL = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")
_BY_LENGTH = sorted(IMAGE_FORMATS, key=len, reverse=True)  # .nii.gz before .nii


@dataclass(frozen=True)
class CaseName:
    """What a file name says about its case.

    Attributes:
        case_id: the case the file belongs to.
        modality: the modality the name gives (a name from ``modalities``, or the nnU-Net
            channel as four digits, ``"0001"``), or None.
        extension: the image extension as written (``.nii.gz``, ``.NRRD``); ``""`` for a
            folder or a file that is no image volseg reads.
    """

    case_id: str
    modality: str | None = None
    extension: str = ""

    @property
    def channel(self) -> int | None:
        """The nnU-Net channel number, when the modality is one (``"0001"`` -> 1)."""
        return int(self.modality) if self.modality and self.modality.isdigit() else None


def split_extension(name: str) -> tuple[str, str]:
    """``name`` split into stem and image extension, the extension in any letter case.

    ``"case.nii.gz"`` -> ``("case", ".nii.gz")``; ``"CASE.NRRD"`` -> ``("CASE", ".NRRD")``;
    ``"notes.txt"`` -> ``("notes.txt", "")``.
    """
    lower = name.lower()
    for extension in _BY_LENGTH:
        if lower.endswith(extension):
            return name[: -len(extension)], name[-len(extension) :]
    return name, ""


def split_channel(stem: str) -> tuple[str, str] | None:
    """``"case_0001"`` -> ``("case", "0001")``: the nnU-Net ``{case}_{XXXX}`` rule; else None."""
    match = _CHANNEL.fullmatch(stem)
    return (match["case"], match["channel"]) if match else None


def split_modality(stem: str, modalities: Sequence[str]) -> tuple[str, str] | None:
    """``"case_T1ce"`` -> ``("case", "T1ce")`` for a name in ``modalities`` (any letter case,
    longest first, a non-empty case id before it); else None."""
    lower = stem.lower()
    for modality in sorted(modalities, key=len, reverse=True):  # T1ce is not T1
        if lower.endswith(f"_{modality.lower()}") and len(stem) > len(modality) + 1:
            return stem[: -len(modality) - 1], modality
    return None


def case_name(
    name: str,
    *,
    folder: bool = False,
    channels: bool = False,
    modalities: Sequence[str] = (),
) -> CaseName:
    """The case id and modality a file (or DICOM folder) name gives.

    Args:
        name: a file or folder name (no path separator).
        folder: ``name`` is a folder (a DICOM series): the whole name is the id.
        channels: read a trailing nnU-Net ``_XXXX`` as the modality (channel ``XXXX``).
        modalities: read a trailing ``_<modality>`` after one of these names as the modality
            (tried after ``channels``).

    Returns:
        The :class:`CaseName`; a name without an image extension keeps its whole name as id
        (a caller that wants only images checks ``extension``).
    """
    if folder:
        return CaseName(name)
    stem, extension = split_extension(name)
    found = split_channel(stem) if channels else None
    if found is None and modalities:
        found = split_modality(stem, modalities)
    if found is None:
        return CaseName(stem, None, extension)
    return CaseName(found[0], found[1], extension)
