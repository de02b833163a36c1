"""Deterministic synthetic datasets for tests and demos without internet.

- :func:`synthesize_organs`: CT-like abdominal phantoms, segmentation of liver, spleen and
  both kidneys (:data:`ORGAN_LABELS`).
- :func:`synthesize_abdomen`: a second, independent CT abdomen generator (other anatomy, shape
  model, distractors and scanner settings) kept as a held-out benchmark that recipes are not
  tuned on; spleen, liver and kidneys (:data:`ABDOMEN_LABELS`, both kidneys one label).
- :func:`synthesize_pelvis`: a third CT generator by another hand, the male pelvis (bladder,
  rectum, prostate, femoral heads; :data:`PELVIS_LABELS`), with organs of equal mean HU and
  different texture, partial volume and correlated noise; a held-out test only, never tuned on.
- :func:`synthesize_glioma`: four-modality brain MRI (T1, T1ce, T2, FLAIR) with a glioma,
  classification of its grade (:func:`grade_classes`), tumour map (:data:`TUMOUR_LABELS`).
- :func:`synthesize_glioma_heldout`: a second, independent glioma generator (other tumour
  shapes, grade cues, intensity and bias models, 1-3 mm slices, some missing modalities) in
  the same layout, kept as a held-out grading test.

All write ``imagesTr/``, ``labelsTr/``, a volseg ``manifest.json`` and ``synth.json`` (the
request and every case's drawn parameters). Case ``k`` depends only on ``seed`` and ``k``;
:func:`make_organ_case` / :func:`make_abdomen_case` / :func:`make_glioma_case` with
:func:`case_rng` build it in memory.
"""

from __future__ import annotations

from volseg.synth.abdomen import ABDOMEN_LABELS, make_abdomen_case, synthesize_abdomen
from volseg.synth.glioma import (
    MODALITIES,
    TUMOUR_LABELS,
    case_grade,
    grade_classes,
    make_glioma_case,
    synthesize_glioma,
)
from volseg.synth.glioma_heldout import synthesize_glioma_heldout
from volseg.synth.organs import ORGAN_LABELS, make_organ_case, synthesize_organs
from volseg.synth.pelvis import PELVIS_LABELS, make_pelvis_case, synthesize_pelvis
from volseg.synth.shapes import SynthCase, case_rng

# Named volume sizes (X, Y, Z) in voxels; the phantoms fill the field of view at any size.
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (32, 32, 16),
    "small": (64, 64, 24),
    "medium": (128, 128, 48),
    "realistic": (256, 256, 100),
    "large": (512, 512, 150),
}

__all__ = [
    "ABDOMEN_LABELS",
    "MODALITIES",
    "ORGAN_LABELS",
    "PELVIS_LABELS",
    "SIZES",
    "TUMOUR_LABELS",
    "SynthCase",
    "case_grade",
    "case_rng",
    "grade_classes",
    "make_abdomen_case",
    "make_glioma_case",
    "make_organ_case",
    "make_pelvis_case",
    "synthesize_abdomen",
    "synthesize_glioma",
    "synthesize_glioma_heldout",
    "synthesize_organs",
    "synthesize_pelvis",
]
