"""Training and validation samples: MONAI pipelines on case files or on cached features.

Reproducibility is built into the indices: the sampler yields ``(epoch, index)`` pairs and the
dataset re-seeds the pipeline's random state from ``(seed, epoch, index)`` before every sample.
A sample is therefore the same whatever the number of loader workers or ranks, and a run
resumed in the middle of an epoch draws exactly the slabs and flips it would have drawn.

Samples are plain dicts of tensors (``image (C, X, Y, Z)``, ``label (1, X, Y, Z)`` class
indices, ``mask``, ``presence (M,)``, ``target``, cached ``features (F, x, y, z)``). Volumes keep
their own in-plane size (whole slices, foreground-cropped), so a batch is a *list* of samples;
:func:`stack_groups` stacks the ones of equal shape for the forward pass.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, CropForegroundd
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from volseg.errors import VolsegError

SAMPLE_KEYS = ("image", "label", "mask", "presence", "target", "features")


def sample_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    """The seed of sample ``index`` in ``epoch`` (``stream`` 0: its pipeline, 1: the epoch's
    order); independent streams for every combination."""
    return int(np.random.SeedSequence([seed, epoch, index, stream]).generate_state(1)[0])


def label_lut(label_map: Mapping[int, str], selected: Sequence[int]) -> Tensor:
    """Look-up table label value -> class index: class ``i`` is the ``i``-th smallest selected
    value (background 0 included); values of the map that are not selected map to 0."""
    values = sorted(int(v) for v in label_map)
    lut = torch.full((max(values) + 1,), -1, dtype=torch.int64)
    lut[torch.tensor(values)] = 0
    for i, value in enumerate(sorted(int(v) for v in selected)):
        lut[value] = i
    return lut


def apply_lut(label: Tensor, lut: Tensor, case_id: str) -> Tensor:
    """Map a label volume's values to class indices.

    Raises:
        VolsegError: a value that is not in the manifest's label map.
    """
    label = label.long()
    bad = (label < 0) | (label >= lut.numel())
    mapped = lut[label.clamp(0, lut.numel() - 1)]
    if bool(bad.any()) or bool((mapped < 0).any()):
        found = sorted(set(torch.unique(label[bad | (mapped < 0)]).tolist()))
        raise VolsegError(
            f"case {case_id}: label values {found[:5]} are not in the manifest's label map; "
            "fix the label file or the manifest's labels"
        )
    return mapped


def finish_sample(data: Mapping[str, Any], lut: Tensor | None) -> dict[str, Any]:
    """Plain tensors of the keys a step uses, label values mapped to class indices."""
    out: dict[str, Any] = {"id": data["id"]}
    for key in SAMPLE_KEYS:
        if key in data and data[key] is not None:
            value = data[key]
            value = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
            out[key] = value
    if "label" in out and lut is not None:
        out["label"] = apply_lut(out["label"], lut, str(data["id"]))
    return out


def pipeline_tail(pipeline: Compose) -> Compose:
    """The steps of a training pipeline after preprocessing (after the foreground crop)."""
    for i, transform in enumerate(pipeline.transforms):
        if isinstance(transform, CropForegroundd):
            return Compose(list(pipeline.transforms[i + 1 :]))
    raise ValueError("the pipeline has no CropForegroundd step to split at")


class SampleDataset(Dataset):
    """Samples from data dicts (or cache entries) through a seeded pipeline.

    Args:
        load: ``index -> data dict`` (a case dict for file pipelines, a cache entry for the
            tail of a cached pipeline).
        size: number of cases.
        transform: the pipeline applied to ``load(index)``.
        seed: run seed; see :func:`sample_seed`.
        lut: label look-up table (:func:`label_lut`), None for grading.
    """

    def __init__(
        self,
        load: Callable[[int], dict[str, Any]],
        size: int,
        transform: Compose,
        *,
        seed: int,
        lut: Tensor | None,
    ) -> None:
        self.load, self.size, self.transform, self.seed, self.lut = load, size, transform, seed, lut

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        self.transform.set_random_state(sample_seed(self.seed, epoch, index))
        return finish_sample(self.transform(self.load(index)), self.lut)


class EpochSampler(Sampler[tuple[int, int]]):
    """This rank's ``(epoch, index)`` pairs of one epoch, from a given batch on.

    The epoch's order is a permutation seeded by ``(seed, epoch)`` (or, with ``weights``, draws
    with replacement in proportion to them), padded by wrapping to a multiple of the world
    size and dealt round-robin to the ranks, as ``DistributedSampler`` does.

    Args:
        size: number of training cases.
        seed: run seed.
        rank: this rank.
        world_size: number of ranks.
        weights: per-case sampling weights for balanced sampling; None shuffles.
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch and how many of this rank's samples to skip (resume)."""
        self.epoch, self.skip = epoch, skip

    def order(self, epoch: int) -> list[int]:
        """This rank's case indices of ``epoch``, skipping nothing."""
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, 0, stream=1))
        if self.weights is None:
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = torch.multinomial(self.weights, self.size, True, generator=g).tolist()
        total = math.ceil(self.size / self.world_size) * self.world_size
        order = (order * math.ceil(total / len(order)))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order(self.epoch)[self.skip :]:
            yield self.epoch, index

    def __len__(self) -> int:
        return max(0, math.ceil(self.size / self.world_size) - self.skip)


def balanced_weights(targets: Sequence[int]) -> list[float]:
    """Per-case weights that make every class equally likely: ``1 / count(class)``."""
    counts = Counter(int(t) for t in targets)
    return [1.0 / counts[int(t)] for t in targets]


def collate_list(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep a batch as a list: volumes of one batch may differ in size."""
    return samples


def stack_groups(samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stack samples whose tensors have equal shapes; one dict of batched tensors per group.

    Groups keep the order of their first sample; ``ids`` lists the case ids of each group.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for sample in samples:
        signature = tuple((key, tuple(sample[key].shape)) for key in SAMPLE_KEYS if key in sample)
        groups.setdefault(signature, []).append(sample)
    out = []
    for members in groups.values():
        batch: dict[str, Any] = {"ids": [m["id"] for m in members]}
        for key in SAMPLE_KEYS:
            if key in members[0]:
                batch[key] = torch.stack([m[key] for m in members])
        out.append(batch)
    return out


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move a stacked batch's tensors to ``device`` (non-blocking from pinned memory)."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
    }
