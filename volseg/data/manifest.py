"""A dataset described once: cases, their files, modalities, and the label map or classes.

Every dataset format volseg reads (MSD ``dataset.json``, the nnU-Net v2 raw layout, a CSV for
classification, volseg's own JSON) becomes one :class:`Manifest`. volseg's JSON format is
what ``volseg synth`` and the converters in ``tools/`` write::

    {
      "format": "volseg-manifest/1",
      "name": "synthetic_organs",
      "task": "segmentation",                 # or "classification"
      "modalities": ["CT"],
      "labels": {"0": "background", "1": "liver"},   # segmentation label map (value -> name)
      "classes": ["grade2", "grade3"],        # classification classes, index = class id
      "cases": [
        {"id": "case_000",
         "subject": "patient_07",             # optional; splits keep a subject's cases together
         "images": {"CT": "imagesTr/case_000.nii.gz"},   # or {"T1": {"path": ..., "channel": 1}}
         "label": "labelsTr/case_000.nii.gz",  # segmentation label map
         "class": "grade3",                    # classification target
         "mask": "masksTr/case_000.nii.gz"}    # optional region mask for classification
      ],
      "test": [ ...cases without label/class... ]
    }

Paths are relative to the manifest's folder (absolute paths are kept as they are).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from volseg.io.atomic import atomic_path

Task = Literal["segmentation", "classification"]
MANIFEST_FORMAT = "volseg-manifest/1"


@dataclass(frozen=True)
class ImageSource:
    """Where one modality of a case lives: a file, and the channel when the file is 4D (MSD)."""

    path: Path
    channel: int | None = None


@dataclass(frozen=True)
class Case:
    """One case (one scan session) of a dataset.

    Args:
        id: unique case id, used to match predictions, splits and reports.
        images: modality name -> source, in the manifest's modality order.
        label: segmentation label map file, or None (test case / classification).
        target: classification class name, or None.
        mask: optional region mask (e.g. tumour) for classification.
        subject: patient id; cases of one subject always fall in the same split. Defaults to id.
    """

    id: str
    images: dict[str, ImageSource]
    label: Path | None = None
    target: str | None = None
    mask: Path | None = None
    subject: str | None = None

    @property
    def patient(self) -> str:
        return self.subject or self.id


@dataclass
class Manifest:
    """A whole dataset: what it holds and where its files are.

    Args:
        name: dataset name.
        task: ``"segmentation"`` or ``"classification"``.
        modalities: ordered modality names (the channel order models see).
        cases: labelled cases (training pool).
        labels: segmentation label map, value -> name, including 0 for background.
        classes: classification class names; the index is the class id (the last class is the
            positive one for binary AUC).
        test_cases: cases without labels.
        source: the file the manifest was read from.
        format: which format it was read from (``volseg``, ``msd``, ``nnunetv2``, ``csv``).
        info: free-text fields carried along (``description``, ``reference``, ``license``,
            ``layout``), as dataset templates and converted manifests hold them.
    """

    name: str
    task: Task
    modalities: list[str]
    cases: list[Case]
    labels: dict[int, str] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    test_cases: list[Case] = field(default_factory=list)
    source: Path | None = None
    format: str = "volseg"
    info: dict[str, Any] = field(default_factory=dict)

    def case(self, case_id: str) -> Case:
        for case in self.cases + self.test_cases:
            if case.id == case_id:
                return case
        raise KeyError(case_id)

    @property
    def ids(self) -> list[str]:
        return [case.id for case in self.cases]


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


def _case_to_json(case: Case, root: Path) -> dict:
    images: dict[str, object] = {}
    for modality, source in case.images.items():
        rel = _relative(source.path, root)
        images[modality] = (
            rel if source.channel is None else {"path": rel, "channel": source.channel}
        )
    entry: dict[str, object] = {"id": case.id}
    if case.subject:
        entry["subject"] = case.subject
    entry["images"] = images
    if case.label is not None:
        entry["label"] = _relative(case.label, root)
    if case.target is not None:
        entry["class"] = case.target
    if case.mask is not None:
        entry["mask"] = _relative(case.mask, root)
    return entry


def manifest_to_json(manifest: Manifest, root: Path) -> dict:
    """The volseg JSON document for ``manifest`` with paths relative to ``root``."""
    doc: dict[str, object] = {
        "format": MANIFEST_FORMAT,
        "name": manifest.name,
        "task": manifest.task,
        "modalities": list(manifest.modalities),
    }
    if manifest.labels:
        doc["labels"] = {str(k): v for k, v in sorted(manifest.labels.items())}
    if manifest.classes:
        doc["classes"] = list(manifest.classes)
    doc.update(manifest.info)
    doc["cases"] = [_case_to_json(c, root) for c in manifest.cases]
    if manifest.test_cases:
        doc["test"] = [_case_to_json(c, root) for c in manifest.test_cases]
    return doc


def save_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write ``manifest`` as volseg JSON to ``path`` (atomically); paths become relative to it.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = manifest_to_json(manifest, path.parent.resolve())
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return path
