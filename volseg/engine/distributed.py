"""Reductions across the ranks of a training run, and leaving its process group.

:func:`volseg.runtime.init_distributed` joins torchrun's process group (prediction uses it
too); every helper here is a cheap no-op for a single process.

Only rank 0 writes files (run folder, checkpoints, logs); metrics are averaged or gathered
across ranks so rank 0 writes the numbers of the whole run.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from volseg.runtime import DistContext


def cleanup_distributed(ctx: DistContext) -> None:
    """Leave the process group (after a last barrier) if this run joined one."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank."""
    if ctx.enabled:
        dist.barrier()


def reduce_sums(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (identity for one process)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True if ``flag`` is True on any rank (e.g. a stop request seen by one of them)."""
    return reduce_sums([float(flag)], ctx)[0] > 0


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _comm_device(ctx: DistContext) -> torch.device:
    # NCCL reduces CUDA tensors only; Gloo takes CPU tensors.
    return ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
