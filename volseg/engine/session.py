"""What a run holds while it trains: its live state (:class:`Session`) and where it stands
(:class:`Position`).

Both travel through the training loop (:mod:`volseg.engine.loop`), validation and the
checkpoints (:mod:`volseg.engine.state`) as these two objects, not as loose arguments.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from volseg.runtime import DistContext, Precision


@dataclass
class Session:
    """Everything that changes while a run trains, and the settings of an optimiser step.

    Attributes:
        model: the bare model (validation, checkpoints).
        loss_module: :class:`~volseg.engine.loop.LossModule` around it, wrapped in DDP with
            several ranks.
        loss_fn: the loss (grading validation reuses it).
        optimizer, scheduler, scaler: optimisation state.
        precision: autocast settings.
        cached: features come from the frozen-feature cache.
        ctx: the distributed context (rank, world size, device).
        grad_accum: batches per optimiser step.
        grad_clip: max gradient norm, or None.
        best_score, best_epoch: best validation score so far and its epoch (0: none yet).
        timings: measured epoch times (``recomputed_epoch_s``, ``cached_epoch_s``).
        last_lrs: learning rate of each parameter group in the last optimiser step.
    """

    model: nn.Module
    loss_module: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    precision: Precision
    cached: bool
    ctx: DistContext
    grad_accum: int = 1
    grad_clip: float | None = None
    best_score: float = float("-inf")
    best_epoch: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    last_lrs: dict[str, float] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where the model lives."""
        return self.ctx.device


@dataclass
class Position:
    """Where a run stands: ``epoch`` (0-based, in progress), ``batch`` (batches of it done),
    ``step`` (optimiser steps done), and the epoch's running loss sum and sample count."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    samples: int = 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)
