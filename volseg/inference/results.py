"""What predicting a case gives back: a label map or a grade, and the seconds each step took."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from volseg.io import Image


class StepTimer:
    """Wall-clock seconds per named step, summed; waits for CUDA work so GPU time is counted."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[step] += time.perf_counter() - start

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass
class PreparedCase:
    """A case read and preprocessed, ready for the network (``Predictor.prepare``).

    Attributes:
        case: the loaded data dict (``image``, ``presence``, ``reference``, ``mask``).
        data: the case preprocessed, once per ensemble member (one for a single model).
    """

    case: dict[str, Any]
    data: list[dict[str, Any]]


@dataclass
class SegmentationResult:
    """A label map on the input grid, and optionally the probabilities it came from.

    Attributes:
        labels: label values ``(X, Y, Z)`` uint8/uint16 with the input image's geometry.
        probabilities: ``(K, X, Y, Z)`` float16 on the same grid, or None.
    """

    labels: Image
    probabilities: np.ndarray | None = None


@dataclass
class GradeResult:
    """A case's grade.

    Attributes:
        probabilities: class name -> probability (softmax), in class order.
        predicted: the most probable class.
        modalities_used: modalities present in the case (the model saw these).
        modality_attention: modality -> weight of the modality-level attention.
        top_slices: modality -> most-attended slices, input-file indices, most attended first.
        slice_axis: modality -> input axis (0, 1, 2) the ``top_slices`` indices count along.
        temperature: T the logits were divided by before the softmax (1.0: uncalibrated).
    """

    probabilities: dict[str, float]
    predicted: str
    modalities_used: list[str]
    temperature: float = 1.0
    modality_attention: dict[str, float] = field(default_factory=dict)
    top_slices: dict[str, list[int]] = field(default_factory=dict)
    slice_axis: dict[str, int] = field(default_factory=dict)
