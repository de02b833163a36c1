"""Where and how a model computes: torchrun's process group, the device, mixed precision.

Training and prediction both run here, once, below :mod:`volseg.engine` and
:mod:`volseg.inference`, so ``volseg train`` and ``volseg predict`` (and validation inside
training) set up devices and autocast the same way.

Mixed precision (``train.amp`` for training, ``--amp`` for prediction), as PyTorch supports it:

- ``auto``: bf16 autocast on GPUs that support it, else fp16 (training adds a gradient
  scaler); full fp32 on CPU, where autocast is slower than fp32 on most machines, except that
  *prediction* (``cpu_auto_bf16=True``) runs bf16 on CPUs with bf16 dot-product instructions
  (:func:`cpu_computes_bf16`: AVX512-BF16 or AMX): on such a CPU it made prediction 1.7x
  faster with the same held-out Dice (docs/PERFORMANCE.md), as GPU prediction runs bf16 too;
- ``bf16``: bf16 autocast on GPU *and* on CPU (``torch.autocast("cpu")`` runs bf16; it helps on
  CPUs with AVX-512 BF16 or AMX, and gives the same numbers a CPU run of training validated);
- ``fp16``: GPU only. Asked for on a CPU it is a one-line :class:`~volseg.errors.VolsegError`
  in both stages, before any case or epoch runs: PyTorch's CPU autocast has only partial fp16
  support, and a silent fp32 fallback would report timings and numbers of a setting that never
  ran;
- ``off``: fp32.

``torchrun --nproc_per_node=N -m volseg train|predict ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` then joins the process group (NCCL on GPUs, Gloo on
CPUs) and puts this rank on GPU ``LOCAL_RANK``. Without those variables the same command runs
as a single process. The collectives training needs live in :mod:`volseg.engine.distributed`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from volseg.errors import VolsegError

if TYPE_CHECKING:
    import torch

# torch is imported where it is used, so that checking an --amp or train.amp value (and the
# option dataclasses that import this tuple) costs no torch import.
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs.

    Attributes:
        dtype: autocast dtype (``torch.bfloat16`` or ``torch.float16``), None for fp32.
        device_type: ``cuda`` or ``cpu``, for ``torch.autocast``.
    """

    dtype: torch.dtype | None
    device_type: str

    @property
    def name(self) -> str:
        import torch

        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")  # type: ignore[arg-type]

    def autocast(self) -> torch.autocast:
        """The autocast context of the forward pass (disabled for fp32)."""
        import torch

        return torch.autocast(
            self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        )

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for fp16 only (bf16 has fp32's range)."""
        import torch

        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (``avx512_bf16`` or ``amx_bf16`` in Linux's
    ``/proc/cpuinfo``) and torch's oneDNN kernels use it; False where that cannot be read."""
    global _CPU_BF16
    if _CPU_BF16 is None:
        import torch

        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                flags = set(next((ln for ln in f if ln.startswith("flags")), "").split())
        except OSError:
            flags = set()
        mkldnn = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        _CPU_BF16 = bool(flags & {"avx512_bf16", "amx_bf16"}) and bool(mkldnn and mkldnn())
    return _CPU_BF16


_CPU_BF16: bool | None = None


def resolve_precision(
    amp: str | Precision,
    device: torch.device | str,
    *,
    option: str = "train.amp",
    cpu_auto_bf16: bool = False,
) -> Precision:
    """Turn an ``amp`` setting into a :class:`Precision` for ``device`` (module docstring).

    Args:
        amp: ``auto``, ``bf16``, ``fp16`` or ``off``; a :class:`Precision` resolved before
            (e.g. by a predictor) is returned as it is.
        device: where the model computes.
        option: the setting's name in messages: a config key (``train.amp``), a command-line
            option (``--amp``) or an argument (``amp``).
        cpu_auto_bf16: ``auto`` on a CPU that computes bf16 natively means bf16 (prediction).

    Raises:
        VolsegError: ``amp`` is not one of :data:`AMP_MODES`, or ``fp16`` on a device without
            CUDA.
    """
    if isinstance(amp, Precision):
        return amp
    name = f"config key '{option}'" if "." in option else option
    if amp not in AMP_MODES:  # before torch is imported
        raise VolsegError(f"{name} is {amp!r}, not one of {', '.join(AMP_MODES)}")
    import torch

    device = torch.device(device)
    kind = device.type
    flag = option.startswith("-")
    if amp == "auto":
        if kind == "cpu" and cpu_auto_bf16 and cpu_computes_bf16():
            return Precision(torch.bfloat16, kind)
        if kind != "cuda":
            return Precision(None, kind)
        bf16 = torch.cuda.is_bf16_supported()
        return Precision(torch.bfloat16 if bf16 else torch.float16, kind)
    if amp == "off":
        return Precision(None, kind)
    if amp == "fp16" and kind != "cuda":
        use = f"{option} bf16 or {option} off" if flag else f"{option}=bf16 or off"
        raise VolsegError(f"{name} is 'fp16' but there is no GPU; use {use}")
    return Precision(torch.bfloat16 if amp == "bf16" else torch.float16, kind)


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
    device: torch.device = field(default_factory=lambda: _device("cpu"))

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
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        if world_size > 1:  # one process computes on cuda:0, the default device already
            torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistContext(rank, world_size, local_rank, device)


def patient_barrier(ctx: DistContext) -> Callable[[], None]:
    """A barrier for ranks that may arrive hours apart (a no-op for one process).

    It runs in its own Gloo group with a week's timeout: prediction needs no other collective,
    and an NCCL barrier would be killed by its watchdog after minutes.
    """
    if not ctx.enabled:
        return lambda: None
    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=timedelta(days=7))
    return lambda: dist.barrier(group)


def _device(name: str) -> torch.device:
    import torch

    return torch.device(name)
