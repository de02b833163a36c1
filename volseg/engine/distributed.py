"""One process or many: torchrun's environment, the process group, and reductions across ranks.

``torchrun --nproc_per_node=N -m volseg train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` then joins the process group (NCCL on GPUs, Gloo on
CPUs) and every rank trains on its shard of each epoch. Without those variables the same
command runs as a single process and every helper here is a cheap no-op.

Only rank 0 writes files (run folder, checkpoints, logs); metrics are averaged or gathered
across ranks so rank 0 writes the numbers of the whole run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run.

    Attributes:
        rank: global rank, 0 for a single process.
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: the device this rank computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True when a process group with more than one process is running."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files (rank 0)."""
        return self.rank == 0


def init_distributed() -> DistContext:
    """Join torchrun's process group if its environment says so, and pick the device.

    Returns:
        The context; a single-process one (rank 0 of 1) without ``WORLD_SIZE`` > 1.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistContext(rank, world_size, local_rank, device)


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
