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
  grid. :func:`reference_geometry` rebuilds the input :class:`~volseg.io.Geometry` from the meta
  (headers and ``Geometry`` objects cannot be collated, so the meta does not carry them).

The reference image itself, header and geometry, is kept beside the volumes:
``LoadVolumed(..., reference_key=REFERENCE_KEY)`` stores the :class:`~volseg.io.Image` the first
present source was read as under ``data["reference"]``, and a loader with ``grid_of`` checks
that its volumes (label, mask) lie on that grid and gives them its affine exactly. Prediction
writes its outputs on that image's grid with its header; training drops the key with the other
non-tensor ones (:func:`volseg.engine.datasets.finish_sample`).
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

# One volume source: a file or DICOM folder, one channel of a 4D file, or an image in memory.
Source = str | Path | ImageSource | Image

REFERENCE_KEY = "reference"  # data-dict key of the image the volumes were read from


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
        source: a file/DICOM folder or in-memory :class:`~volseg.io.Image` (all its channels),
            an :class:`ImageSource` (its ``channel`` of a 4D file, or all channels), or a
            sequence of those with None for a missing modality; each sequence entry must give
            one channel, a missing one is zeros.
        channels: expected channel count, checked when given.

    Returns:
        ``(C, X, Y, Z)`` float32 MetaTensor with the RAS affine and the meta described in the
        module docstring.

    Raises:
        VolsegError: unreadable file, a channel the file lacks, sources on different grids,
            all sources missing, or not ``channels`` channels.
    """
    return read_volume(source, channels=channels)[0]


def read_volume(
    source: Source | Sequence[Source | None],
    *,
    channels: int | None = None,
    grid: Image | None = None,
) -> tuple[MetaTensor, Image]:
    """:func:`load_volume`, also returning the reference image (the first present source).

    Args:
        source, channels: as for :func:`load_volume`.
        grid: an image the volume must lie on (within 1e-4 mm); the volume then takes its
            affine and file name, exactly.

    Raises:
        VolsegError: as :func:`load_volume`, or a volume off ``grid``.
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
                f"{_where(image)}: holds {image.num_channels} channels but is given as one "
                "modality; pass one scalar volume per modality (in a manifest, name its channel)"
            )
        if reference is None:
            reference = image
        else:
            _check_grid(image, reference)
        arrays.append(image.array.reshape(-1, *image.shape).astype(np.float32, copy=False))
    if reference is None:
        raise VolsegError("no image to load: every modality of the case is missing")
    zeros = np.zeros((1, *reference.shape), dtype=np.float32)
    array = np.concatenate([zeros if a is None else a for a in arrays], axis=0)
    if channels is not None and array.shape[0] != channels:
        raise VolsegError(
            f"{_where(reference)}: gives {array.shape[0]} channel(s) in {len(entries)} "
            f"volume(s), expected {channels}, one per modality; pass one scalar volume per "
            "modality or a 4D file with exactly that many channels (in a manifest, check its "
            "modalities and channels)"
        )
    if grid is not None:
        _check_grid(reference, grid)
        reference = grid
    return meta_volume(array, reference), reference


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
        reference_key: store the image the first key was read from (header and geometry, an
            :class:`~volseg.io.Image`) under this key.
        grid_of: the key of an image stored by another loader's ``reference_key``: these keys'
            volumes must lie on its grid, and take its affine exactly.
    """

    def __init__(
        self,
        keys: KeysCollection,
        channels: int | Sequence[int | None] | None = None,
        allow_missing_keys: bool = False,
        *,
        reference_key: str | None = None,
        grid_of: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        per_key = channels if isinstance(channels, Sequence) else [channels] * len(self.keys)
        self.channels = list(per_key)
        self.reference_key, self.grid_of = reference_key, grid_of

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        grid = d.get(self.grid_of) if self.grid_of is not None else None
        references = []
        for key, channels in self.key_iterator(d, self.channels):
            d[key], reference = read_volume(d[key], channels=channels, grid=grid)
            references.append(reference)
        if self.reference_key is not None and references:
            d[self.reference_key] = references[0]
        return d


def _read_source(source: Source, cache: dict[Path, Image]) -> Image:
    """The image (or its one channel) a source names; a 4D file is read once per volume."""
    if isinstance(source, Image):
        return source
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


def _check_grid(image: Image, reference: Image) -> None:
    if problems := image.geometry.differences(reference.geometry):
        raise VolsegError(
            f"{_where(image)}: grid differs from {_where(reference)} ({'; '.join(problems)}); "
            "the volumes of a case must be co-registered on one grid"
        )


def _where(image: Image) -> str:
    """The file an image came from, for messages."""
    return str(image.path) if image.path is not None else "the input image"
