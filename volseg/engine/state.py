"""The live state of a run (model, optimiser, schedule, scaler, RNG) and its checkpoints.

Checkpoints (:mod:`volseg.engine.checkpoint`) are written by rank 0 at the end of every epoch
(``last.pt``), after every validation that improves the score (``best.pt``), every
``train.save_every`` optimiser steps and when a run is asked to stop (SIGINT/SIGTERM) at an
optimiser-step boundary. Besides the model, optimiser, scheduler, scaler and RNG states they
hold the :class:`~volseg.engine.session.Position` (epoch, batches done, step, running loss), the
best score so far, the measured cache timings, the preprocessing parameters and every rank's
RNG state, so ``--resume`` continues bit-for-bit on the same hardware.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from volseg.config import Config
from volseg.engine.checkpoint import make_checkpoint, rng_state, save_checkpoint, set_rng_state
from volseg.engine.distributed import gather_objects
from volseg.engine.loop import LossModule
from volseg.engine.losses import class_weights, classification_loss, segmentation_loss
from volseg.engine.optim import make_optimizer, make_scheduler
from volseg.engine.plan import Plan
from volseg.engine.session import Position, Session
from volseg.errors import VolsegError
from volseg.models import build_model
from volseg.models.checkpoint import config_of, load_checkpoint
from volseg.runtime import DistContext, resolve_precision

CACHE_DTYPE = torch.float16


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_session(
    plan: Plan,
    ctx: DistContext,
    *,
    init_from: str | Path | None = None,
    load_weights: bool = True,
) -> Session:
    """Model (seeded init, optional ``init_from`` weights), loss, optimiser, schedule, AMP.

    ``load_weights=False`` (dry runs) builds the encoder without reading or downloading its
    weights: same architecture and parameter counts.
    """
    cfg = plan.config
    seed_everything(cfg.seed)
    torch.backends.cudnn.benchmark = False
    model_cfg = cfg.model
    if not load_weights:
        model_cfg = replace(model_cfg, encoder=replace(model_cfg.encoder, weights=None))
    model = build_model(model_cfg, num_classes=len(plan.class_names), modalities=plan.modalities)
    if init_from is not None:
        _init_weights(model, init_from)
    model.to(ctx.device)
    seed_everything(cfg.seed + ctx.rank)  # each rank its own dropout and modality-drop draws
    if plan.task == "segmentation":
        loss_fn: nn.Module = segmentation_loss()
    else:
        targets = [plan.classes.index(c.target) for c in plan.train_cases]
        weights = class_weights(cfg.train.class_weights, targets, len(plan.classes))
        loss_fn = classification_loss(None if weights is None else weights.to(ctx.device))
    # A head that reads no features (the `size` baseline over the identity encoder) trains from
    # the cache too: nothing it reads changes between epochs, and loading and resampling every
    # volume every epoch is the whole cost of such a run.
    reads_features = getattr(model.head, "reads_features", True)
    cached = cfg.data.cache_features and (bool(model.encoder.cacheable) or not reads_features)
    loss_module: nn.Module = LossModule(
        model, plan.task, loss_fn, plan.modalities, CACHE_DTYPE if cached else None
    )
    if ctx.enabled:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module,
            device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
            broadcast_buffers=False,
        )
    optimizer = make_optimizer(model, cfg.train)
    scheduler = make_scheduler(
        optimizer,
        total_steps=plan.total_steps,
        warmup_steps=cfg.train.warmup_epochs * plan.steps_per_epoch,
    )
    precision = resolve_precision(cfg.train.amp, ctx.device)
    return Session(
        model, loss_module, loss_fn, optimizer, scheduler, precision.scaler(), precision,
        cached, ctx, cfg.train.grad_accum, cfg.train.grad_clip,
    )  # fmt: skip


def _init_weights(model: nn.Module, path: str | Path) -> None:
    """Copy every tensor of a checkpoint whose name and shape fit ``model`` (``--init-from``)."""
    checkpoint = load_checkpoint(path)
    own = model.state_dict()
    fitting = {k: v for k, v in checkpoint["model"].items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise VolsegError(f"{path}: no tensor of the checkpoint fits this model; check the config")
    model.load_state_dict(fitting, strict=False)
    skipped = sorted(set(checkpoint["model"]) - set(fitting))
    note = f", skipped {len(skipped)} that do not fit ({', '.join(skipped[:3])})" if skipped else ""
    print(f"init-from {path}: loaded {len(fitting)} tensors{note}")


def resume_config(run_dir: str | Path) -> tuple[Config, Path]:
    """The config a run was started with, from its ``checkpoints/last.pt``.

    Raises:
        VolsegError: not a run folder, or no ``last.pt`` in it.
    """
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise VolsegError(
            f"{run_dir}: no checkpoints/last.pt to resume from; pass the run folder of a "
            "run that has finished at least one epoch or step"
        )
    return config_of(load_checkpoint(last)), run_dir


def remove_partial_checkpoints(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a kill cut short; returns them.

    Checkpoints are written to ``checkpoints/.tmp-<hex>-<name>`` and renamed when complete
    (:func:`volseg.io.atomic.atomic_write`); a SIGKILL or power loss mid-write leaves the
    temporary behind, as large as a checkpoint. Only the run's rank 0 writes there, so at
    ``--resume`` none can be in progress.
    """
    partial = sorted(p for p in (Path(run_dir) / "checkpoints").glob(".tmp-*") if p.is_file())
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def restore_session(session: Session, run_dir: Path) -> Position:
    """Load ``run_dir/checkpoints/last.pt`` into ``session``; returns where to continue.

    Every rank gets its own RNG state back when the run had as many ranks; otherwise (another
    world size) rank 0's, and the continuation is no longer bit-identical.
    """
    checkpoint = load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")
    external = set(checkpoint["encoder_source"]["external_keys"])
    result = session.model.load_state_dict(checkpoint["model"], strict=False)
    if set(result.missing_keys) - external or result.unexpected_keys:
        raise VolsegError(f"{run_dir}: last.pt does not fit the model of its own config")
    session.optimizer.load_state_dict(checkpoint["optimizer"])
    session.scheduler.load_state_dict(checkpoint["scheduler"])
    if checkpoint["scaler"]:
        session.scaler.load_state_dict(checkpoint["scaler"])
    extra = checkpoint["training"]
    session.best_score, session.best_epoch = extra["best_score"], extra["best_epoch"]
    session.timings = dict(extra["timings"])
    states = extra.get("rng_ranks") or [checkpoint["rng"]]
    ctx = session.ctx
    set_rng_state(states[ctx.rank] if len(states) == ctx.world_size else states[0])
    return Position(**extra["position"])


def save_state(
    session: Session,
    plan: Plan,
    run_dir: Path,
    position: Position,
    *,
    name: str,
    metrics: dict | None = None,
) -> None:
    """Write ``run_dir/checkpoints/<name>`` (rank 0; every rank joins the RNG gather)."""
    ctx = session.ctx
    states = gather_objects(rng_state(), ctx) if ctx.enabled else None
    if not ctx.is_main:
        return
    cfg = plan.config
    checkpoint = make_checkpoint(
        session.model,
        cfg,
        modalities=plan.modalities,
        labels=plan.labels,
        classes=plan.classes,
        epoch=position.epoch,
        step=position.step,
        optimizer=session.optimizer,
        scheduler=session.scheduler,
        scaler=session.scaler if session.scaler.is_enabled() else None,
        metrics=metrics,
    )
    checkpoint["preprocessing"] = {
        "spacing": None if cfg.data.spacing is None else list(cfg.data.spacing),
        "intensity": cfg.data.intensity,
        "ct_window": list(cfg.data.ct_window),
        "slice_axis": cfg.model.encoder.slice_axis,
        "slab": cfg.data.slab,
        "modalities": plan.modalities,
    }
    checkpoint["training"] = {
        "position": position.state_dict(),
        "best_score": session.best_score,
        "best_epoch": session.best_epoch,
        "timings": dict(session.timings),
        "rng_ranks": states,
    }
    save_checkpoint(Path(run_dir) / "checkpoints" / name, checkpoint)
