"""Where a run's samples come from: case files through the full pipeline, or the feature cache.

:func:`build_run_data` fills the cache when the encoder is frozen (every training volume
padded to the slab, every validation volume whole) and returns a :class:`RunData` that hands
out per-epoch loaders:

- *files*: MONAI's pipeline from the case files. Without a cache it is the full training
  pipeline (all augmentations) and each step runs the encoder on its slab. With a cache it is
  the feature-safe pipeline, used for the one epoch that measures recomputation.
- *cache*: the stored preprocessed volume and features through the feature-safe steps only
  (slab sampling, flips, square quarter turns), applied to image, label and features alike.

Both draw the same slabs and flips for the same ``(seed, epoch, case)``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.transforms import SpatialPadd
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from volseg.data.loading import case_to_dict
from volseg.data.transforms import build_transforms, slice_axis_index
from volseg.engine.cache import FeatureCache, FillReport, cache_identity
from volseg.engine.datasets import (
    EpochSampler,
    SampleDataset,
    balanced_weights,
    collate_list,
    finish_sample,
    label_lut,
    pipeline_tail,
)
from volseg.engine.distributed import barrier, reduce_sums
from volseg.engine.plan import Plan
from volseg.models.build import image_only
from volseg.runtime import DistContext, Precision

FEATURES = "features"


@dataclass
class RunData:
    """The training and validation data of a run.

    Attributes:
        files: training samples from the case files.
        cached: training samples from the cache (None without one).
        sampler: this rank's ``(epoch, index)`` order.
        val: this rank's validation samples (whole volumes).
        batch_size, num_workers: loader settings.
        fill: what filling the cache did (None without one).
    """

    files: SampleDataset
    cached: SampleDataset | None
    sampler: EpochSampler
    val: Dataset
    batch_size: int
    num_workers: int
    fill: FillReport | None = None
    generator: torch.Generator = field(default_factory=torch.Generator)

    def loader(self, epoch: int, *, skip_batches: int = 0, cached: bool = True) -> DataLoader:
        """This rank's batches of ``epoch`` from batch ``skip_batches`` on."""
        sampler = copy.copy(self.sampler)  # loaders of one epoch may coexist (cache timing)
        sampler.set_epoch(epoch, skip_batches * self.batch_size)
        dataset = self.cached if cached and self.cached is not None else self.files
        # A private generator: creating the iterator must not draw from the global RNG,
        # or a run resumed mid-epoch would see other dropout masks than the original.
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_list,
            generator=self.generator,
            pin_memory=torch.cuda.is_available(),
        )

    def val_loader(self) -> DataLoader:
        return DataLoader(
            self.val, batch_size=None, num_workers=self.num_workers, generator=self.generator
        )


class _ListDataset(Dataset):
    """``index -> fn(items[index])``: a picklable lazy map for loader workers."""

    def __init__(self, items: Sequence[Any], fn: Any) -> None:
        self.items, self.fn = list(items), fn

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.fn(self.items[index])


class _PipelineSample:
    def __init__(self, pipeline: Any, lut: Tensor | None) -> None:
        self.pipeline, self.lut = pipeline, lut

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        return finish_sample(self.pipeline(dict(item)), self.lut)


class _CacheEntry:
    def __init__(self, cache: FeatureCache, lut: Tensor | None) -> None:
        self.cache, self.lut = cache, lut

    def __call__(self, key: str) -> dict[str, Any]:
        return finish_sample(self.cache.load(key), self.lut)


class _CacheLoad:
    """``index -> cache entry`` of the training cases, as a data dict for the pipeline tail."""

    def __init__(self, cache: FeatureCache, keys: Sequence[str]) -> None:
        self.cache, self.keys = cache, list(keys)

    def __call__(self, index: int) -> dict[str, Any]:
        entry = self.cache.load(self.keys[index])
        entry.pop("format", None)
        return entry


class _ItemLoad:
    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.items = list(items)

    def __call__(self, index: int) -> dict[str, Any]:
        return dict(self.items[index])


def data_items(plan: Plan, cases: Sequence[Any]) -> list[dict[str, Any]]:
    """The data dicts of ``cases``; grading drops the tumour label map (the mask guides it)."""
    items = []
    for case in cases:
        item = case_to_dict(case, plan.modalities, classes=plan.classes or None)
        if plan.task == "classification":
            item.pop("label", None)
        items.append(item)
    return items


def build_run_data(
    plan: Plan,
    model: nn.Module,
    *,
    cache_dir: Path | None,
    ctx: DistContext,
    precision: Precision,
    cache_dtype: torch.dtype = torch.float16,
    progress: bool = True,
) -> RunData:
    """Datasets, sampler and (when ``cache_dir`` is given) a filled feature cache.

    Args:
        plan: the run plan.
        model: the model (its encoder fills the cache).
        cache_dir: cache folder, or None to recompute features every step.
        ctx: distributed context (ranks fill disjoint shares, then wait for each other).
        precision: autocast for the encoder pass that fills the cache.
        cache_dtype: storage dtype of cached features.
        progress: count the cases filling the cache on a bar (rank 0).
    """
    cfg = plan.config
    data_cfg, axis = cfg.data, cfg.model.encoder.slice_axis
    common = dict(task=plan.task, modalities=plan.modalities, slice_axis=axis)
    lut = label_lut(plan.manifest.labels, plan.labels) if plan.task == "segmentation" else None
    train_items, val_items = data_items(plan, plan.train_cases), data_items(plan, plan.val_cases)
    cached = cache_dir is not None
    # The encoder-off ablation gets exactly the augmentation its encoder row gets (the cached
    # one), so the two rows differ in the encoder alone.
    same_as_cached = cached or image_only(cfg.model)
    train_pipeline = build_transforms(
        data_cfg, train=True, for_cached_features=same_as_cached, **common
    )
    files = SampleDataset(
        _ItemLoad(train_items), len(train_items), train_pipeline, seed=cfg.seed, lut=lut
    )
    weights = None
    if cfg.train.balanced_sampling and plan.task == "classification":
        weights = balanced_weights([item["target"] for item in train_items])
    sampler = EpochSampler(
        len(train_items), seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size, weights=weights
    )
    val_cases = plan.val_cases[ctx.rank :: ctx.world_size]
    val_items = val_items[ctx.rank :: ctx.world_size]
    preprocess = build_transforms(data_cfg, train=False, **common)
    run = RunData(
        files=files,
        cached=None,
        sampler=sampler,
        val=_ListDataset(val_items, _PipelineSample(preprocess, lut)),
        batch_size=cfg.train.batch_size,
        num_workers=cfg.train.num_workers,
    )
    if not cached:
        return run

    identity = cache_identity(cfg, model.encoder, plan.modalities)
    cache = FeatureCache(cache_dir, identity, cache_dtype)
    roi = [-1, -1, -1]
    roi[slice_axis_index(axis)] = data_cfg.slab
    pad = SpatialPadd(["image", "label", "mask"], spatial_size=roi, allow_missing_keys=True)
    encode = volume_encoder(model, plan, ctx.device, precision)
    train_kind = f"train:{data_cfg.slab}"
    shard = (ctx.rank, ctx.world_size)
    drop = ("image",) if plan.task == "classification" else ()
    report = cache.fill(
        plan.train_cases,
        train_items,
        kind=train_kind,
        preprocess=preprocess,
        encode=encode,
        pad=pad,
        shard=shard,
        drop=drop,
        progress=progress,
    )
    val_report = cache.fill(
        plan.val_cases,
        data_items(plan, plan.val_cases),
        kind="val",
        preprocess=preprocess,
        encode=encode,
        shard=shard,
        drop=drop,
        progress=progress,
    )
    barrier(ctx)
    counts = reduce_sums(
        [report.computed + val_report.computed, report.reused + val_report.reused], ctx
    )
    report.computed, report.reused = int(counts[0]), int(counts[1])
    report.seconds += val_report.seconds  # this rank's time (ranks fill in parallel)
    tail_pipeline = build_transforms(
        data_cfg, train=True, for_cached_features=True, extra_keys=[FEATURES], **common
    )
    keys = [cache.key(case, train_kind) for case in plan.train_cases]
    run.cached = SampleDataset(
        _CacheLoad(cache, keys), len(keys), pipeline_tail(tail_pipeline), seed=cfg.seed, lut=lut
    )
    run.val = _ListDataset([cache.key(c, "val") for c in val_cases], _CacheEntry(cache, lut))
    run.fill = report
    return run


def volume_encoder(model: nn.Module, plan: Plan, device: torch.device, precision: Precision):
    """``(1, C, X, Y, Z)`` image -> ``(1, F, x, y, z)`` float32 features (modalities stacked)."""

    def encode(image: Tensor) -> Tensor:
        with torch.no_grad(), precision.autocast():
            features = model.encode(image.to(device))
        if isinstance(features, dict):
            features = torch.cat([features[m] for m in plan.modalities], dim=1)
        return features.float()

    return encode
