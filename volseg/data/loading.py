"""From a manifest case to MONAI's world: a data dict, and volumes as channel-first MetaTensors.

:func:`case_to_dict` turns a :class:`~volseg.data.manifest.Case` into the dict the pipelines of
:mod:`volseg.data.transforms` consume; :class:`LoadVolumed` reads its files with
:func:`volseg.io.read_image` (every format volseg reads, DICOM folders included, and errors
that name the file) into :class:`monai.data.MetaTensor` volumes ``(C, X, Y, Z)``.

What a loaded volume's ``.meta`` holds (all of it survives MONAI's collate):

- ``affine`` / ``original_affine``: the image's 4x4 RAS voxel-to-mm affine (nibabel convention,
  float64); transforms update ``affine``, ``original_affine`` stays the file's;
- ``spatial_shape``: the file's ``(X, Y, Z)``; ``space``: ``RAS``; ``original_channel_dim``: 0;
- ``filename_or_obj``: the file (or DICOM folder) of the first present source, the reference
  grid. :func:`reference_geometry` rebuilds the input :class:`~volseg.io.Geometry` from the meta;
  for a byte-exact NIfTI header, re-read ``filename_or_obj`` with :func:`volseg.io.read_image`
  (headers and ``Geometry`` objects cannot be collated, so they are not carried).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import MetaKeys, SpaceKeys

from volseg.data.manifest import Case, ImageSource
from volseg.errors import VolsegError
from volseg.io import Geometry, Image, read_image

# One volume source: a file or DICOM folder, or one channel of a 4D file.
Source = str | Path | ImageSource


def case_to_dict(
    case: Case, modalities: Sequence[str], *, classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """The data dict of one case, ready for :func:`volseg.data.transforms.build_transforms`.

    Args:
        case: the case.
        modalities: modality names in channel order (the manifest's ``modalities``).
        classes: classification class names (index = class id); needed when the case has a
            target.

    Returns:
        ``id`` (str); ``image``: one :class:`ImageSource` or None (missing) per modality, loaded
        as the channels of one volume; ``presence``: float32 ``(M,)``, 1 where the modality is
        present (a missing one loads as a zero channel); and, when the case has them, ``label``
        (segmentation map file), ``mask`` (region mask file) and ``target`` (class index, int).

    Raises:
        VolsegError: the case has none of the modalities, or a target not in ``classes``.
    """
    sources = [case.images.get(m) for m in modalities]
    if not any(sources):
        raise VolsegError(
            f"case {case.id}: none of the modalities {list(modalities)} is present; "
            "fix the manifest's images"
        )
    data: dict[str, Any] = {
        "id": case.id,
        "image": sources,
        "presence": np.array([s is not None for s in sources], dtype=np.float32),
    }
    if case.label is not None:
        data["label"] = case.label
    if case.mask is not None:
        data["mask"] = case.mask
    if case.target is not None:
        if classes is None or case.target not in classes:
            raise VolsegError(
                f"case {case.id}: class '{case.target}' is not one of {list(classes or [])}; "
                "fix the manifest's class or classes"
            )
        data["target"] = list(classes).index(case.target)
    return data


def load_volume(
    source: Source | Sequence[Source | None], *, channels: int | None = None
) -> MetaTensor:
    """Read one volume, or several stacked as channels, into a float32 MetaTensor.

    Args:
        source: a file/DICOM folder (all its channels), an :class:`ImageSource` (its
            ``channel`` of a 4D file, or all channels), or a sequence of those with None for a
            missing modality; each sequence entry must give one channel, a missing one is zeros.
        channels: expected channel count, checked when given.

    Returns:
        ``(C, X, Y, Z)`` float32 MetaTensor with the RAS affine and the meta described in the
        module docstring.

    Raises:
        VolsegError: unreadable file, a channel the file lacks, sources on different grids,
            all sources missing, or not ``channels`` channels.
    """
    many = isinstance(source, Sequence) and not isinstance(source, str)
    entries = list(source) if many else [source]
    cache: dict[Path, Image] = {}
    arrays: list[np.ndarray | None] = []
    reference: Image | None = None
    for entry in entries:
        if entry is None:
            arrays.append(None)
            continue
        image = _read_source(entry, cache)
        if many and image.num_channels != 1:
            raise VolsegError(
                f"{image.path}: holds {image.num_channels} channels but is listed as one "
                "modality; name its channel in the manifest"
            )
        if reference is None:
            reference = image
        elif problems := image.geometry.differences(reference.geometry):
            raise VolsegError(
                f"{image.path}: grid differs from {reference.path} ({'; '.join(problems)}); "
                "modalities of a case must be co-registered on one grid"
            )
        arrays.append(image.array.reshape(-1, *image.shape).astype(np.float32, copy=False))
    if reference is None:
        raise VolsegError("no image to load: every modality of the case is missing")
    zeros = np.zeros((1, *reference.shape), dtype=np.float32)
    array = np.concatenate([zeros if a is None else a for a in arrays], axis=0)
    if channels is not None and array.shape[0] != channels:
        raise VolsegError(
            f"{reference.path}: loads as {array.shape[0]} channels, expected {channels} "
            "(one per modality); check the manifest's modalities and channels"
        )
    return meta_volume(array, reference)


def meta_volume(array: np.ndarray, reference: Image) -> MetaTensor:
    """``(C, X, Y, Z)`` array -> MetaTensor with ``reference``'s RAS affine and file name."""
    affine = torch.as_tensor(reference.affine, dtype=torch.float64)
    meta = {
        MetaKeys.ORIGINAL_AFFINE: reference.affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(reference.shape, dtype=np.int64),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.ORIGINAL_CHANNEL_DIM: 0,
        "filename_or_obj": str(reference.path),
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), affine=affine, meta=meta)


def reference_geometry(volume: MetaTensor | Mapping[str, Any]) -> Geometry:
    """The input grid a loaded volume came from, from its meta (or a meta dict).

    Returns:
        The :class:`~volseg.io.Geometry` of the file the volume was read from (LPS, mm), for
        :func:`volseg.io.write_like`.
    """
    meta = volume.meta if isinstance(volume, MetaTensor) else volume
    shape = tuple(int(s) for s in np.asarray(meta[MetaKeys.SPATIAL_SHAPE]).reshape(-1)[:3])
    affine = np.asarray(meta[MetaKeys.ORIGINAL_AFFINE], dtype=np.float64).reshape(4, 4)
    return Geometry.from_affine(shape, affine)


class LoadVolumed(MapTransform):
    """MONAI dict transform: read each key's source(s) with :func:`load_volume`.

    The value of a key is anything :func:`load_volume` accepts (as :func:`case_to_dict`
    writes it). Output is channel-first already, so no ``EnsureChannelFirstd`` is needed.

    Args:
        keys: keys to load.
        channels: expected channel count per key (None: not checked).
        allow_missing_keys: skip keys absent from the dict (an unlabelled case).
    """

    def __init__(
        self,
        keys: KeysCollection,
        channels: int | Sequence[int | None] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        per_key = channels if isinstance(channels, Sequence) else [channels] * len(self.keys)
        self.channels = list(per_key)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, channels in self.key_iterator(d, self.channels):
            d[key] = load_volume(d[key], channels=channels)
        return d


def _read_source(source: Source, cache: dict[Path, Image]) -> Image:
    """The image (or its one channel) a source names; a 4D file is read once per volume."""
    path, channel = (
        (source.path, source.channel) if isinstance(source, ImageSource) else (source, None)
    )
    path = Path(path)
    if path not in cache:
        cache[path] = read_image(path)
    image = cache[path]
    if channel is None:
        return image
    if not 0 <= channel < image.num_channels:
        raise VolsegError(
            f"{path}: has {image.num_channels} channel(s), no channel {channel}; "
            "fix the modality's channel in the manifest"
        )
    return image.channel(channel)
