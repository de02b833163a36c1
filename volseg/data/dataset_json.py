"""The ``dataset.json`` of the Medical Segmentation Decathlon and of nnU-Net v2 raw datasets.

- MSD: ``modality``, ``labels``, ``training`` (image/label pairs; a multi-modal image is one
  4D file, one channel per modality) and ``test``;
- nnU-Net v2: ``channel_names``, ``labels``, ``file_ending``, files
  ``imagesTr/{case}_{XXXX}{ending}`` and ``labelsTr/{case}{ending}`` (or an explicit
  ``dataset`` list), test images in ``imagesTs/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from volseg.data.manifest import Case, ImageSource, Manifest
from volseg.data.manifest_fields import absolute, get_key, int_keyed, unique_names
from volseg.errors import VolsegError
from volseg.io.names import case_name, split_channel

# --- Medical Segmentation Decathlon ----------------------------------------------------------


def load_msd(doc: dict[str, Any], path: Path) -> Manifest:
    modality = int_keyed(get_key(doc, "modality", dict, path), path, "modality")
    modalities = unique_names(list(modality.values()))
    labels = int_keyed(get_key(doc, "labels", dict, path), path, "labels")
    root = path.parent

    def images(file: str) -> dict[str, ImageSource]:
        image = absolute(file, root)
        if len(modalities) == 1:
            return {modalities[0]: ImageSource(image)}
        return {m: ImageSource(image, channel=i) for i, m in enumerate(modalities)}

    def case_id(file: str) -> str:  # a DICOM folder keeps its whole name
        return case_name(Path(file).name, folder=absolute(file, root).is_dir()).case_id

    cases = []
    for i, entry in enumerate(get_key(doc, "training", list, path)):
        where = f"training[{i}]"
        if not isinstance(entry, dict):
            raise VolsegError(f'{path}: {where} must be {{"image": ..., "label": ...}}')
        image = get_key(entry, "image", str, path, where)
        label = get_key(entry, "label", str, path, where)
        cases.append(Case(case_id(image), images(image), label=absolute(label, root)))
    test = []
    for i, entry in enumerate(get_key(doc, "test", list, path, required=False) or []):
        # the real files list test images as plain strings; accept {"image": ...} as well
        image = entry if isinstance(entry, str) else None
        if isinstance(entry, dict):
            image = get_key(entry, "image", str, path, f"test[{i}]")
        if not image:
            raise VolsegError(f"{path}: test[{i}] must be an image path, got {entry!r}")
        test.append(Case(case_id(image), images(image)))
    name = get_key(doc, "name", str, path, required=False) or path.parent.name
    return Manifest(name, "segmentation", modalities, cases, labels, [], test, path, "msd")


# --- nnU-Net v2 raw ----------------------------------------------------------------------------


def load_nnunet(doc: dict[str, Any], path: Path) -> Manifest:
    channels = int_keyed(get_key(doc, "channel_names", dict, path), path, "channel_names")
    if sorted(channels) != list(range(len(channels))):
        raise VolsegError(
            f"{path}: key 'channel_names' must number channels 0..{len(channels) - 1}, "
            f"got {sorted(channels)}"
        )
    modalities = unique_names(list(channels.values()))
    ending = get_key(doc, "file_ending", str, path)
    labels: dict[int, str] = {}
    for name, value in get_key(doc, "labels", dict, path).items():
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
            m: ImageSource(absolute(f"{folder}/{case_id}_{i:04d}{ending}", root))
            for i, m in enumerate(modalities)
        }
        label_path = absolute(f"labelsTr/{case_id}{ending}", root) if label else None
        return Case(case_id, images, label=label_path)

    if "dataset" in doc:  # explicit file list instead of the folder convention
        cases = [
            _nnunet_listed(case_id, entry, modalities, root, path)
            for case_id, entry in get_key(doc, "dataset", dict, path).items()
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
    name = get_key(doc, "name", str, path, required=False) or path.parent.name
    return Manifest(name, "segmentation", modalities, cases, labels, [], test, path, "nnunetv2")


def _nnunet_listed(case_id: str, entry: Any, modalities: list[str], root: Path, path: Path) -> Case:
    where = f"dataset.{case_id}"
    if not isinstance(entry, dict):
        raise VolsegError(f'{path}: {where} must be {{"images": [...], "label": ...}}')
    files = get_key(entry, "images", list, path, where)
    if len(files) != len(modalities) or not all(isinstance(f, str) for f in files):
        raise VolsegError(
            f"{path}: {where}.images must list {len(modalities)} paths, one per channel"
        )
    images = {m: ImageSource(absolute(f, root)) for m, f in zip(modalities, files, strict=True)}
    return Case(case_id, images, label=absolute(get_key(entry, "label", str, path, where), root))


def _channel_files(folder: Path, ending: str) -> set[str]:
    stems = [name[: -len(ending)] for name in _listing(folder) if name.endswith(ending)]
    return {found[0] for stem in stems if (found := split_channel(stem))}


def _plain_files(folder: Path, ending: str) -> set[str]:
    return {name[: -len(ending)] for name in _listing(folder) if name.endswith(ending)}


def _listing(folder: Path) -> list[str]:
    """File names in ``folder``, without hidden ones (macOS ``._x.nii.gz`` junk included)."""
    if not folder.is_dir():
        return []
    return [p.name for p in folder.iterdir() if not p.name.startswith(".")]
