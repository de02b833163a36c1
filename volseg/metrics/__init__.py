"""Metrics: per-case, per-label segmentation scores (mm), classification scores with CIs.

Segmentation distances match MONAI's metric definitions; classification metrics need no
sklearn. :func:`evaluate_segmentation` and :func:`evaluate_classification` are what
``volseg evaluate`` runs. Nothing here imports models (see DESIGN.md).
"""

from __future__ import annotations

from volseg.metrics.bootstrap import (
    ConfidenceInterval,
    bootstrap_ci,
    bootstrap_cis,
    bootstrap_mean_ci,
)
from volseg.metrics.classification import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    roc_auc,
    roc_curve,
)
from volseg.metrics.evaluate import evaluate_classification, evaluate_segmentation
from volseg.metrics.segmentation import CONVENTIONS, SEGMENTATION_METRICS, segmentation_metrics

__all__ = [
    "CONVENTIONS",
    "SEGMENTATION_METRICS",
    "ConfidenceInterval",
    "bootstrap_ci",
    "bootstrap_cis",
    "bootstrap_mean_ci",
    "classification_metrics",
    "confusion_matrix",
    "evaluate_classification",
    "evaluate_segmentation",
    "expected_calibration_error",
    "roc_auc",
    "roc_curve",
    "segmentation_metrics",
]
