"""volseg's own MONAI dictionary transforms, used by the pipelines of
:mod:`volseg.data.transforms` (whose docstring says where each one runs and why).

- :class:`RandSlabd`: ``slab`` consecutive whole slices, through the foreground or the mask;
- :class:`SquareRandRotate90d`: quarter turns of square slices only (cached features);
- :class:`ZScoreToUnitd`: MRI z-scores onto [0, 1], background kept 0;
- :class:`ZeroAbsentModalitiesd`: channels of missing modalities back to exactly 0;
- :class:`TorchioAugmentd`: a TorchIO transform per channel, repeatable by MONAI's seed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    MapTransform,
    Randomizable,
    RandomizableTransform,
    RandRotate90d,
    SpatialCrop,
)

MRI_SDS = 4.0  # z-scores in [-MRI_SDS, MRI_SDS] map onto [0, 1]


class RandSlabd(Randomizable, MapTransform):
    """Crop ``slab`` consecutive whole slices along ``axis``, the same ones from every key.

    Args:
        keys: channel-first volumes with the same size along ``axis`` (in-plane sizes may
            differ, e.g. a cached feature grid); each must have at least ``slab`` slices.
        slab: slices kept.
        axis: spatial axis (0, 1, 2) the slices are stacked along.
        guide_key: label map whose foreground guides the sampling; absent or empty: uniform.
        pos_fraction: chance of a foreground slab when the guide has foreground.
        allow_missing_keys: skip keys absent from the dict.
    """

    def __init__(
        self,
        keys: KeysCollection,
        slab: int,
        axis: int,
        guide_key: str | None = None,
        pos_fraction: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.slab, self.axis = slab, axis
        self.guide_key, self.pos_fraction = guide_key, pos_fraction
        self._start = 0

    def randomize(self, data: Mapping[Hashable, Any]) -> None:
        size = int(data[self.first_key(data)].shape[1 + self.axis])
        last = size - self.slab  # largest valid start
        if last < 0:
            raise ValueError(f"{size} slices are fewer than the slab of {self.slab}; pad first")
        counts = self._class_counts(data)
        if counts is not None and self.R.rand() < self.pos_fraction:
            present = np.flatnonzero(counts.sum(axis=0))
            weights = counts[:, self.R.choice(present)].astype(np.float64)
            index = int(self.R.choice(size, p=weights / weights.sum()))
            low, high = max(0, index - self.slab + 1), min(index, last)
            self._start = int(self.R.randint(low, high + 1))
        else:
            self._start = int(self.R.randint(0, last + 1))

    def _class_counts(self, data: Mapping[Hashable, Any]) -> np.ndarray | None:
        """``(slices, classes)`` foreground voxel counts of the guide, None without foreground."""
        if self.guide_key is None or self.guide_key not in data:
            return None
        label = np.asarray(data[self.guide_key][0], dtype=np.int64)
        if not label.any():
            return None
        n = int(label.max()) + 1
        index = np.moveaxis(label, self.axis, 0).reshape(label.shape[self.axis], -1)
        index = index + n * np.arange(index.shape[0])[:, None]
        counts = np.bincount(index.ravel(), minlength=n * label.shape[self.axis])
        counts = counts.reshape(-1, n)
        counts[:, 0] = 0
        return counts

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(d)
        for key in self.key_iterator(d):
            shape = d[key].shape[1:]
            if shape[self.axis] < self.start_stop[1]:
                raise ValueError(f"'{key}' has {shape[self.axis]} slices, fewer than the slab")
            roi = [slice(0, s) for s in shape]
            roi[self.axis] = slice(*self.start_stop)
            d[key] = SpatialCrop(roi_slices=roi)(d[key])
        return d

    @property
    def start_stop(self) -> tuple[int, int]:
        """First and one-past-last slice of the last drawn slab."""
        return self._start, self._start + self.slab


class SquareRandRotate90d(RandRotate90d):
    """``RandRotate90d`` that turns only slices that are square in ``spatial_axes``.

    Used with cached features: a quarter turn of a non-square slice would change the cached
    feature grid's shape and its padding side.
    """

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> Any:
        shape = data[self.first_key(data)].shape[1:]
        self._square = shape[self.spatial_axes[0]] == shape[self.spatial_axes[1]]
        return super().__call__(data, lazy)

    def randomize(self, data: Any | None = None) -> None:
        super().randomize(data)
        self._do_transform = self._do_transform and getattr(self, "_square", True)


class ZScoreToUnitd(MapTransform):
    """Map z-scores onto [0, 1]: ``clip(0.5 + z / (2 * sds), 0, 1)``; zeros stay 0 (background).

    Args:
        keys: z-scored images (``NormalizeIntensityd(nonzero=True)`` output).
        sds: z-scores in ``[-sds, sds]`` span [0, 1].
        allow_missing_keys: skip keys absent from the dict.
    """

    def __init__(
        self, keys: KeysCollection, sds: float = MRI_SDS, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.sds = sds

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            z = d[key]
            d[key] = torch.where(z != 0, (0.5 + z / (2 * self.sds)).clamp(0, 1), z)
        return d


class ZeroAbsentModalitiesd(MapTransform):
    """Set the channels of absent modalities (``presence`` 0) back to exactly 0.

    Args:
        keys: channel-first images with one channel per modality.
        presence_key: float ``(C,)`` presence vector (1 present, 0 missing).
    """

    def __init__(self, keys: KeysCollection, presence_key: str = "presence") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.presence_key = presence_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.presence_key not in d:
            return d
        for key in self.key_iterator(d):
            presence = torch.as_tensor(d[self.presence_key], dtype=d[key].dtype)
            d[key] = d[key] * presence.reshape(-1, *([1] * (d[key].ndim - 1)))
        return d


class TorchioAugmentd(RandomizableTransform, MapTransform):
    """Apply a TorchIO transform to each channel of ``keys`` with probability ``prob``.

    TorchIO draws its parameters from torch's global generator; here it runs under a torch seed
    drawn from this transform's own random state, so ``set_random_state`` makes it repeatable.

    Args:
        keys: channel-first images.
        transform: a TorchIO transform (probability 1) taking and returning ``(1, X, Y, Z)``.
        prob: chance of applying it to a sample (each channel then gets its own draw).
        allow_missing_keys: skip keys absent from the dict.
    """

    def __init__(
        self,
        keys: KeysCollection,
        transform: Callable[[torch.Tensor], torch.Tensor],
        prob: float = 0.1,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.transform = transform
        self._seed = 0

    def randomize(self, data: Any | None = None) -> None:
        super().randomize(None)
        self._seed = int(self.R.randint(2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._seed)
                out = [self.transform(c[None].as_subclass(torch.Tensor).float()) for c in image]
            result = image.clone()
            result.as_tensor().copy_(torch.cat([torch.as_tensor(o) for o in out]))
            d[key] = result
        return d
