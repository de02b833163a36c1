"""What :meth:`~volseg.inference.predict.Predictor.predict` is given, as the data dict of a case.

:func:`case_data` puts a case's sources in the model's modality order with their ``presence``,
as :func:`volseg.data.loading.case_to_dict` does for a manifest case, so that prediction reads
and preprocesses them with the validation pipeline of
:func:`volseg.data.transforms.build_transforms`, loaders included
(:class:`~volseg.data.loading.LoadVolumed`: the file errors, channel and grid checks, and the
reference image kept for writing outputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volseg.data.loading import Source
from volseg.data.manifest import ImageSource
from volseg.errors import VolsegError
from volseg.io import Image

__all__ = ["Source", "case_data"]


def case_data(
    sources: Source | Sequence[Source | None] | Mapping[str, Source | None],
    modalities: Sequence[str],
    *,
    mask: Source | None = None,
    require_all: bool = False,
) -> dict[str, Any]:
    """The data dict of one case to predict, before loading.

    Args:
        sources: one volume (for several modalities: a 4D file or image with one channel
            each), or one source per modality, in ``modalities`` order or as a mapping by name
            (None: missing).
        modalities: the model's modality names.
        mask: optional region mask source, on the image's grid.
        require_all: refuse a case with a missing modality (segmentation models need all).

    Returns:
        ``image``: the one volume or the per-modality list; ``presence``: float32 ``(M,)``;
        ``mask`` when given. The pipeline's loaders check channel counts and grids.

    Raises:
        VolsegError: a modality name the model does not have, no modality given, or a
            missing one with ``require_all``.
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
    given = [e for e in entries if e is not None]
    if not given:
        raise VolsegError(f"no image given; the model expects {names}")
    if len(entries) == 1:  # one volume holding every modality as a channel
        data: dict[str, Any] = {"image": entries[0], "presence": np.ones(len(names), np.float32)}
    else:
        presence = np.array([e is not None for e in entries], dtype=np.float32)
        data = {"image": entries, "presence": presence}
        missing = [m for m, e in zip(names, entries, strict=False) if e is None]
        if require_all and missing and len(entries) == len(names):
            raise VolsegError(
                f"{_name(given[0])}: modalities {missing} are missing; this segmentation model "
                f"needs all of {names}"
            )
    if mask is not None:
        data["mask"] = mask
    return data


def _name(source: Source) -> str:
    """The file a source names, for messages."""
    if isinstance(source, Image):
        return str(source.path) if source.path is not None else "the input image"
    return str(Path(source.path if isinstance(source, ImageSource) else source))
