"""Prediction: slab sliding windows with the encoder run once per slice, TTA, cohorts.

- :func:`sliding_window_logits` / :func:`segment_probabilities`: a preprocessed volume to
  logits / probabilities (shared with training validation).
- :class:`Predictor`, :func:`predict_volume`, :func:`predict_grade`: one case from files or
  images, preprocessed as its checkpoint says, back on the input's exact grid.
- :class:`Ensemble`: several runs with the same labels, probabilities averaged per case.
- :func:`predict_cohort`: a file, folder or manifest of cases, with timings, failures,
  atomic outputs, ``skip_existing`` and sharding across ``torchrun`` ranks.

The names load on first use, so that ``import volseg.inference`` (and with it every ``volseg``
argument or file error) costs no torch or MONAI import.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "CohortResult": "cohort",
    "discover_cases": "cohort",
    "predict_cohort": "cohort",
    "Ensemble": "ensemble",
    "keep_largest_component": "postprocess",
    "InferenceOptions": "options",
    "GradeResult": "predict",
    "Predictor": "predict",
    "SegmentationResult": "predict",
    "StepTimer": "predict",
    "PreparedCase": "results",
    "as_predictor": "api",
    "predict_grade": "api",
    "predict_volume": "api",
    "segment_probabilities": "window",
    "sliding_window_logits": "window",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'volseg.inference' has no attribute {name!r}")
    value = getattr(import_module(f"volseg.inference.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
