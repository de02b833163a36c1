"""Checkpoints: everything needed to resume a run exactly, or to predict with its model.

A checkpoint is a plain dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only):

- ``format``: ``"volseg-checkpoint/1"``; ``config``: the resolved config as a dict;
- ``task``, ``modalities``, ``labels`` (segmentation label map, value -> name, as in the
  manifest; model class ``i`` is the ``i``-th smallest label value, so a map without value 3,
  like BraTS's 0/1/2/4, still gives 4 contiguous classes) or ``classes`` (grading);
- ``model``: the model's state dict, *without* the frozen encoder tensors when those come from
  a weights file or hub name (``encoder_source`` names it), so checkpoints of frozen runs stay
  a few MB; a randomly initialised frozen encoder has no other copy and is stored in full;
- ``epoch``, ``step``, ``optimizer``, ``scheduler``, ``scaler``, ``rng`` (torch, numpy, python
  RNG states), ``metrics``, ``versions`` (package versions).

Files are written atomically (temporary file + rename).
"""

from __future__ import annotations

import platform
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from volseg.config import Config, from_dict, to_dict
from volseg.engine.runs import resolve_checkpoint
from volseg.errors import VolsegError
from volseg.io.atomic import atomic_write

CHECKPOINT_FORMAT = "volseg-checkpoint/1"
ENCODER_PREFIX = "encoder.vit."


def model_state(model: nn.Module, config: Config) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors a checkpoint must hold, and the encoder keys it leaves to the weights file.

    Frozen ViT tensors are left out when ``config.model.encoder.weights`` names where they come
    from; every trainable tensor (LoRA adapters, last blocks, head) and buffer is kept.
    """
    state = model.state_dict()
    enc = config.model.encoder
    if enc.weights is None or enc.mode not in ("frozen", "lora"):
        return state, []
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    external = [k for k in state if k.startswith(ENCODER_PREFIX) and k not in trainable]
    return {k: v for k, v in state.items() if k not in external}, external


def save_checkpoint(path: str | Path, checkpoint: Mapping[str, Any]) -> Path:
    """Write ``checkpoint`` atomically to ``path``; returns the path.

    Raises:
        OSError: disk full or folder not writable, naming ``path``; the previous file at
            ``path`` (the last good checkpoint) is kept whole.
    """
    return atomic_write(path, lambda f: torch.save(dict(checkpoint), f))


def make_checkpoint(
    model: nn.Module,
    config: Config,
    *,
    modalities: list[str],
    labels: Mapping[int, str] | None = None,
    classes: list[str] | None = None,
    epoch: int = 0,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a checkpoint dict (see the module docstring) from a live run."""
    state, external = model_state(model, config)
    return {
        "format": CHECKPOINT_FORMAT,
        "config": to_dict(config),
        "task": config.model.task,
        "modalities": list(modalities),
        "labels": {int(k): v for k, v in (labels or {}).items()},
        "classes": list(classes or []),
        "model": state,
        "encoder_source": {
            "name": config.model.encoder.name,
            "weights": config.model.encoder.weights,
            "external_keys": external,
        },
        "epoch": epoch,
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "metrics": dict(metrics or {}),
        "versions": package_versions(),
    }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file (or ``RUN_DIR/checkpoints/best.pt`` for a run folder).

    Raises:
        VolsegError: missing, unreadable or non-volseg file.
    """
    path = resolve_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for broken or unsafe pickles
        raise VolsegError(
            f"{path}: not a readable volseg checkpoint ({str(e).splitlines()[0][:160]})"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise VolsegError(f"{path}: not a volseg checkpoint (no '{CHECKPOINT_FORMAT}' format key)")
    return checkpoint


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
    from volseg.models import build_model

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


def rng_state() -> dict[str, Any]:
    """Torch, CUDA, numpy and Python RNG states in weights_only-loadable types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("volseg", "torch", "timm", "monai", "numpy", "SimpleITK", "nibabel"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value
