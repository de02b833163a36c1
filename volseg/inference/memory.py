"""Peak memory of a block of work: CUDA allocations on a GPU, resident memory on the CPU."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def peak_memory(device: torch.device | str | None = None) -> Iterator[dict[str, Any]]:
    """Yield a dict whose ``"mb"`` holds the block's peak memory (MiB) once it ends.

    On CUDA it is the peak of allocated tensor memory; elsewhere the process's resident-set
    high-water mark, reset first on Linux (``/proc/self/clear_refs``) so the figure belongs to
    the block. ``"device"`` names what was measured.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    result: dict[str, Any] = {"mb": float("nan"), "device": "cpu RSS"}
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        result["device"] = torch.cuda.get_device_name(device)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # not Linux, or not allowed: the process-lifetime peak is reported
    try:
        yield result
    finally:
        result["mb"] = (
            torch.cuda.max_memory_allocated(device) / 2**20 if cuda else _rss_high_water_mb()
        )


def _rss_high_water_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
