"""Checks of a run configuration's values that its types cannot express (ranges, orderings,
keys that need each other), run whenever a :class:`~volseg.config.schema.Config` is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

from volseg.errors import VolsegError

if TYPE_CHECKING:
    from volseg.config.schema import Config


def validate_config(cfg: Config) -> None:
    """Check the values of ``cfg`` that its types cannot express.

    Raises:
        VolsegError: naming the first offending key, its value and the allowed range.
    """
    data, enc, head, train = cfg.data, cfg.model.encoder, cfg.model.head, cfg.train
    counts_volume = ""  # the key that makes the tumour's voxel count a model input, if any
    if head.name == "size":
        counts_volume = "model.head.name=size"
    elif head.lesion_volume:
        counts_volume = "model.head.lesion_volume=true"
    # Each condition holds for good values; NaN fails all of them.
    checks: list[tuple[bool, str, object, str]] = [
        (bool(cfg.name) and "/" not in cfg.name, "name", cfg.name, "a non-empty name without '/'"),
        (bool(cfg.output_dir), "output_dir", cfg.output_dir, "a non-empty folder"),
        (cfg.seed >= 0, "seed", cfg.seed, ">= 0"),
        (data.folds >= 2, "data.folds", data.folds, ">= 2"),
        (
            0 <= data.fold < data.folds,
            "data.fold",
            data.fold,
            f"in 0..{data.folds - 1} (below data.folds={data.folds})",
        ),
        (
            data.classes is None or (len(set(data.classes)) == len(data.classes) > 0),
            "data.classes",
            data.classes,
            "null or a non-empty list of distinct names",
        ),
        (
            data.spacing is None or all(s > 0 for s in data.spacing),
            "data.spacing",
            data.spacing,
            "null or three spacings > 0 mm",
        ),
        (
            not counts_volume or data.spacing is not None,
            "data.spacing",
            data.spacing,
            f"three spacings in mm with {counts_volume} (it counts the tumour's voxels on that "
            "common grid), e.g. [1.0, 1.0, 2.0]",
        ),
        (data.ct_window[0] < data.ct_window[1], "data.ct_window", data.ct_window, "[low, high]"),
        (data.slab >= 1, "data.slab", data.slab, ">= 1"),
        (enc.last_n >= 1, "model.encoder.last_n", enc.last_n, ">= 1"),
        (enc.lora.rank >= 1, "model.encoder.lora.rank", enc.lora.rank, ">= 1"),
        (enc.lora.alpha > 0, "model.encoder.lora.alpha", enc.lora.alpha, "> 0"),
        (0 <= enc.lora.dropout < 1, "model.encoder.lora.dropout", enc.lora.dropout, "in [0, 1)"),
        (
            enc.chunk == "auto"
            or (isinstance(enc.chunk, int) and not isinstance(enc.chunk, bool) and enc.chunk >= 1),
            "model.encoder.chunk",
            enc.chunk,
            "auto or an int >= 1",
        ),
        (
            enc.input_size == "native" or enc.input_size >= 14,
            "model.encoder.input_size",
            enc.input_size,
            "native or a size >= 14 px (e.g. 224)",
        ),
        (head.depth >= 0, "model.head.depth", head.depth, ">= 0"),
        (
            0 <= head.modality_dropout < 1,
            "model.head.modality_dropout",
            head.modality_dropout,
            "in [0, 1)",
        ),
        (
            enc.layers is None or len(enc.layers) > 0,
            "model.encoder.layers",
            enc.layers,
            "null or a non-empty list of block indices",
        ),
        (bool(head.name), "model.head.name", head.name, "a registered head name"),
        (head.channels >= 1, "model.head.channels", head.channels, ">= 1"),
        (0 <= head.dropout < 1, "model.head.dropout", head.dropout, "in [0, 1)"),
        (
            0 <= head.image_dropout < 1,
            "model.head.image_dropout",
            head.image_dropout,
            "in [0, 1)",
        ),  # fmt: skip
        (
            0 <= head.feature_dropout < 1,
            "model.head.feature_dropout",
            head.feature_dropout,
            "in [0, 1)",
        ),  # fmt: skip
        (train.epochs >= 1, "train.epochs", train.epochs, ">= 1"),
        (train.batch_size >= 1, "train.batch_size", train.batch_size, ">= 1"),
        (train.lr > 0, "train.lr", train.lr, "> 0"),
        (train.encoder_lr >= 0, "train.encoder_lr", train.encoder_lr, ">= 0"),
        (train.weight_decay >= 0, "train.weight_decay", train.weight_decay, ">= 0"),
        (train.warmup_epochs >= 0, "train.warmup_epochs", train.warmup_epochs, ">= 0"),
        (train.val_every >= 1, "train.val_every", train.val_every, ">= 1"),
        (train.grad_accum >= 1, "train.grad_accum", train.grad_accum, ">= 1"),
        (
            train.grad_clip is None or train.grad_clip > 0,
            "train.grad_clip",
            train.grad_clip,
            "null (no clipping) or > 0",
        ),
        (train.num_workers >= 0, "train.num_workers", train.num_workers, ">= 0"),
        (
            not isinstance(train.class_weights, list)
            or (len(train.class_weights) > 0 and all(w >= 0 for w in train.class_weights)),
            "train.class_weights",
            train.class_weights,
            "null, 'balanced' or a non-empty list of weights >= 0",
        ),
        (train.save_every >= 0, "train.save_every", train.save_every, ">= 0 (0: end of epoch)"),
        (
            train.cache_timing_batches >= 0,
            "train.cache_timing_batches",
            train.cache_timing_batches,
            ">= 0 (0: no timing)",
        ),
        (
            train.cache_dir is None or bool(train.cache_dir),
            "train.cache_dir",
            train.cache_dir,
            "null (run folder's cache/) or a folder",
        ),
        (0 <= cfg.inference.overlap < 1, "inference.overlap", cfg.inference.overlap, "in [0, 1)"),
        (
            cfg.inference.sw_batch_size >= 1,
            "inference.sw_batch_size",
            cfg.inference.sw_batch_size,
            ">= 1",
        ),
    ]
    for ok, key, value, allowed in checks:
        if not ok:
            shown = "null" if value is None else repr(value)
            raise VolsegError(
                f"config key '{key}' is {shown} but must be {allowed}; "
                f"fix it in the YAML or with {key}=..."
            )
