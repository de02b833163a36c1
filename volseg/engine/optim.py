"""Optimiser and learning-rate schedule for a training run.

- AdamW with two learning rates: ``train.lr`` for the head, ``train.encoder_lr`` for whatever
  trains in the encoder (LoRA adapters, last blocks, a learned channel adapter or layer
  fusion). Weight decay applies to weight matrices and kernels only, never to biases, norms
  or the learned scalars (1-D or 0-D tensors), as usual for transformers.
- Schedule per optimiser step: linear warm-up over ``train.warmup_epochs`` from ``1/W`` of the
  peak to the peak, then a half cosine down to 0 at the last step.
- Mixed precision (``train.amp``) is set up by :func:`volseg.runtime.resolve_precision`, the
  same function prediction uses.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from volseg.config.schema import TrainConfig
from volseg.errors import VolsegError


def make_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, in up to four groups (head/encoder x decay/no decay).

    Each group carries a ``name`` (``head``, ``head_no_decay``, ``encoder``, ...) for logging.

    Raises:
        VolsegError: nothing in the model trains.
    """
    groups: dict[str, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "encoder" if name.startswith("encoder.") else "head"
        key = part if param.ndim >= 2 else f"{part}_no_decay"
        groups.setdefault(key, []).append(param)
    if not groups:
        raise VolsegError("nothing in the model trains; check model.encoder.mode and the head")
    param_groups = []
    for key in ("head", "head_no_decay", "encoder", "encoder_no_decay"):
        if key in groups:
            lr = train.encoder_lr if key.startswith("encoder") else train.lr
            decay = 0.0 if key.endswith("no_decay") else train.weight_decay
            param_groups.append(
                {"params": groups[key], "lr": lr, "weight_decay": decay, "name": key}
            )
    return torch.optim.AdamW(param_groups, betas=(0.9, 0.999))


def warmup_cosine(total_steps: int, warmup_steps: int):
    """The schedule factor of optimiser step ``s`` (0-based): warm-up, then half cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine schedule scaling every group's peak learning rate."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, min(warmup_steps, total_steps))
    )
