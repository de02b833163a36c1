"""Read the volumes of one case and hand them to the preprocessing as a data dict.

:func:`read_case` reads one scalar volume per model modality (a 4D file is split into its
channels) and checks they share one grid; :func:`to_data` stacks them into the dict the
validation pipeline of :func:`volseg.data.transforms.build_transforms` takes after its loaders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from volseg.data.loading import meta_volume
from volseg.data.manifest import ImageSource
from volseg.errors import VolsegError
from volseg.io import Image, read_image

# One volume source: a file or DICOM folder, one channel of a 4D file, or an image in memory.
Source = str | Path | ImageSource | Image


@dataclass
class CaseInput:
    """The volumes of one case as read from disk, before any preprocessing.

    Attributes:
        images: one scalar image per model modality (None where missing), all on one grid.
        reference: the first present image: outputs are written on its grid, with its header.
        mask: optional region mask on the same grid.
    """

    images: list[Image | None]
    reference: Image
    mask: Image | None = None


def read_case(
    sources: Source | Sequence[Source | None] | Mapping[str, Source | None],
    modalities: Sequence[str],
    *,
    mask: Source | None = None,
    require_all: bool = False,
) -> CaseInput:
    """Read the volumes of one case, one scalar image per modality, and check their grids.

    Args:
        sources: one source (for several modalities: a 4D file with one channel each), or one
            source per modality, in ``modalities`` order or as a mapping by name (None: missing).
        modalities: the model's modality names.
        mask: optional region mask source.
        require_all: refuse a case with a missing modality (segmentation models need all).

    Raises:
        VolsegError: unreadable file, a channel count that does not match the modalities,
            no modality present, a missing one with ``require_all``, or images on different
            grids.
    """
    names = list(modalities)
    if isinstance(sources, Mapping):
        unknown = sorted(set(sources) - set(names))
        if unknown:
            raise VolsegError(f"modalities {unknown} are unknown; the model expects {names}")
        entries: list[Source | None] = [sources.get(m) for m in names]
    elif isinstance(sources, Sequence) and not isinstance(sources, str):
        entries = list(sources)
    else:
        entries = [sources]
    images: list[Image | None] = [_read_source(e) if e is not None else None for e in entries]
    if len(images) == 1 and images[0] is not None and images[0].num_channels > 1:
        whole = images[0]
        images = [whole.channel(c) for c in range(whole.num_channels)]
    present = [i for i in images if i is not None]
    if not present:
        raise VolsegError(f"no image given; the model expects {names}")
    reference = present[0]
    where = reference.path or "input"
    if len(images) != len(names) or any(i.num_channels != 1 for i in present):
        counts = [i.num_channels if i is not None else 0 for i in images]
        raise VolsegError(
            f"{where}: gives {sum(counts)} channel(s) in {len(images)} volume(s), the model "
            f"expects one per modality {names}; pass one scalar volume per modality or a 4D "
            "file with exactly that many channels"
        )
    missing = [m for m, i in zip(names, images, strict=True) if i is None]
    if require_all and missing:
        raise VolsegError(
            f"{where}: modalities {missing} are missing; this segmentation model needs all of "
            f"{names}"
        )
    loaded_mask = _read_source(mask) if mask is not None else None
    for other in [*present[1:], loaded_mask]:
        if other is not None and (problems := other.geometry.differences(reference.geometry)):
            raise VolsegError(
                f"{other.path}: grid differs from {where} ({'; '.join(problems)}); the volumes "
                "of a case must be co-registered on one grid"
            )
    return CaseInput(images, reference, loaded_mask)


def to_data(case: CaseInput, modalities: Sequence[str]) -> dict[str, Any]:
    """The data dict the validation pipeline takes after its loaders (as ``LoadVolumed`` makes).

    Returns:
        ``image``: float32 MetaTensor ``(M, X, Y, Z)`` (zeros for a missing modality) with the
        RAS affine and the meta :mod:`volseg.data.loading` documents; ``presence`` float32
        ``(M,)``; ``mask`` ``(1, X, Y, Z)`` when the case has one.
    """
    reference = case.reference
    zeros = np.zeros(reference.shape, dtype=np.float32)
    array = np.stack([zeros if i is None else i.array.astype(np.float32) for i in case.images])
    data: dict[str, Any] = {
        "image": meta_volume(array, reference),
        "presence": np.array([i is not None for i in case.images], dtype=np.float32),
    }
    if case.mask is not None:
        data["mask"] = meta_volume(case.mask.array[None].astype(np.float32), reference)
    return data


def _read_source(source: Source) -> Image:
    if isinstance(source, Image):
        return source
    if isinstance(source, ImageSource):
        image = read_image(source.path)
        if source.channel is None:
            return image
        if not 0 <= source.channel < image.num_channels:
            raise VolsegError(
                f"{source.path}: has {image.num_channels} channel(s), no channel "
                f"{source.channel}; fix the modality's channel in the manifest"
            )
        return image.channel(source.channel)
    return read_image(source)
