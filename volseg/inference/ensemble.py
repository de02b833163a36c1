"""Several runs predicting together: folds or runs trained on the same labels.

Each member preprocesses the case as its own checkpoint says and maps its probabilities back
to the case's input grid, so members may differ in spacing, crop or slice axis; what they
must share is the task, the modalities and the label map (segmentation) or classes (grading).

- **Segmentation**: the members' softmax probabilities are averaged voxel by voxel on the
  input grid, then argmaxed as one model's would be (largest components, ``roi_subset``).
- **Grading**: class probabilities and modality attention are averaged; the most-attended
  slices are those the members rank highest together (a Borda count of their top slices).

The case's files are read once for all members.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from volseg.errors import VolsegError
from volseg.inference.case_input import Source
from volseg.inference.options import InferenceOptions
from volseg.inference.predict import Predictor
from volseg.inference.results import GradeResult, PreparedCase, SegmentationResult, StepTimer

__all__ = ["Ensemble"]


class Ensemble:
    """Predictors whose probabilities are averaged; used where one :class:`Predictor` is.

    Args:
        members: two or more predictors with the same task, modalities and labels or classes.

    Attributes:
        members: the predictors, in the order given.
        task, modalities, label_values, label_names, classes, config, options, device,
        roi_values: those of the first member (the others agree where it matters).

    Raises:
        VolsegError: fewer than two members, or two that differ in task, modalities, label
            map or classes (the message names both runs).
    """

    def __init__(self, members: Sequence[Predictor]) -> None:
        if len(members) < 2:
            raise VolsegError("an ensemble needs two or more models; pass --model more than once")
        self.members = list(members)
        first = self.members[0]
        for other in self.members[1:]:
            _check_compatible(first, other)
        self.task = first.task
        self.name = " + ".join(m.name for m in self.members)
        self.modalities = first.modalities
        self.label_values = first.label_values
        self.label_names = first.label_names
        self.classes = first.classes

    @property
    def config(self) -> Any:
        return self.members[0].config

    @property
    def options(self) -> InferenceOptions:
        return self.members[0].options

    @property
    def device(self) -> Any:
        return self.members[0].device

    @property
    def roi_values(self) -> list[int] | None:
        return self.members[0].roi_values

    def set_options(self, options: InferenceOptions) -> None:
        """Give every member ``options`` (see :meth:`Predictor.set_options`)."""
        for member in self.members:
            member.set_options(options)

    # predict() is Predictor's: prepare() then run(), both below; the timer sums the members'
    # seconds per step.
    predict = Predictor.predict

    def prepare(
        self,
        sources: Source | Sequence[Source | None] | Mapping[str, Source | None],
        *,
        mask: Source | None = None,
        timer: StepTimer,
    ) -> PreparedCase:
        """Read the case once and preprocess it as each member's checkpoint says."""
        case = self.members[0].read(sources, mask=mask, timer=timer)
        return PreparedCase(case, [m.preprocess(case, timer) for m in self.members])

    def run(
        self, prepared: PreparedCase, *, timer: StepTimer, probabilities: bool = False
    ) -> SegmentationResult | GradeResult:
        """Every member on a case from :meth:`prepare`, combined."""
        first, case = self.members[0], prepared.case
        pairs = list(zip(self.members, prepared.data, strict=True))
        if self.task == "segmentation":
            total = first.probabilities(case, prepared.data[0], timer)
            for member, data in pairs[1:]:
                total += member.probabilities(case, data, timer).to(total.device)
            return first.label(case, total / len(self.members), timer, probabilities)
        return _combine_grades([m.grade(case, data, timer) for m, data in pairs], first)


def _check_compatible(first: Predictor, other: Predictor) -> None:
    """Refuse to average two runs that do not predict the same things."""
    checks = [
        ("tasks", first.task, other.task),
        ("modalities", first.modalities, other.modalities),
        ("label maps", _label_map(first), _label_map(other)),
        ("classes", first.classes, other.classes),
    ]
    for what, a, b in checks:
        if a != b:
            raise VolsegError(
                f"{first.name} and {other.name} cannot be ensembled: their {what} differ "
                f"({a} vs {b}); pass runs trained on the same labels and modalities"
            )


def _label_map(predictor: Predictor) -> dict[int, str] | None:
    values = predictor.label_values
    if values is None:
        return None
    return {v: predictor.label_names.get(v, str(v)) for v in values}


def _combine_grades(results: Sequence[GradeResult], first: Predictor) -> GradeResult:
    """Mean class probabilities and modality attention; top slices by a Borda count."""
    n = len(results)
    probabilities = {
        c: sum(r.probabilities[c] for r in results) / n for c in results[0].probabilities
    }
    attention = {
        m: sum(r.modality_attention.get(m, 0.0) for r in results) / n
        for m in results[0].modality_attention
    }
    combined = GradeResult(
        probabilities=probabilities,
        predicted=max(probabilities, key=probabilities.__getitem__),
        modalities_used=results[0].modalities_used,
        modality_attention=attention,
    )
    count = first.options.top_slices
    for m, axis in results[0].slice_axis.items():
        points: dict[int, int] = {}
        for r in results:
            if r.slice_axis.get(m) != axis:  # a member slicing along another axis
                continue
            for rank, index in enumerate(r.top_slices[m]):
                points[index] = points.get(index, 0) + count - rank
        ranked = sorted(points, key=lambda i: (-points[i], i))
        combined.top_slices[m], combined.slice_axis[m] = ranked[:count], axis
    return combined
