"""The plan of a training run: dataset, fold, classes, steps; the run folder; the dry-run text.

:func:`make_plan` reads and checks everything a run needs before any file is written, so a
bad manifest, split or class name stops ``volseg train`` (and ``--dry-run``) with one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from volseg.config import Config
from volseg.data import (
    Case,
    Manifest,
    check_manifest,
    load_manifest,
    load_splits,
    make_splits,
)
from volseg.data.splits import Splits
from volseg.errors import VolsegError
from volseg.models.onnx_weights import AUTO, resolve_auto_weights


@dataclass
class Plan:
    """What a run trains on.

    Attributes:
        config: the resolved config.
        manifest: the dataset.
        splits: every fold (``[{"train": [...], "val": [...]}, ...]``).
        train_cases, val_cases: the cases of ``config.data.fold``.
        labels: segmentation label map used (value -> name, background 0 included); class ``i``
            is the ``i``-th smallest value. Empty for grading.
        classes: grading class names (index = class id). Empty for segmentation.
        world_size: number of training processes.
        weights_auto: ``model.encoder.weights`` was ``auto`` (resolved in ``config``).
    """

    config: Config
    manifest: Manifest
    splits: Splits
    train_cases: list[Case]
    val_cases: list[Case]
    labels: dict[int, str] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    world_size: int = 1
    weights_auto: bool = False

    @property
    def task(self) -> str:
        return self.config.model.task

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest.modalities)

    @property
    def class_names(self) -> list[str]:
        """Model output names in class order: label names (segmentation) or classes."""
        if self.task == "segmentation":
            return [self.labels[v] for v in sorted(self.labels)]
        return list(self.classes)

    @property
    def batches_per_epoch(self) -> int:
        """Loader batches per rank and epoch (the last one may be short)."""
        per_rank = math.ceil(len(self.train_cases) / self.world_size)
        return math.ceil(per_rank / self.config.train.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch (a short accumulation at the end still steps)."""
        return math.ceil(self.batches_per_epoch / self.config.train.grad_accum)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.train.epochs


def make_plan(config: Config, *, world_size: int = 1, check_labels: bool = False) -> Plan:
    """Read the manifest and splits of ``config`` and pick the fold, labels and classes.

    Args:
        config: the resolved config.
        world_size: ranks sharing the batches.
        check_labels: also read every label map and refuse values outside the manifest's
            label map (``--dry-run``: a read per case, so a real run leaves it to ``check``).

    Raises:
        VolsegError: no manifest, a task mismatch, manifest problems (files, grids, with
            ``check_labels`` label values), bad splits, a fold past the splits, or
            ``data.classes`` naming unknown labels.
    """
    data, enc = config.data, config.model.encoder
    weights_auto = enc.weights == AUTO
    # resolved once here, so the run folder's config.yaml, the cache key and the checkpoint
    # name the weights actually used
    enc.weights = resolve_auto_weights(enc.weights, enc.name)
    if not data.manifest:
        raise VolsegError(
            "config key 'data.manifest' is empty; set it to the dataset's manifest "
            "(e.g. data.manifest=data/synthetic/organs/manifest.json)"
        )
    task = config.model.task
    manifest = load_manifest(
        data.manifest, classes=data.classes if task == "classification" else None
    )
    if manifest.task != task:
        raise VolsegError(
            f"{data.manifest}: a {manifest.task} dataset, but config key 'model.task' is "
            f"{task!r}; fix one of them"
        )
    check_manifest(manifest, check_labels=check_labels)
    if data.splits:
        splits = load_splits(data.splits, manifest)
    else:
        splits = make_splits(manifest, folds=data.folds, seed=config.seed)
    if data.fold >= len(splits):
        raise VolsegError(
            f"config key 'data.fold' is {data.fold} but {data.splits} has {len(splits)} folds; "
            "pick a fold below that"
        )
    fold = splits[data.fold]
    by_id = {case.id: case for case in manifest.cases}
    train_cases = [by_id[i] for i in fold["train"]]
    val_cases = [by_id[i] for i in fold["val"]]
    if not train_cases or not val_cases:
        raise VolsegError(
            f"fold {data.fold} of the splits has {len(train_cases)} training and "
            f"{len(val_cases)} validation cases; both need at least one"
        )
    plan = Plan(
        config,
        manifest,
        splits,
        train_cases,
        val_cases,
        world_size=world_size,
        weights_auto=weights_auto,
    )
    if task == "segmentation":
        plan.labels = _selected_labels(manifest, data.classes)
    else:
        plan.classes = list(manifest.classes)
        if len(plan.classes) < 2:
            raise VolsegError(f"{data.manifest}: grading needs at least two classes")
        head = config.model.head
        if head.name == "size" or head.lesion_volume:
            why = "the size head" if head.name == "size" else "model.head.lesion_volume=true"
            _require_masks(data.manifest, train_cases + val_cases, why)
    return plan


def _require_masks(manifest: str, cases: list[Case], why: str) -> None:
    """The ``size`` head and ``lesion_volume`` grade from the tumour mask's volume: refuse a
    case without one now, not at its first training step."""
    missing = [case.id for case in cases if case.mask is None]
    if missing:
        raise VolsegError(
            f"{manifest}: case {missing[0]!r} has no 'mask' ({len(missing)} of {len(cases)} "
            f"cases lack one); {why} grades from the tumour's volume, so give every case "
            "a mask or pick another model.head"
        )


def _selected_labels(manifest: Manifest, names: list[str] | None) -> dict[int, str]:
    labels = dict(manifest.labels)
    if not labels or 0 not in labels or len(labels) < 2:
        raise VolsegError(
            f"{manifest.source}: the label map needs background 0 and at least one label; "
            "fix the manifest's labels"
        )
    if names is None:
        return labels
    by_name = {name: value for value, name in labels.items()}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise VolsegError(
            f"config key 'data.classes' names {unknown}, not labels of {manifest.source} "
            f"({', '.join(labels.values())}); fix data.classes"
        )
    return {0: labels[0], **{by_name[n]: n for n in names if by_name[n] != 0}}


def new_run_dir(config: Config) -> Path:
    """``output_dir/name``, or ``name-1``, ``name-2``, ... if taken; never an existing folder."""
    base = Path(config.output_dir)
    candidate, n = base / config.name, 0
    while candidate.exists():
        n += 1
        candidate = base / f"{config.name}-{n}"
    return candidate


def ras_grids(cases: list[Case]) -> tuple[np.ndarray, np.ndarray]:
    """Spacing (mm) and shape (voxels) of the cases' first images along RAS ``(X, Y, Z)``.

    Returns:
        ``(spacings, shapes)``, both ``(len(cases), 3)``.
    """
    from volseg.io import read_info

    spacings, shapes = np.zeros((len(cases), 3)), np.zeros((len(cases), 3))
    for i, case in enumerate(cases):
        source = next(iter(case.images.values()))
        geometry = read_info(source.path).geometry
        for axis in range(3):  # array axis -> the patient axis it runs along most
            ras = int(np.argmax(np.abs(geometry.direction[:, axis])))
            spacings[i, ras], shapes[i, ras] = geometry.spacing[axis], geometry.shape[axis]
    return spacings, shapes


def median_spacing(cases: list[Case]) -> tuple[float, float, float]:
    """Median voxel spacing (mm) of the cases' first images along RAS ``(X, Y, Z)``."""
    x, y, z = np.median(ras_grids(cases)[0], axis=0)
    return float(x), float(y), float(z)


def token_note(plan: Plan, feature_channels: int, patch_size: int) -> str:
    """Tokens per slice and the feature-cache size they imply, from up to 20 training cases.

    Volumes are taken at the target spacing before the foreground crop, so the cache size is
    an upper estimate; features are fp16, every modality encoded.
    """
    from volseg.models.slicing import feature_grid, slice_dim

    cfg = plan.config
    enc = cfg.model.encoder
    sample = plan.train_cases[:20]
    spacings, shapes = ras_grids(sample)
    target = spacings if cfg.data.spacing is None else np.asarray(cfg.data.spacing)[None]
    shapes = np.maximum(np.round(shapes * spacings / target), 1).astype(int)
    input_size = None if enc.input_size == "native" else enc.input_size
    dim = slice_dim(enc.slice_axis)
    grids = [feature_grid(shape, enc.slice_axis, patch_size, input_size) for shape in shapes]
    tokens = [int(np.prod([g for d, g in enumerate(grid) if d != dim])) for grid in grids]
    per_case = (
        np.mean([t * s[dim] for t, s in zip(tokens, shapes, strict=True)]) * feature_channels * 2
    )
    cases = len(plan.train_cases) + len(plan.val_cases)
    total = per_case * len(plan.modalities) * cases
    shown = [g for d, g in enumerate(grids[len(grids) // 2]) if d != dim]
    size = "native size" if input_size is None else f"input size {input_size} px"
    return (
        f"{shown[0]} x {shown[1]} tokens per slice ({size}, patch {patch_size}; median case), "
        f"{int(np.median(tokens))} median; feature cache about {total / 1e6:,.1f} MB for "
        f"{cases} cases ({feature_channels} fp16 channels per token)"
    )


def _weights_note(weights: str | None) -> str:
    """How the encoder weights would load; a missing local file is a user error."""
    if weights is None:
        return "random init (no weights file)"
    from volseg.models.onnx_weights import PACKAGED, packaged_weights_file

    if weights in PACKAGED:  # raises with the install command when the package is absent
        return f"{PACKAGED[weights].description}, from {packaged_weights_file(weights)}"
    path = Path(weights).expanduser()
    if path.exists():
        return f"{weights} (found)"
    if weights.startswith(("timm/", "hf-hub:")) or ("/" not in weights and "." not in weights):
        return f"{weights} (hub name: downloaded on first use, needs the network once)"
    raise VolsegError(
        f"config key 'model.encoder.weights' names {weights}, which does not exist; fix the "
        "path or use a hub name such as timm/vit_small_patch14_dinov2.lvd142m"
    )


def describe_plan(
    plan: Plan,
    *,
    run_dir: Path,
    counts: dict[str, int],
    cached: bool,
    precision: str,
    device: str,
    feature_channels: int,
    patch_size: int,
) -> str:
    """The dry-run text: data, model, parameters, steps, where the run would go."""
    cfg = plan.config
    data, enc, train = cfg.data, cfg.model.encoder, cfg.train
    if data.spacing is None:
        sample = plan.train_cases[:20]
        x, y, z = median_spacing(sample)
        spacing = f"native (median of {len(sample)} training cases: {x:.2f} x {y:.2f} x {z:.2f} mm)"
    else:
        x, y, z = data.spacing
        spacing = f"resampled to {x:.2f} x {y:.2f} x {z:.2f} mm"
    targets = (
        ", ".join(f"{v}={plan.labels[v]}" for v in sorted(plan.labels))
        if plan.task == "segmentation"
        else ", ".join(plan.classes)
    )
    weights = _weights_note(enc.weights)
    vals = math.ceil(train.epochs / train.val_every)
    lines = [
        f"plan for run '{cfg.name}' ({plan.task}), fold {data.fold} of {len(plan.splits)}",
        f"  manifest:   {data.manifest} ({plan.manifest.format}, {len(plan.manifest.cases)} "
        f"labelled cases, modalities {', '.join(plan.modalities)})",
        f"  {'labels' if plan.task == 'segmentation' else 'classes'}:     {targets}",
        f"  cases:      {len(plan.train_cases)} train, {len(plan.val_cases)} val",
        f"  spacing:    {spacing}; intensity {data.intensity}",
        f"  samples:    slabs of {data.slab} {enc.slice_axis} slices, whole slices in-plane; "
        f"augmentation {'on' if data.augment else 'off'}"
        f"{'' if data.mirror or not data.augment else ' (no mirroring)'}",
        f"  encoder:    {enc.name}, {enc.mode}, weights {weights}",
        f"  head:       {cfg.model.head.name}, {cfg.model.head.channels} channels",
        f"  tokens:     {token_note(plan, feature_channels, patch_size)}",
        f"  parameters: {counts['model_trainable']:,} trainable of {counts['model_total']:,} "
        f"(encoder {counts['encoder_trainable']:,} / {counts['encoder_total']:,}, "
        f"head {counts['head_trainable']:,})",
        f"  features:   {'cached once per volume (fp16)' if cached else 'recomputed every step'}",
        f"  steps:      {plan.batches_per_epoch} batches of {train.batch_size} x "
        f"{plan.world_size} process(es), {plan.steps_per_epoch} optimiser steps per epoch "
        f"(grad_accum {train.grad_accum}) x {train.epochs} epochs = {plan.total_steps} steps; "
        f"validation every {train.val_every} epochs ({vals} times)",
        f"  device:     {device}, precision {precision}",
        f"  run folder: {run_dir} (not created: dry run)",
    ]
    return "\n".join(lines)
