"""Validation on whole volumes: per-class Dice for segmentation, AUC and friends for grading.

Segmentation runs :func:`volseg.inference.window.sliding_window_logits`, the function
``volseg predict`` uses, over slab windows of ``data.slab`` slices (features passed in when
they are cached, encoded once per volume otherwise). Dice is scored on the preprocessed grid
(RAS, target spacing, foreground crop) against the label preprocessed the same way, per
foreground class; a class absent from both reference and prediction scores 1, absent from
the reference but predicted 0 (``volseg.metrics`` conventions).

Grading calls :func:`volseg.inference.grading.grade_logits`, the code ``volseg predict``
runs: every present modality of the whole volume encoded (or its cached features read), the
MIL head run with the case's mask; AUC, balanced accuracy
and accuracy come from :func:`volseg.metrics.classification_metrics`.

Each rank scores its share of the cases; the per-case results are gathered so every rank
returns the metrics of the whole validation set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from volseg.engine.distributed import gather_objects
from volseg.inference.grading import grade_logits, present_modalities
from volseg.inference.window import sliding_window_logits
from volseg.progress import track
from volseg.runtime import DistContext, resolve_precision


def dice_per_class(pred: Tensor, ref: Tensor, num_classes: int) -> list[float]:
    """Dice of classes ``1..K-1`` between two class-index maps of the same shape.

    Returns:
        One Dice per foreground class: 1.0 when the class is in neither map.
    """
    out = []
    for k in range(1, num_classes):
        p, r = pred == k, ref == k
        denominator = int(p.sum()) + int(r.sum())
        out.append(1.0 if denominator == 0 else 2.0 * int((p & r).sum()) / denominator)
    return out


def validate_segmentation(
    model: nn.Module,
    samples: Iterable[Mapping[str, Any]],
    *,
    class_names: Sequence[str],
    slab: int,
    overlap: float,
    sw_batch_size: int,
    amp: str,
    ctx: DistContext,
    progress: Any = None,
) -> dict[str, float]:
    """Mean and per-class Dice over the validation volumes (see the module docstring).

    Args:
        model: the segmentation model (eval mode is set here and undone after).
        samples: this rank's validation samples: ``image (C, X, Y, Z)``, ``label (1, X, Y, Z)``
            class indices, optional cached ``features (F, x, y, z)``.
        class_names: names of classes ``0..K-1`` (background first).
        slab: window length in slices (``data.slab``).
        overlap, sw_batch_size: sliding-window settings (``inference.*``).
        amp: ``train.amp``, resolved as training resolves it (:mod:`volseg.runtime`).
        ctx: the distributed context.
        progress: the live rich display of training to add a validation bar to; None draws
            no bar (see :func:`volseg.progress.track`).

    Returns:
        ``dice_mean`` (mean over classes of the mean over cases), ``dice/<class>`` per
        foreground class, ``val_cases``.
    """
    was_training = model.training
    model.eval()
    scores: list[list[float]] = []
    for sample in _tracked(samples, progress):
        features = sample.get("features")
        logits = sliding_window_logits(
            model,
            sample["image"][None],
            roi_slices=slab,
            overlap=overlap,
            sw_batch_size=sw_batch_size,
            amp=amp,
            features=None if features is None else features[None].float(),
            stitch_device="cpu",
        )
        pred = logits[0].argmax(0)
        scores.append(dice_per_class(pred, sample["label"][0].cpu(), len(class_names)))
    model.train(was_training)
    scores = [s for part in gather_objects(scores, ctx) for s in part]
    per_class = np.mean(np.asarray(scores, dtype=np.float64), axis=0)
    metrics = {f"dice/{name}": float(v) for name, v in zip(class_names[1:], per_class, strict=True)}
    return {"dice_mean": float(per_class.mean()), **metrics, "val_cases": float(len(scores))}


def validate_grading(
    model: nn.Module,
    samples: Iterable[Mapping[str, Any]],
    *,
    classes: Sequence[str],
    modalities: Sequence[str],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    amp: str,
    ctx: DistContext,
    progress: Any = None,
) -> dict[str, float]:
    """AUC, balanced accuracy, accuracy and loss over the validation cases.

    Args:
        model: the grading model.
        samples: this rank's samples: ``image (M, X, Y, Z)``, ``presence (M,)``, ``target``,
            optional ``mask (1, X, Y, Z)`` and cached ``features (M * E, x, y, z)``.
        classes: class names (index = class id).
        modalities: modality names in channel order.
        loss_fn: the training loss on ``(logits (1, G), target (1,))``.
        amp: ``train.amp``, resolved as training resolves it (:mod:`volseg.runtime`).
        ctx: the distributed context.
        progress: as for :func:`validate_segmentation`.

    Returns:
        ``auc`` (NaN if a class is missing from the validation set), ``balanced_accuracy``,
        ``accuracy``, ``val_loss``, ``val_cases``; ``temperature``, the T of temperature
        scaling fitted on these cases (:func:`volseg.metrics.calibration.fit_temperature`), and
        ``ece`` / ``ece_calibrated``, the 15-bin ECE before and after dividing logits by T.
    """
    from volseg.metrics import classification_metrics, expected_calibration_error
    from volseg.metrics.calibration import fit_temperature, softmax_with_temperature

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    precision = resolve_precision(amp, device)
    rows: list[tuple[int, list[float], float]] = []  # (target, logits, loss)
    for sample in _tracked(samples, progress):
        mask = sample.get("mask")
        features = sample.get("features")
        out = grade_logits(
            model,
            modalities,
            present_modalities(modalities, sample["presence"]),
            precision=precision,
            image=None if features is not None else sample["image"][None].to(device),
            features=None if features is None else features[None].to(device),
            mask=None if mask is None else mask[None].to(device),
        )
        logits = out.logits.float()
        target = sample["target"].reshape(1).to(device)
        loss = float(loss_fn(logits, target))
        rows.append((int(target), logits[0].cpu().tolist(), loss))
    model.train(was_training)
    rows = [r for part in gather_objects(rows, ctx) for r in part]
    y = np.asarray([r[0] for r in rows], dtype=np.int64)
    logits = np.asarray([r[1] for r in rows], dtype=np.float64)
    probs = softmax_with_temperature(logits, 1.0)
    result = classification_metrics(y, probs, classes=classes, n_resamples=0)["metrics"]
    temperature = fit_temperature(logits, y)
    calibrated = softmax_with_temperature(logits, temperature)
    return {
        "auc": float(result["AUC"]),
        "balanced_accuracy": float(result["balanced_accuracy"]),
        "accuracy": float(result["accuracy"]),
        "val_loss": float(np.mean([r[2] for r in rows])),
        "val_cases": float(len(rows)),
        "temperature": temperature,
        "ece": expected_calibration_error(y, probs),
        "ece_calibrated": expected_calibration_error(y, calibrated),
    }


def _tracked(samples: Iterable[Any], progress: Any) -> Iterable[Any]:
    """``samples`` counted on a \"validation\" bar in ``progress`` (the training display, whose
    columns show a ``loss`` field); untouched when ``progress`` is None."""
    return track(samples, "validation", enabled=progress is not None, progress=progress, loss="-")


def score_of(metrics: Mapping[str, float], task: str) -> float:
    """The number that picks the best checkpoint: mean Dice, or AUC (balanced accuracy when
    AUC is undefined); higher is better, NaN never wins."""
    value = metrics["dice_mean"] if task == "segmentation" else metrics["auc"]
    if task != "segmentation" and math.isnan(value):
        value = metrics["balanced_accuracy"]
    return value
