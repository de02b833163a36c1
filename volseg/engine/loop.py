"""One training epoch: forward, loss, backward with accumulation, clipping, AMP, DDP.

The forward pass and loss live in :class:`LossModule`, the module DDP wraps, so gradients are
synchronised across ranks by DDP itself. A batch is a list of samples (volumes differ in
size); samples of equal shape are stacked and run together, each group's loss weighted by its
share of the batch, so the gradient is that of the batch's mean loss whatever the grouping.
Only the last backward of an optimiser step synchronises (``no_sync`` for the others).

Position bookkeeping (:class:`~volseg.engine.session.Position`) makes a stop at any
optimiser-step boundary resumable: the epoch, how many batches of it are done, the global step
and the running loss. The model, optimiser and step settings come as one
:class:`~volseg.engine.session.Session`.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from volseg.engine.datasets import stack_groups, to_device
from volseg.engine.distributed import any_rank, reduce_sums
from volseg.engine.session import Position, Session
from volseg.inference.grading import split_features
from volseg.runtime import DistContext


class LossModule(nn.Module):
    """The training forward pass: batch -> scalar loss (the module DDP wraps).

    Args:
        model: a ``SegmentationModel`` or ``GradingModel``.
        task: ``segmentation`` or ``classification``.
        loss_fn: the loss on ``(logits, label or target)``, computed in fp32.
        modalities: modality names (grading: splits stacked cached features).
        feature_dtype: round encoder features through this dtype (the cache's), so a step
            that recomputes features sees exactly what a cached one would.
    """

    def __init__(
        self,
        model: nn.Module,
        task: str,
        loss_fn: nn.Module,
        modalities: Sequence[str],
        feature_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.model, self.task, self.loss_fn = model, task, loss_fn
        self.modalities, self.feature_dtype = list(modalities), feature_dtype

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        features = batch.get("features")
        if self.task == "segmentation":
            image = batch["image"]
            if features is None:
                features = self._round(self.model.encode(image))
            logits = self.model.decode(features.to(image.dtype), image)
            target = batch["label"]
        else:  # cached grading entries hold no image: the MIL head reads features and mask
            if features is None:
                encoded = self.model.encode(batch["image"])
                features = {m: self._round(encoded[m]) for m in self.modalities}
            else:
                features = split_features(features.float(), self.modalities)
            present = batch["presence"] > 0.5
            logits = self.model.decode(features, mask=batch.get("mask"), present=present).logits
            target = batch["target"]
        with torch.autocast(target.device.type, enabled=False):
            return self.loss_fn(logits.float(), target)

    def _round(self, features: Tensor) -> Tensor:
        if self.feature_dtype is None:
            return features
        return features.to(self.feature_dtype).to(features.dtype)


class StopRequest:
    """Turns SIGINT/SIGTERM into a request to stop at the next optimiser step (a second
    SIGINT interrupts at once). Only installs handlers in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True


def train_epoch(
    batches: Iterable[list[dict[str, Any]]],
    num_batches: int,
    session: Session,
    position: Position,
    *,
    stop: StopRequest | None = None,
    on_step: Callable[[Position], None] | None = None,
    on_batch: Callable[[Position, float], None] | None = None,
) -> bool:
    """Train on the remaining batches of ``position.epoch``.

    Args:
        batches: this rank's batches from ``position.batch`` on (lists of samples).
        num_batches: batches in the whole epoch on each rank.
        session: model, optimiser, precision, step settings and distributed context.
        position: updated in place after every batch and optimiser step.
        stop: checked (across ranks) after each optimiser step.
        on_step: called after each optimiser step (periodic checkpoints).
        on_batch: called after each batch with the batch loss (progress display).

    Returns:
        True if the epoch ran to the end, False if it stopped on request at a step boundary.
    """
    module = session.loss_module
    module.train()
    for samples in batches:
        index = position.batch
        group_end = min(num_batches, (index // session.grad_accum + 1) * session.grad_accum)
        last_of_step = index + 1 == group_end
        groups = stack_groups(samples)
        batch_loss = 0.0
        for g, group in enumerate(groups):
            sync = last_of_step and g == len(groups) - 1
            step_batches = group_end - _step_start(index, session.grad_accum)
            weight = len(group["ids"]) / len(samples) / step_batches
            with _maybe_no_sync(module, sync), session.precision.autocast():
                loss = module(to_device(group, session.ctx.device))
            session.scaler.scale(loss * weight).backward()
            batch_loss += float(loss.detach()) * len(group["ids"])
        position.batch += 1
        position.loss_sum += batch_loss
        position.samples += len(samples)
        if on_batch is not None:
            on_batch(position, batch_loss / len(samples))
        if last_of_step:
            _optimizer_step(session)
            position.step += 1
            if on_step is not None:
                on_step(position)
            if stop is not None and any_rank(stop.requested, session.ctx):
                return position.batch >= num_batches
    return True


def time_steps(batches: Iterable[list[dict[str, Any]]], count: int, session: Session) -> float:
    """Seconds for ``count`` batches of forward + backward, updating nothing.

    Used to time the uncached path (case files, pipeline, encoder, head) in a cached run:
    the RNG is forked so dropout draws are not consumed, buffers (BatchNorm running
    statistics) are restored, gradients are not synchronised across ranks and are dropped
    afterwards, and no optimiser step is taken, so the run continues exactly as if this had
    not happened.
    """
    module, device = session.loss_module, session.device
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    module.train()
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for samples in itertools.islice(batches, count):
            for group in stack_groups(samples):
                with _maybe_no_sync(module, False), session.precision.autocast():
                    loss = module(to_device(group, session.ctx.device))
                session.scaler.scale(loss).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    session.optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, b in module.named_buffers():
            b.copy_(buffers[name])
    return seconds


def epoch_loss(position: Position, ctx: DistContext) -> float:
    """The epoch's mean training loss per sample over all ranks."""
    total, count = reduce_sums([position.loss_sum, float(position.samples)], ctx)
    return total / max(count, 1.0)


def _step_start(index: int, grad_accum: int) -> int:
    return (index // grad_accum) * grad_accum


def _optimizer_step(session: Session) -> None:
    scaler, optimizer = session.scaler, session.optimizer
    if session.grad_clip is not None:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, session.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    session.last_lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    session.scheduler.step()


def _maybe_no_sync(module: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    if sync or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return module.no_sync()
