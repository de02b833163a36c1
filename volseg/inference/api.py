"""One call from a model to a prediction: checkpoints, run folders, ensembles or bare models.

:func:`as_predictor` turns whatever names a model into a :class:`~volseg.inference.predict.
Predictor` (or an :class:`~volseg.inference.ensemble.Ensemble`); :func:`predict_volume` and
:func:`predict_grade` predict one case with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from volseg.config import Config
from volseg.errors import VolsegError
from volseg.inference.case_input import Source
from volseg.inference.ensemble import Ensemble
from volseg.inference.options import InferenceOptions
from volseg.inference.predict import Predictor
from volseg.inference.results import GradeResult, SegmentationResult
from volseg.io import Image

__all__ = ["as_predictor", "predict_grade", "predict_volume"]


def as_predictor(
    model: Predictor | Ensemble | nn.Module | str | Path | Mapping[str, Any] | Sequence[Any],
    *,
    options: InferenceOptions | None = None,
    config: Config | None = None,
    modalities: Sequence[str] | None = None,
) -> Predictor | Ensemble:
    """A :class:`Predictor` from a predictor, checkpoint (file, run folder, dict) or model.

    A bare model takes its preprocessing from ``config`` (default: :class:`Config`'s defaults
    with the model's task), its modalities from ``modalities`` (default: ``image``), class
    ``i`` is written as label value ``i``. A given predictor is returned as it is, or with
    ``options`` swapped in. A list or tuple of several checkpoints gives an
    :class:`~volseg.inference.ensemble.Ensemble` (probabilities averaged).
    """
    from volseg.models import GradingModel

    if isinstance(model, list | tuple):
        if len(model) != 1:
            return Ensemble([as_predictor(m, options=options) for m in model])
        model = model[0]
    if isinstance(model, Predictor | Ensemble):
        if options is not None:
            model.set_options(options)
        return model
    if isinstance(model, nn.Module):
        grading = isinstance(model, GradingModel)
        if config is None:
            config = Config()
            config.model.task = "classification" if grading else "segmentation"
        names = list(model.modalities) if grading else list(modalities or ["image"])
        return Predictor(model, config, modalities=names, options=options)
    return Predictor.from_checkpoint(model, options)


def predict_volume(
    model: Predictor | Ensemble | nn.Module | str | Path | Mapping[str, Any] | Sequence[Any],
    image: Source | Sequence[Source | None] | Mapping[str, Source | None],
    *,
    options: InferenceOptions | None = None,
    config: Config | None = None,
) -> Image:
    """Segment one volume and return its label map on the input's exact grid.

    Args:
        model: a checkpoint file or run folder, a loaded checkpoint dict, a :class:`Predictor`,
            a list of checkpoints (an ensemble), or a bare segmentation model (preprocessed
            with ``config``, see :func:`as_predictor`).
        image: an :class:`~volseg.io.Image`, a file or DICOM folder, or one per modality.
        options: window, TTA and device settings; None: the checkpoint config's.
        config: preprocessing for a bare model.

    Returns:
        The label map (uint8/uint16, the checkpoint's label values) with ``image``'s geometry
        and header; write it with :func:`volseg.io.write_like` or ``write_image``.

    Raises:
        VolsegError: a grading model (use :func:`predict_grade`), or a bad input.
    """
    names = None
    if isinstance(image, Image) and image.num_channels > 1:
        names = [f"channel{i}" for i in range(image.num_channels)]
    elif isinstance(image, Sequence) and not isinstance(image, str):
        names = [f"channel{i}" for i in range(len(image))]
    predictor = as_predictor(model, options=options, config=config, modalities=names)
    if predictor.task != "segmentation":
        raise VolsegError("predict_volume needs a segmentation model; use predict_grade")
    result = predictor.predict(image)
    assert isinstance(result, SegmentationResult)
    return result.labels


def predict_grade(
    model: Predictor | Ensemble | nn.Module | str | Path | Mapping[str, Any] | Sequence[Any],
    images: Source | Sequence[Source | None] | Mapping[str, Source | None],
    *,
    mask: Source | None = None,
    options: InferenceOptions | None = None,
) -> GradeResult:
    """Grade one case (see :class:`GradeResult`); ``images`` as in :meth:`Predictor.predict`.

    Raises:
        VolsegError: a segmentation model, or a bad input.
    """
    predictor = as_predictor(model, options=options)
    if predictor.task == "segmentation":
        raise VolsegError("predict_grade needs a grading model; use predict_volume")
    result = predictor.predict(images, mask=mask)
    assert isinstance(result, GradeResult)
    return result
