"""Grade one preprocessed case: encode each present modality once, run the MIL head once.

:meth:`~volseg.inference.predict.Predictor.grade` and training validation
(:func:`volseg.engine.validate.validate_grading`) both call :func:`grade_logits`, so a run is
validated exactly as it later predicts: missing modalities left out, the whole volume encoded
(no windows: the head pools over all slices), the case's mask passed to the head.
:func:`grade_result` turns the head's output into a :class:`GradeResult`, with the
most-attended slices as slice indices of the input file.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from volseg.inference.postprocess import original_slice_indices
from volseg.inference.results import GradeResult, StepTimer
from volseg.io import Image
from volseg.runtime import Precision


def present_modalities(modalities: Sequence[str], presence: Any) -> list[str]:
    """The modalities whose ``presence`` ``(M,)`` entry is non-zero, in channel order."""
    flags = torch.as_tensor(presence).tolist()
    return [m for m, p in zip(modalities, flags, strict=True) if p]


def split_features(features: Tensor, modalities: Sequence[str]) -> dict[str, Tensor]:
    """``(B, M * E, x, y, z)`` stacked modality features -> modality -> ``(B, E, x, y, z)``."""
    chunks = features.chunk(len(modalities), dim=1)
    return dict(zip(modalities, chunks, strict=True))


def grade_logits(
    model: nn.Module,
    modalities: Sequence[str],
    present: Sequence[str],
    *,
    precision: Precision,
    image: Tensor | None = None,
    features: Tensor | None = None,
    mask: Tensor | None = None,
    timer: StepTimer | None = None,
) -> Any:
    """The grading head's output for one preprocessed case.

    Args:
        model: a :class:`~volseg.models.GradingModel` in eval mode.
        modalities: its modality names, in channel order.
        present: the modalities to use (:func:`present_modalities`); the others are left out.
        precision: autocast settings (:func:`volseg.runtime.resolve_precision`).
        image: ``(1, M, X, Y, Z)`` preprocessed volume on the model's device; or
        features: cached encoder features ``(1, M * E, x, y, z)`` instead.
        mask: region mask ``(1, 1, X, Y, Z)`` on the image's grid, or None.
        timer: receives seconds for ``encode`` and ``head``.

    Returns:
        The head's :class:`~volseg.models.cls_head.GradeOutput` (``logits (1, G)``, modality
        and slice attention).
    """

    def step(name: str) -> Any:
        return timer(name) if timer is not None else nullcontext()

    with torch.no_grad(), precision.autocast():
        with step("encode"):
            if features is not None:
                stacked = split_features(features.float(), modalities)
                encoded = {m: stacked[m] for m in present}
            else:
                assert image is not None, "grade_logits needs an image or features"
                inputs = {m: image[:, i : i + 1] for i, m in enumerate(modalities) if m in present}
                encoded = model.encode(inputs)
        with step("head"):
            return model.decode(encoded, mask=mask)


def grade_probabilities(logits: Tensor) -> list[float]:
    """Class probabilities of one case from logits ``(1, G)`` (softmax in float32)."""
    return torch.softmax(logits.float(), dim=1)[0].cpu().tolist()


def grade_result(
    out: Any,
    *,
    classes: Sequence[str] | None,
    modalities: Sequence[str],
    present: Sequence[str],
    volume: Any,
    reference: Image,
    slice_dim: int,
    top_slices: int,
    temperature: float = 1.0,
) -> GradeResult:
    """A :class:`GradeResult` from the head's output ``out`` for one case.

    Args:
        out: :func:`grade_logits`' output.
        classes: class names (None: ``"0"``, ``"1"``, ...).
        modalities, present: as for :func:`grade_logits`.
        volume: the preprocessed image (a MetaTensor ``(M, X', Y', Z')``, its affine RAS).
        reference: the image the case was read from (its grid: the input file's).
        slice_dim: the spatial axis the encoder slices along.
        top_slices: how many most-attended slices to report per modality.
        temperature: T of temperature scaling: probabilities are ``softmax(logits / T)``
            (1.0: uncalibrated); the argmax is the same for every T.
    """
    probs = grade_probabilities(out.logits.float() / temperature)
    names = list(classes or [str(i) for i in range(len(probs))])
    result = GradeResult(
        probabilities=dict(zip(names, probs, strict=True)),
        predicted=names[int(np.argmax(probs))],
        temperature=float(temperature),
        modalities_used=list(present),
        modality_attention={
            m: float(out.modality_attention[0, i]) for i, m in enumerate(modalities)
        },
    )
    for m in present:
        attention = out.slice_attention[m][0].float().cpu()
        top = torch.argsort(attention, descending=True)[:top_slices]
        result.top_slices[m], result.slice_axis[m] = original_slice_indices(
            top.tolist(),
            affine=np.asarray(volume.affine),
            original_affine=reference.affine,
            spatial_shape=tuple(volume.shape[1:]),
            original_shape=reference.shape,
            slice_axis=slice_dim,
        )
    return result
