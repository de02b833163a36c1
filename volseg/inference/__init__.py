"""Prediction: slab sliding windows with the encoder run once per slice, TTA, cohorts.

- :func:`sliding_window_logits` / :func:`segment_probabilities`: a preprocessed volume to
  logits / probabilities (shared with training validation).
- :class:`Predictor`, :func:`predict_volume`, :func:`predict_grade`: one case from files or
  images, preprocessed as its checkpoint says, back on the input's exact grid.
- :func:`predict_cohort`: a file, folder or manifest of cases, with timings, failures,
  atomic outputs, ``skip_existing`` and sharding across ``torchrun`` ranks.
"""

from __future__ import annotations

from volseg.inference.cohort import CohortResult, discover_cases, predict_cohort
from volseg.inference.postprocess import keep_largest_component
from volseg.inference.predict import (
    GradeResult,
    InferenceOptions,
    Predictor,
    SegmentationResult,
    StepTimer,
    as_predictor,
    predict_grade,
    predict_volume,
    read_case,
)
from volseg.inference.window import amp_dtype, segment_probabilities, sliding_window_logits

__all__ = [
    "CohortResult",
    "GradeResult",
    "InferenceOptions",
    "Predictor",
    "SegmentationResult",
    "StepTimer",
    "amp_dtype",
    "as_predictor",
    "discover_cases",
    "keep_largest_component",
    "predict_cohort",
    "predict_grade",
    "predict_volume",
    "read_case",
    "segment_probabilities",
    "sliding_window_logits",
]
