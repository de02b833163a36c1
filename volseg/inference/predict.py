"""Predict one case: read, preprocess as the checkpoint says, run the model, map back, label.

:class:`Predictor` holds a model with everything its checkpoint knows (config, modalities,
label values or classes); ``volseg predict``, :func:`volseg.predict_volume` and training
validation all go through it or through :func:`segment_probabilities`.

Options live in :mod:`volseg.inference.options`, what a case is given as in
:mod:`volseg.inference.case_input`, the results in :mod:`volseg.inference.results`; all are
re-exported here. Several runs predict together through :mod:`volseg.inference.ensemble`;
one-call helpers (:func:`~volseg.inference.api.predict_volume`) live in
:mod:`volseg.inference.api`. :meth:`Predictor.prepare` reads and preprocesses a case (host
work), :meth:`Predictor.run` runs the network on it (device work), so a cohort can prepare
the next case while the current one runs.

- **Reading and preprocessing** are the validation pipeline of
  :func:`volseg.data.transforms.build_transforms` (``train=False``) built from the checkpoint's
  ``data`` section, its loaders included: read, RAS, spacing, intensity, foreground crop. The
  loader keeps the image it read (``data["reference"]``): outputs get its grid and header.
  Users never re-type it.
- **Segmentation**: slab sliding windows with the encoder run once per slice
  (:mod:`volseg.inference.window`), optional mirror TTA, softmax; the argmax is taken where
  the probabilities lie and only the class index map goes back to the input grid and the host
  (:func:`~volseg.inference.postprocess.input_class_index`), mapped to label values (only those
  of ``roi_subset``, if given). Full probabilities on the input grid
  (:func:`~volseg.data.invert.invert_prediction`) are made for ``--save-probs`` and ensembles.
  The label map carries the input image's exact geometry.
- **Grading** (:mod:`volseg.inference.grading`, which training validation calls too): each
  present modality is encoded once over the whole volume and the MIL head runs once; no
  windows (the head pools over all slices, so a window would change the answer).
  Most-attended slices are reported as slice indices of the *input file* (see
  :func:`~volseg.inference.postprocess.original_slice_indices`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from volseg.config import Config
from volseg.data.invert import invert_prediction
from volseg.data.loading import REFERENCE_KEY
from volseg.data.transforms import LOAD_STEPS, build_transforms
from volseg.errors import VolsegError
from volseg.inference.case_input import Source, case_data
from volseg.inference.grading import grade_logits, grade_result, present_modalities
from volseg.inference.options import InferenceOptions
from volseg.inference.postprocess import (
    input_class_index,
    keep_largest_component,
    to_label_values,
)
from volseg.inference.results import GradeResult, PreparedCase, SegmentationResult, StepTimer
from volseg.inference.roi import keep_labels, roi_values
from volseg.inference.window import segment_probabilities
from volseg.io import Image
from volseg.models.checkpoint import (
    config_of,
    label_values,
    load_checkpoint,
    model_from_checkpoint,
)
from volseg.models.slicing import slice_dim
from volseg.runtime import resolve_precision

__all__ = [
    "GradeResult",
    "InferenceOptions",
    "PreparedCase",
    "Predictor",
    "SegmentationResult",
    "Source",
    "StepTimer",
]


class Predictor:
    """A model ready to predict cases, with its preprocessing and output conventions.

    Args:
        model: a :class:`~volseg.models.SegmentationModel` or :class:`~volseg.models.GradingModel`.
        config: the run's resolved config (preprocessing from ``data``, defaults from
            ``inference``, task from ``model.task``).
        modalities: input modality names in channel order.
        label_values: label value of each segmentation class; None: class ``i`` -> ``i``.
        classes: grade class names; None: ``"0"``, ``"1"``, ...
        options: how to predict (None fields from ``config``).
        label_names: label value -> name (for ``roi_subset``); None: the values as names.
        name: the run or checkpoint, for messages.

    Attributes:
        task: ``segmentation`` or ``classification``.
        device: where the model runs.
        roi_values: label values written (``roi_subset``), or None for all.
    """

    def __init__(
        self,
        model: nn.Module,
        config: Config,
        *,
        modalities: Sequence[str],
        label_values: Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
        options: InferenceOptions | None = None,
        label_names: Mapping[int, str] | None = None,
        name: str = "the model",
        temperature: float = 1.0,
    ) -> None:
        self.config = config
        self.temperature = temperature  # grading: probabilities are softmax(logits / T)
        self.task = config.model.task
        self.name = name
        self.modalities = list(modalities)
        self.label_values = list(label_values) if label_values is not None else None
        self.label_names = {int(v): str(n) for v, n in (label_names or {}).items()}
        self.classes = list(classes) if classes is not None else None
        encoder = getattr(model, "encoder", None)
        if encoder is not None and hasattr(encoder, "vit"):
            from volseg.models import merge_lora

            merge_lora(encoder)  # no-op without LoRA adapters
        self.model = model
        self.set_options(options or InferenceOptions())
        self.transforms = build_transforms(
            config.data,
            task=self.task,
            modalities=self.modalities,
            train=False,
            slice_axis=config.model.encoder.slice_axis,
        )

    def set_options(self, options: InferenceOptions) -> None:
        """Use ``options`` (None fields from the config) and move the model to their device.

        Raises:
            VolsegError: an option the config's defaults make invalid (see
                :class:`InferenceOptions`).
        """
        self.options = options.resolved(self.config)
        names = {v: self.label_names.get(v, str(v)) for v in self.label_values or []}
        self.roi_values = roi_values(self.options.roi_subset, names, self.name, task=self.task)
        self.device = torch.device(self.options.device)
        self.precision = resolve_precision(
            self.options.amp, self.device, option="--amp", cpu_auto_bf16=True
        )
        encoder = getattr(self.model, "encoder", None)
        if encoder is not None and hasattr(encoder, "vit"):  # chunk only costs memory and speed:
            encoder.chunk = self.options.chunk or "auto"  # sized from free memory unless set
        self.model = self.model.to(self.device).eval()
        if self.options.compile:
            from volseg.models.throughput import compile_encoder

            compile_encoder(self.model.encoder)

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path | Mapping[str, Any], options: InferenceOptions | None = None
    ) -> Predictor:
        """A predictor for a checkpoint file, run folder, or loaded checkpoint dict.

        Raises:
            VolsegError: unreadable checkpoint, or encoder weights it needs are gone.
        """
        name = "the checkpoint" if isinstance(checkpoint, Mapping) else str(checkpoint)
        if not isinstance(checkpoint, Mapping):
            checkpoint = load_checkpoint(checkpoint)
        config = config_of(checkpoint)
        segmentation = config.model.task == "segmentation"
        return cls(
            model_from_checkpoint(checkpoint),
            config,
            modalities=checkpoint["modalities"],
            label_values=label_values(checkpoint) if segmentation else None,
            classes=None if segmentation else checkpoint["classes"],
            options=options,
            label_names=checkpoint["labels"] if segmentation else None,
            name=name,
            temperature=1.0 if segmentation else checkpoint_temperature(checkpoint),
        )

    def predict(
        self,
        sources: Source | Sequence[Source | None] | Mapping[str, Source | None],
        *,
        mask: Source | None = None,
        timer: StepTimer | None = None,
        probabilities: bool = False,
    ) -> SegmentationResult | GradeResult:
        """Predict one case from its files or in-memory images: :meth:`prepare`, then :meth:`run`.

        Args:
            sources: one volume (a file, DICOM folder or :class:`~volseg.io.Image`; for several
                modalities a 4D file with one channel per modality), or one source per
                modality (a sequence in :attr:`modalities` order or a mapping by name; None for
                a missing one, which only grading models accept).
            mask: region mask for grading (e.g. the tumour), on the image's grid.
            timer: receives seconds for ``read``, ``preprocess``, ``encode``, ``head``,
                ``postprocess``.
            probabilities: also return the probabilities (segmentation).

        Raises:
            VolsegError: unreadable input, wrong modality count, grids that differ.
        """
        timer = timer or StepTimer(self.device)
        prepared = self.prepare(sources, mask=mask, timer=timer)
        return self.run(prepared, timer=timer, probabilities=probabilities)

    def prepare(
        self,
        sources: Source | Sequence[Source | None] | Mapping[str, Source | None],
        *,
        mask: Source | None = None,
        timer: StepTimer,
    ) -> PreparedCase:
        """Read and preprocess a case (host work only; a cohort does it for the next case
        while the device runs the current one)."""
        case = self.read(sources, mask=mask, timer=timer)
        return PreparedCase(case, [self.preprocess(case, timer)])

    def run(
        self, prepared: PreparedCase, *, timer: StepTimer, probabilities: bool = False
    ) -> SegmentationResult | GradeResult:
        """The network and post-processing of a case from :meth:`prepare`."""
        case, data = prepared.case, prepared.data[0]
        if self.task != "segmentation":
            return self.grade(case, data, timer)
        if probabilities:
            return self.label(case, self.probabilities(case, data, timer), timer, True)
        probs = self.network(data, timer)
        with timer("postprocess"):
            index = input_class_index(probs[0], data, self.transforms)
            self._check_grid(index.shape, case)
            return self.finish(case, index, int(probs.shape[1]))

    def read(
        self,
        sources: Source | Sequence[Source | None] | Mapping[str, Source | None],
        *,
        mask: Source | None = None,
        timer: StepTimer,
    ) -> dict[str, Any]:
        """Read a case's volumes (see :meth:`predict`) with the pipeline's loaders.

        Returns:
            The loaded data dict (``image``, ``presence``, ``reference``, ``mask``), which
            :meth:`preprocess` takes on; an ensemble reads it once.
        """
        with timer("read"):
            segmentation = self.task == "segmentation"
            data = case_data(sources, self.modalities, mask=mask, require_all=segmentation)
            try:
                return self.transforms(data, end=LOAD_STEPS)
            except RuntimeError as e:  # MONAI wraps a step's error as "applying transform ..."
                if isinstance(e.__cause__, VolsegError):
                    raise e.__cause__ from None
                raise

    def preprocess(self, case: dict[str, Any], timer: StepTimer) -> dict[str, Any]:
        """The rest of the validation pipeline on a case from :meth:`read` (left unchanged)."""
        with timer("preprocess"):
            fresh = {k: v.clone() if isinstance(v, MetaTensor) else v for k, v in case.items()}
            return self.transforms(fresh, start=LOAD_STEPS)

    def network(self, data: dict[str, Any], timer: StepTimer) -> torch.Tensor:
        """Softmax probabilities ``(1, K, X', Y', Z')`` on the preprocessed grid, float32 on
        the stitch device (default the model's)."""
        o = self.options
        return segment_probabilities(
            self.model,
            data["image"].as_tensor()[None],
            roi_slices=o.roi_slices or None,
            overlap=float(o.overlap),
            sw_batch_size=int(o.sw_batch_size),
            tta=bool(o.tta),
            mode=o.mode,
            naive=o.naive,
            stitch_device=o.stitch_device,
            amp=self.precision,
            timer=timer,
        )

    def probabilities(
        self, case: dict[str, Any], data: dict[str, Any], timer: StepTimer
    ) -> torch.Tensor:
        """Class probabilities ``(K, X, Y, Z)`` float32 on the input's grid, on the stitch
        device (``data`` is the case preprocessed by :meth:`preprocess`).

        Voxels the foreground crop removed are background with probability 1, so every
        voxel's probabilities sum to 1 (an ensemble may average them).
        """
        probs = self.network(data, timer)
        with timer("postprocess"):
            probs = invert_prediction(probs[0], data, self.transforms).as_tensor()
            self._check_grid(probs.shape[1:], case)
            probs[0] += (1 - probs.sum(dim=0)).clamp_min(0)
        return probs

    def label(
        self, case: dict[str, Any], probs: torch.Tensor, timer: StepTimer, keep_probs: bool = False
    ) -> SegmentationResult:
        """Argmax of input-grid probabilities, then :meth:`finish`; the probabilities come to
        the host (float16) only with ``keep_probs``."""
        with timer("postprocess"):
            out = probs.cpu().numpy().astype(np.float16) if keep_probs else None
            result = self.finish(case, probs.argmax(dim=0), int(probs.shape[0]))
        return SegmentationResult(result.labels, out)

    def finish(
        self, case: dict[str, Any], index: torch.Tensor, num_classes: int
    ) -> SegmentationResult:
        """Class indices on the input grid (any device) -> label values on the host, largest
        components and ``roi_subset`` as options say, with the input image's geometry (the
        caller times it as ``postprocess``)."""
        values = self.label_values or list(range(num_classes))
        labels = to_label_values(index, values)
        if self.options.keep_largest:
            labels = keep_largest_component(labels, background=values[0])
        if self.roi_values is not None:
            labels = keep_labels(labels, self.roi_values, background=0)
        reference = case[REFERENCE_KEY]
        return SegmentationResult(Image(labels, reference.geometry, header=reference.header))

    @staticmethod
    def _check_grid(shape: Sequence[int], case: dict[str, Any]) -> None:
        if tuple(shape) != case[REFERENCE_KEY].shape:
            raise RuntimeError(
                f"inverted prediction {tuple(shape)} does not fit the input grid "
                f"{case[REFERENCE_KEY].shape}"
            )

    def grade(self, case: dict[str, Any], data: dict[str, Any], timer: StepTimer) -> GradeResult:
        """Grade a case (read by :meth:`read`, ``data`` preprocessed by :meth:`preprocess`);
        missing modalities are left out."""
        present = present_modalities(self.modalities, case["presence"])
        mask = data.get("mask")
        out = grade_logits(
            self.model,
            self.modalities,
            present,
            precision=self.precision,
            image=data["image"].as_tensor()[None].to(self.device),
            mask=mask.as_tensor()[None].to(self.device) if mask is not None else None,
            timer=timer,
        )
        with timer("postprocess"):
            return grade_result(
                out,
                classes=self.classes,
                modalities=self.modalities,
                present=present,
                volume=data["image"],
                reference=case[REFERENCE_KEY],
                slice_dim=slice_dim(self.config.model.encoder.slice_axis),
                top_slices=self.options.top_slices,
                temperature=self.temperature,
            )


def checkpoint_temperature(checkpoint: Mapping[str, Any]) -> float:
    """The grading temperature fitted on the validation cases of the checkpoint's epoch
    (``metrics.temperature``, written by ``volseg train``); 1.0 (uncalibrated) when absent."""
    value = (checkpoint.get("metrics") or {}).get("temperature")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 1.0
    return value if math.isfinite(value) and value > 0 else 1.0
