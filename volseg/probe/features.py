"""Frozen encoder features for the probes: one row per case (grading) or per patch (segmentation).

Every case goes through the deterministic preprocessing of ``volseg train`` (RAS, spacing,
intensity, foreground crop); each modality is encoded alone by the config's frozen ViT, slice
by slice, and the class (CLS) token and the patch tokens of the **last 4 blocks** (all blocks
of a shallower ViT) are read, each through the final LayerNorm as ``volseg train`` reads them.
A timm CNN (ResNet, DenseNet, VGG, ...) gives its two deepest feature levels instead (views
``*_last2``): each level's global average stands for the class token (:func:`slice_tokens`).

- Grading (patient level): the slices are pooled as the grading head pools them: with a mask
  (the tumour, as the ``mil`` head's attention prefers) the CLS tokens are averaged over the
  slices the mask touches and the patch tokens over the mask (weighted by each patch's
  coverage); a case whose mask is empty or absent averages all slices and all patches. Absent
  modalities are zeros; modalities are concatenated in the manifest's order.
- Segmentation (patch level): one row per token of the last 4 blocks' patch tokens, labelled
  with the majority label of the voxels of its patch (the label map pooled exactly as the
  encoder pools the image); at most ``max_patches`` rows per case, an equal share per label
  present (seeded), so background does not drown the organs.

Rows are cached per case (``<sha256>.pt`` through :class:`~volseg.engine.cache.FeatureCache`'s
keys: case files, encoder identity, preprocessing and the probe's own settings), so running
another protocol on the same config reads them back instead of running the ViT again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from volseg.config.schema import Config
from volseg.data.transforms import build_transforms
from volseg.engine.cache import FeatureCache, cache_identity
from volseg.engine.datasets import finish_sample, label_lut
from volseg.engine.plan import Plan
from volseg.engine.sources import data_items
from volseg.engine.state import seed_everything
from volseg.errors import VolsegError
from volseg.io.atomic import atomic_write
from volseg.models.cnn_encoder import CnnSliceEncoder
from volseg.models.encoder import SliceEncoder
from volseg.models.registry import ENCODERS
from volseg.models.slicing import SLICING, pool_to_feature_grid, slice_dim
from volseg.progress import track

FORMAT = "volseg-probe-features/1"
BLOCKS = 4  # "last 4 blocks" of the linear-probe grid
CHUNK = 32  # slices per ViT call


@dataclass
class ProbeFeatures:
    """Probe rows of every labelled case.

    Attributes:
        task: ``classification`` or ``segmentation``.
        views: feature variant -> ``(N, D)`` float32 rows (see :func:`views_of`).
        labels: ``(N,)`` class ids.
        groups: ``(N,)`` index into ``case_ids`` of the case each row comes from.
        case_ids: the cases, in manifest order.
        classes: class names (grades, or label names for segmentation), index = class id.
        pooling: how rows were formed, in words.
    """

    task: str
    views: dict[str, np.ndarray]
    labels: np.ndarray
    groups: np.ndarray
    case_ids: list[str]
    classes: list[str]
    pooling: str

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Row indices of the cases ``ids`` (in row order)."""
        wanted = {self.case_ids.index(i) for i in ids}
        return np.flatnonzero(np.isin(self.groups, sorted(wanted)))


def probe_encoder(config: Config) -> tuple[SliceEncoder, tuple[int, ...]]:
    """The config's encoder, frozen, in eval mode, and the blocks the probe reads: a ViT's
    last 4 (all of a shallower one), a CNN's two deepest feature levels (strides 16 and 32,
    as ``volseg train`` uses them; finer levels would multiply the patch grid's memory).

    Raises:
        VolsegError: the encoder is not a slice encoder (e.g. ``none``).
    """
    enc = dataclasses.replace(config.model.encoder, layers=None, fusion="mean")
    enc = dataclasses.replace(enc, channel_adapter="repeat")  # each modality encoded alone
    seed_everything(config.seed)  # random weights: the same as volseg train draws, and cacheable
    try:
        encoder = ENCODERS.build(enc.name, cfg=enc, in_channels=1)
    except KeyError:
        encoder = None
    if not isinstance(encoder, SliceEncoder):
        raise VolsegError(
            f"config key 'model.encoder.name' is {enc.name!r}: volseg probe reads a slice "
            "encoder's features; use a ViT (vit_small_patch14_dinov2) or a timm CNN (resnet50)"
        )
    encoder.requires_grad_(False).eval()
    if isinstance(encoder, CnnSliceEncoder):
        return encoder, tuple(encoder.layers)
    depth = len(encoder.vit.blocks)
    return encoder, tuple(range(max(0, depth - BLOCKS), depth))


def slice_tokens(
    encoder: SliceEncoder, volume: Tensor, blocks: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Class and patch tokens of every slice of one single-channel volume.

    A CNN has no class token: its "class token" is each level's global average over the
    slice, its "patch tokens" the level maps on the finest chosen level's grid, each level
    zero-padded to the widest (padding changes neither a standardised linear probe nor a
    cosine kNN).

    Args:
        encoder: a frozen :class:`SliceEncoder` (its slicing, resizing and normalisation).
        volume: ``(1, 1, X, Y, Z)`` intensities in ``[0, 1]``.
        blocks: block indices to read (a CNN reads the levels it was built with).

    Returns:
        ``(cls (L, S, E), patches (L, E, x, y, z))``: ``L = len(blocks)``, ``S`` slices along
        the slice axis, patches on the encoder's feature grid.
    """
    to_slices, to_volume = SLICING[encoder.slice_axis]
    slices = rearrange(volume.float(), to_slices)
    cls, maps = [], []
    with torch.no_grad():
        for chunk in slices.split(CHUNK):
            if isinstance(encoder, CnnSliceEncoder):
                levels = encoder.level_maps(encoder.vit_input(chunk))
                width = max(m.shape[1] for m in levels)
                levels = [F.pad(m, (0, 0, 0, 0, 0, width - m.shape[1])) for m in levels]
                maps.append(torch.stack(levels))
                cls.append(torch.stack([m.mean(dim=(-2, -1)) for m in levels]))
                continue
            out = encoder.vit.forward_intermediates(
                encoder.vit_input(chunk),
                indices=list(blocks),
                norm=True,
                stop_early=True,
                output_fmt="NCHW",
                intermediates_only=True,
                return_prefix_tokens=True,
            )
            maps.append(torch.stack([spatial for spatial, _ in out]))
            cls.append(torch.stack([prefix[:, 0] for _, prefix in out]))
    grid = torch.cat(maps, dim=1)  # (L, S, E, h, w)
    patches = torch.stack([rearrange(g, to_volume, b=1)[0] for g in grid])
    return torch.cat(cls, dim=1), patches


def extract_features(
    plan: Plan,
    *,
    cache_dir: Path,
    max_patches: int = 2000,
    progress: bool = True,
) -> ProbeFeatures:
    """Probe rows of the plan's training and validation cases (every labelled case).

    Args:
        plan: the run plan (:func:`volseg.engine.plan.make_plan`).
        cache_dir: folder of the per-case probe entries (created).
        max_patches: segmentation: rows kept per case at most.
        progress: show a progress bar.
    """
    config = plan.config
    encoder, blocks = probe_encoder(config)
    task = plan.task
    cases = list(plan.manifest.cases)
    by_id = {c.id: c for c in plan.train_cases + plan.val_cases}
    cases = [c for c in cases if c.id in by_id]
    probe_cfg = dataclasses.replace(
        config,
        model=dataclasses.replace(
            config.model,
            encoder=dataclasses.replace(
                config.model.encoder, layers=list(blocks), fusion="stack", channel_adapter="repeat"
            ),
        ),
    )
    identity = cache_identity(probe_cfg, encoder, plan.modalities)
    identity["probe"] = {"format": FORMAT, "blocks": list(blocks), "max_patches": max_patches}
    cache = FeatureCache(cache_dir, identity, torch.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    preprocess = build_transforms(
        config.data, task=task, modalities=plan.modalities, train=False,
        slice_axis=encoder.slice_axis,
    )  # fmt: skip
    lut = label_lut(plan.manifest.labels, plan.labels) if task == "segmentation" else None
    items = data_items(plan, cases)
    entries = []
    for i in track(range(len(cases)), "probe features", enabled=progress):
        key = cache.key(cases[i], f"probe:{task}")
        entry = _load(cache.path(key), cases[i].id)
        if entry is None:
            sample = finish_sample(preprocess(dict(items[i])), lut)
            entry = _case_entry(
                encoder, blocks, sample, task, len(plan.class_names), max_patches, i
            )
            entry = {"format": FORMAT, "id": cases[i].id, **entry}
            atomic_write(cache.path(key), lambda f, e=entry: torch.save(e, f))
        entries.append(entry)
    return _assemble(task, entries, [c.id for c in cases], plan.class_names, len(blocks))


def _load(path: Path, case_id: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged file of any kind is recomputed
        return None
    ok = isinstance(entry, dict) and entry.get("format") == FORMAT and entry.get("id") == case_id
    return entry if ok else None


def _case_entry(
    encoder: SliceEncoder,
    blocks: Sequence[int],
    sample: dict[str, Any],
    task: str,
    n_classes: int,
    max_patches: int,
    index: int,
) -> dict[str, Tensor]:
    image = sample["image"]  # (M, X, Y, Z)
    presence = sample.get("presence", torch.ones(image.shape[0]))
    axis, dim = encoder.slice_axis, slice_dim(encoder.slice_axis)
    cls_rows, patch_grids = [], []
    for m in range(image.shape[0]):
        cls, patches = slice_tokens(encoder, image[m][None, None], blocks)
        if not bool(presence[m]):
            cls, patches = torch.zeros_like(cls), torch.zeros_like(patches)
        cls_rows.append(cls)
        patch_grids.append(patches)
    grid = patch_grids[0].shape[2:]

    def on_grid(mask: Tensor) -> Tensor:  # (1, X, Y, Z) -> (x, y, z) patch coverage
        return pool_to_feature_grid(
            mask[None].float(), axis, encoder.patch_size, encoder.input_size
        )[0, 0]

    if task == "classification":
        mask = sample.get("mask")
        w = on_grid(mask) if mask is not None else torch.zeros(grid)
        plane = tuple(d for d in range(3) if d != dim)
        covered = w.sum(dim=plane) > 1e-6  # (S,) slices the mask touches
        if not bool(covered.any()):
            covered, w = torch.ones_like(covered), torch.ones(grid)
        cls = torch.stack([c[:, covered].mean(dim=1) for c in cls_rows])  # (M, L, E)
        patch = torch.stack(
            [(p * w).sum(dim=(2, 3, 4)) / w.sum() for p in patch_grids]
        )  # (M, L, E)
        return {"cls": cls, "patch": patch, "target": torch.tensor(int(sample["target"]))}
    label = sample["label"].long()  # (1, X, Y, Z) class ids
    fractions = torch.stack([on_grid(label == k) for k in range(n_classes)])  # (K, x, y, z)
    inside = fractions.sum(dim=0) > 0
    majority = fractions.argmax(dim=0)
    tokens = torch.cat(patch_grids, dim=1)  # (L, M*E, x, y, z)
    rows = _balanced_rows(majority[inside], max_patches, index)
    flat = tokens.flatten(2)[:, :, inside.flatten()]  # (L, D, P)
    return {
        "tokens": flat[:, :, rows].permute(2, 0, 1).to(torch.float16).contiguous(),
        "labels": majority[inside][rows].to(torch.int16),
    }


def _balanced_rows(labels: Tensor, limit: int, seed: int) -> Tensor:
    """Up to ``limit`` row indices, an equal share per label present (all of a rarer one)."""
    generator = torch.Generator().manual_seed(seed)
    present = torch.unique(labels)
    share = max(1, limit // max(1, len(present)))
    picked = []
    for value in present:
        rows = torch.nonzero(labels == value).flatten()
        order = torch.randperm(rows.numel(), generator=generator)[:share]
        picked.append(rows[order])
    return torch.sort(torch.cat(picked)).values if picked else torch.zeros(0, dtype=torch.long)


def views_of(task: str, n_blocks: int) -> list[str]:
    """The feature variants of the linear grid: for grading ``cls_last1``, ``cls_last4`` and
    each with the mean patch token of the last block appended (``+patch``); for segmentation
    the patch tokens of the last block and of the last 4 blocks concatenated."""
    last = f"last{n_blocks}"
    if task == "classification":
        return ["cls_last1", f"cls_{last}", "cls_last1+patch", f"cls_{last}+patch"]
    return ["patch_last1", f"patch_{last}"]


def _assemble(
    task: str, entries: list[dict], ids: list[str], classes: list[str], n_blocks: int
) -> ProbeFeatures:
    names = views_of(task, n_blocks)
    if task == "classification":
        cls = torch.stack([e["cls"] for e in entries]).float()  # (N, M, L, E)
        patch = torch.stack([e["patch"] for e in entries]).float()
        last1, lastn = cls[:, :, -1].flatten(1), cls.flatten(1)
        mean_patch = patch[:, :, -1].flatten(1)
        views = [last1, lastn, torch.cat([last1, mean_patch], 1), torch.cat([lastn, mean_patch], 1)]
        labels = torch.stack([e["target"] for e in entries])
        groups = torch.arange(len(entries))
        pooling = (
            "one row per case: CLS tokens averaged over the slices the tumour mask touches, "
            "patch tokens over the mask (all slices where the mask is empty)"
        )
    else:
        tokens = torch.cat([e["tokens"] for e in entries]).float()  # (P, L, D)
        views = [tokens[:, -1], tokens.flatten(1)]
        labels = torch.cat([e["labels"] for e in entries]).long()
        groups = torch.cat([torch.full((len(e["labels"]),), i) for i, e in enumerate(entries)])
        pooling = "one row per ViT patch, labelled with the majority label of its voxels"
    return ProbeFeatures(
        task=task,
        views={n: v.numpy().astype(np.float32) for n, v in zip(names, views, strict=True)},
        labels=labels.numpy().astype(np.int64),
        groups=groups.numpy().astype(np.int64),
        case_ids=ids,
        classes=list(classes),
        pooling=pooling,
    )
