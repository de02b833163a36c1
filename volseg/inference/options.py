"""How to predict: window, TTA, device and precision options, checked once when they are made.

A bad option (a device that is not there, an overlap of 1, zero windows per batch) would
otherwise fail in every case of a cohort, or deep inside torch; :class:`InferenceOptions`
refuses it with one line when it is created and again when the checkpoint's defaults fill it.
torch is imported only to check a named device, so a bad option costs no heavy import.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from volseg.errors import VolsegError
from volseg.runtime import AMP_MODES  # torch-free: options are checked before torch loads

if TYPE_CHECKING:
    import torch

    from volseg.config import Config

BLEND_MODES = ("gaussian", "constant")


@dataclass
class InferenceOptions:
    """How to predict; ``None`` fields take the checkpoint config's value.

    Attributes:
        roi_slices: slices per window along the slice axis; None: ``data.slab`` of the config;
            0: the whole volume in one window.
        overlap: window overlap in [0, 1); None: ``inference.overlap``.
        sw_batch_size: windows per head call; None: ``inference.sw_batch_size``.
        tta: mirror test-time augmentation (8 flips); None: ``inference.tta``.
        mode: window blending, ``gaussian`` or ``constant``.
        naive: run the whole model per window (comparison only, slower).
        keep_largest: keep each label's largest 26-connected component.
        stitch_device: device of the stitched output, e.g. ``cpu``; None: the model's device.
        amp: ``auto``, ``bf16``, ``fp16`` or ``off`` (:mod:`volseg.runtime`).
        device: model device; None: ``cuda`` when available, else ``cpu``.
        chunk: slices per encoder call (memory and speed only), or ``auto`` (sized from free GPU
            memory; 32 on CPU); a string of digits as typed after ``--chunk`` becomes an int;
            None: ``auto`` (a run's training ``encoder.chunk`` is not kept: the chunk changes
            memory and speed, never the result).
        compile: ``torch.compile`` the encoder's ViT blocks (compiles once per process, in the
            first case; pays on long cohorts; see :mod:`volseg.models.throughput`).
        top_slices: most-attended slices reported per modality (grading).
        roi_subset: label names to write (segmentation), or one comma-separated string; the
            other labels become background.
            Checked against the model's label map when a predictor takes these options.
    """

    roi_slices: int | None = None
    overlap: float | None = None
    sw_batch_size: int | None = None
    tta: bool | None = None
    mode: str = "gaussian"
    naive: bool = False
    keep_largest: bool = False
    stitch_device: str | None = None
    amp: str = "auto"
    device: str | None = None
    chunk: int | str | None = None
    compile: bool = False
    top_slices: int = 3
    roi_subset: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        """Refuse values no case could run with (the CLI flag is named in the message).

        Raises:
            VolsegError: an unknown or absent device, overlap outside [0, 1), a window batch,
                chunk or top-slice count below 1 (or a chunk neither a number nor ``auto``),
                negative ``roi_slices``, an unknown blend or AMP mode.
        """
        _check_range("--overlap", self.overlap, 0, 1, "in [0, 1)", below=True)
        _check_range("--sw-batch-size", self.sw_batch_size, 1, None, ">= 1")
        _check_range("--roi-slices", self.roi_slices, 0, None, ">= 0 (0 = whole volume)")
        self.chunk = _chunk(self.chunk)
        _check_range("--chunk", None if self.chunk == "auto" else self.chunk, 1, None, ">= 1")
        _check_range("--top-slices", self.top_slices, 1, None, ">= 1")
        if self.mode not in BLEND_MODES:
            raise VolsegError(f"--blend {self.mode!r} is not one of {', '.join(BLEND_MODES)}")
        if self.amp not in AMP_MODES:
            raise VolsegError(f"--amp {self.amp!r} is not one of {', '.join(AMP_MODES)}")
        if isinstance(self.roi_subset, str):  # "liver,spleen" as typed after --roi-subset
            self.roi_subset = tuple(name.strip() for name in self.roi_subset.split(","))
        if self.roi_subset is not None:
            self.roi_subset = tuple(self.roi_subset)
            if not self.roi_subset or not all(self.roi_subset):
                raise VolsegError("--roi-subset needs label names, e.g. --roi-subset liver,spleen")
        check_device(self.device, "--device")
        check_device(self.stitch_device, "--stitch-device")

    def resolved(self, config: Config) -> InferenceOptions:
        """A copy with every None filled from ``config``."""
        import torch

        roi = config.data.slab if self.roi_slices is None else self.roi_slices
        return replace(
            self,
            roi_slices=roi,
            overlap=config.inference.overlap if self.overlap is None else self.overlap,
            sw_batch_size=(
                config.inference.sw_batch_size if self.sw_batch_size is None else self.sw_batch_size
            ),
            tta=config.inference.tta if self.tta is None else self.tta,
            device=self.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        )


def check_device(device: str | torch.device | None, option: str = "--device") -> None:
    """Refuse a device name torch does not know, or one this machine does not have.

    Args:
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps``; None passes.
        option: the option that named it, for the message.

    Raises:
        VolsegError: one line naming the option and what to use instead.
    """
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise VolsegError(
            f"{option} {str(device)!r} is not a device; use cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise VolsegError(
                f"{option} {device}: no CUDA GPU is available on this machine (or to this "
                "torch build); use cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise VolsegError(
                f"{option} {device}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}"
            )
        return
    if dev.type == "mps" and torch.backends.mps.is_available():
        return
    raise VolsegError(f"{option} {device}: not available here; use cpu or cuda")


def _chunk(value: int | str | None) -> int | str | None:
    """``--chunk`` as typed (``64``, ``auto``) or given: an int, ``"auto"`` or None."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text == "auto":
        return "auto"
    try:
        return int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise VolsegError(
            f"--chunk {value!r} is neither a number of slices nor auto; use e.g. --chunk 64 "
            "or --chunk auto"
        ) from None


def _check_range(
    option: str,
    value: float | None,
    low: float,
    high: float | None,
    rule: str,
    *,
    below: bool = False,
) -> None:
    """``low <= value`` and ``value < high`` (``below``) or ``<= high``; None passes."""
    if value is None:
        return
    fits = value >= low and (high is None or (value < high if below else value <= high))
    if not fits:
        raise VolsegError(f"{option} must be {rule}, got {value}")
