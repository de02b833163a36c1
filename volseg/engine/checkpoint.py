"""Making and writing checkpoints: everything needed to resume a run exactly, or to predict.

The format (every key, and which are written by ``volseg train`` only) is described once, in
:mod:`volseg.models.checkpoint`, which also reads checkpoints back (:func:`load_checkpoint`,
:func:`model_from_checkpoint`); this module assembles them from a live run
(:func:`make_checkpoint`) and writes them atomically (:func:`save_checkpoint`).
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

from volseg.config import Config, to_dict
from volseg.io.atomic import atomic_write
from volseg.models.checkpoint import CHECKPOINT_FORMAT

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
    """Assemble a checkpoint dict (format: :mod:`volseg.models.checkpoint`) from a live run."""
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
