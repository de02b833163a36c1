"""Reading a volseg checkpoint: the file format, and the model, config and labels it holds.

Both stages read checkpoints (``volseg train --resume`` and ``--init-from``, ``volseg predict``),
so reading lives here, below both; :mod:`volseg.engine.checkpoint` makes and writes them.

A checkpoint is a plain dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only):

- ``format``: ``"volseg-checkpoint/1"``; ``config``: the resolved config as a dict;
- ``task``, ``modalities``, ``labels`` (segmentation label map, value -> name, as in the
  manifest; model class ``i`` is the ``i``-th smallest label value, so a map without value 3,
  like BraTS's 0/1/2/4, still gives 4 contiguous classes) or ``classes`` (grading);
- ``model``: the model's state dict, *without* the frozen encoder tensors when those come from
  a weights file or hub name, so checkpoints of frozen runs stay a few MB; a randomly
  initialised frozen encoder has no other copy and is stored in full;
- ``encoder_source``: ``name`` and ``weights`` of the encoder, and ``external_keys``, the
  state-dict keys left to that weights file;
- ``epoch``, ``step``, ``optimizer``, ``scheduler``, ``scaler`` (None without fp16), ``rng``
  (torch, CUDA, numpy and Python RNG states), ``metrics``, ``versions`` (package versions);
- ``preprocessing`` (written by ``volseg train``): ``spacing`` (mm, None: kept), ``intensity``,
  ``ct_window`` (HU), ``slice_axis``, ``slab`` and ``modalities``, for readers that do not
  parse ``config``;
- ``training`` (written by ``volseg train``, read by ``--resume``): ``position`` (epoch,
  batches done, step, running loss), ``best_score``, ``best_epoch``, ``timings`` (measured
  epoch seconds with and without the feature cache) and ``rng_ranks`` (every rank's RNG
  state, None for one process).

The engine writes them atomically (temporary file + rename), so a file is whole or absent.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volseg.config import Config, from_dict
from volseg.errors import VolsegError
from volseg.io.paths import resolve_checkpoint
from volseg.models.build import build_model

CHECKPOINT_FORMAT = "volseg-checkpoint/1"
# What every reader uses; the rest (optimizer, training, ...) only --resume, which checks it.
REQUIRED_KEYS = ("config", "task", "modalities", "model", "encoder_source")


def load_checkpoint(
    path: str | Path, *, required: tuple[str, ...] = REQUIRED_KEYS
) -> dict[str, Any]:
    """Read a checkpoint file (or ``RUN_DIR/checkpoints/best.pt`` for a run folder).

    Args:
        path: the file or run folder.
        required: keys the caller reads; a checkpoint without one is refused by name.

    Raises:
        VolsegError: missing, unreadable or non-volseg file, one holding Python objects
            besides tensors and containers (an unsafe pickle), or one lacking a required key.
    """
    path = resolve_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise _unreadable(path, e) from None
        # torch's own message runs on for lines, with advice to unpickle it anyway
        raise VolsegError(
            f"{path}: holds Python objects volseg does not load (unsafe pickle); load it only "
            "if you trust its source, and re-save the checkpoint as tensors, numbers, "
            "strings, lists and dicts (as volseg train writes it)"
        ) from None
    except Exception as e:  # torch raises several types for a damaged zip or pickle
        raise _unreadable(path, e) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise VolsegError(f"{path}: not a volseg checkpoint (no '{CHECKPOINT_FORMAT}' format key)")
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise VolsegError(
            f"{path}: volseg checkpoint without the key{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(k) for k in missing)}; it was cut down or edited, use a "
            "checkpoint as volseg train wrote it"
        )
    return checkpoint


def _unreadable(path: Path, error: Exception) -> VolsegError:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[0].split(". ")[0][:160] if lines else type(error).__name__
    return VolsegError(
        f"{path}: not a readable volseg checkpoint ({reason}); the file is truncated or not a "
        "checkpoint"
    )


def config_of(checkpoint: Mapping[str, Any]) -> Config:
    """The resolved config stored in a checkpoint."""
    return from_dict(Config, checkpoint["config"], source="checkpoint")


def model_from_checkpoint(checkpoint: Mapping[str, Any]) -> nn.Module:
    """Rebuild the model of a checkpoint and load its weights.

    The encoder's frozen tensors come from the weights file or hub name the run was trained
    with (``encoder_source``); everything else from the checkpoint.

    Raises:
        VolsegError: the encoder weights file is gone, or the checkpoint does not fit the model.
    """
    config = config_of(checkpoint)
    segmentation = config.model.task == "segmentation"
    num_classes = len(checkpoint["labels"]) if segmentation else len(checkpoint["classes"])
    model = build_model(config.model, num_classes=num_classes, modalities=checkpoint["modalities"])
    expected_missing = set(checkpoint["encoder_source"]["external_keys"])
    advice = "it was written by another volseg version; retrain, or predict with that version"
    state = checkpoint["model"]
    shapes = model.state_dict()
    wrong = [k for k, v in state.items() if k in shapes and shapes[k].shape != v.shape]
    if wrong:  # load_state_dict would raise a RuntimeError listing every tensor
        raise VolsegError(
            f"checkpoint does not fit its model: {wrong[0]} is {tuple(state[wrong[0]].shape)}, "
            f"the model wants {tuple(shapes[wrong[0]].shape)} ({len(wrong)} tensors differ); "
            + advice
        )
    result = model.load_state_dict(state, strict=False)
    missing = sorted(set(result.missing_keys) - expected_missing)
    if missing or result.unexpected_keys:
        raise VolsegError(
            f"checkpoint does not fit its model: missing {missing[:5]}, unexpected "
            f"{list(result.unexpected_keys)[:5]}; " + advice
        )
    return model


def label_values(checkpoint: Mapping[str, Any]) -> list[int]:
    """Label value written for each model class (class ``i`` -> ``label_values[i]``)."""
    return sorted(int(v) for v in checkpoint["labels"])
