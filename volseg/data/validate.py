"""Check a manifest against its files before any training starts: all problems, in one pass.

A missing label or a label value outside the label map found at epoch 3 wastes hours; found
here it costs a header read per file (and one label read per case with ``check_labels``).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from volseg.data.manifest import Case, Manifest
from volseg.errors import VolsegError
from volseg.io.paths import case_file_name
from volseg.io.read import ImageInfo, read_image, read_info

SHOWN_PROBLEMS = 3


class ManifestError(VolsegError):
    """A manifest with problems; ``problems`` holds every one, the message the first few."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


def validate_manifest(
    manifest: Manifest,
    *,
    check_labels: bool = True,
    check_geometry: bool = True,
    allow_missing_modalities: bool = True,
    workers: int = 4,
) -> list[str]:
    """Find every problem of a manifest and its files.

    Checked: no cases; duplicate case ids; case ids that cannot name an output file (empty,
    absolute, ``..``, a path separator); missing image, label and mask files; unreadable
    files; a case lacking a modality; a training case without its label (segmentation) or
    class (classification), or with a class not in ``manifest.classes``; and, reading headers,
    4D files whose channel count does not match the modalities that use them, and label, mask
    or other modalities whose grid (shape, spacing, origin, direction) differs from the first
    image's. With ``check_labels`` every label map is read and values outside
    ``manifest.labels`` are reported.

    Args:
        manifest: the dataset.
        check_labels: read label volumes and check their values (segmentation).
        check_geometry: read image headers: readability, channel counts and grids.
        allow_missing_modalities: classification only: a case may lack some modalities
            (grading copes with any subset). Segmentation always needs all of them.
        workers: threads reading files.

    Returns:
        One line per problem, each naming the case id and the file; empty when all is well.
    """
    problems: list[str] = []
    all_cases = manifest.cases + manifest.test_cases
    if not all_cases:
        problems.append(f"manifest {manifest.source or manifest.name} has no cases")
    counts = Counter(case.id for case in all_cases)
    problems += [f"case id {i!r} appears {n} times" for i, n in counts.items() if n > 1]
    problems += [p for case in all_cases if (p := _id_problem(case.id))]
    checker = _CaseChecker(
        manifest,
        check_labels=check_labels,
        check_geometry=check_geometry,
        allow_missing=allow_missing_modalities and manifest.task == "classification",
    )
    jobs = [(case, True) for case in manifest.cases] + [(c, False) for c in manifest.test_cases]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for found in pool.map(lambda job: checker(*job), jobs):
            problems += found
    return problems


def check_manifest(manifest: Manifest, **kwargs: Any) -> None:
    """Raise if :func:`validate_manifest` (given ``kwargs``) finds anything.

    Raises:
        ManifestError: a :class:`VolsegError` whose one-line message gives the count and the
            first problems; ``.problems`` holds all of them.
    """
    problems = validate_manifest(manifest, **kwargs)
    if not problems:
        return
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    tail = f" (and {more} more)" if more > 0 else ""
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    raise ManifestError(
        f"manifest {manifest.source or manifest.name} has {count}: {shown}{tail}; "
        "fix the files or the manifest and run again",
        problems,
    )


@dataclass
class _CaseChecker:
    manifest: Manifest
    check_labels: bool
    check_geometry: bool
    allow_missing: bool

    def __call__(self, case: Case, training: bool) -> list[str]:
        problems = self._entries(case, training)
        files = [(f"image {m!r}", s.path) for m, s in case.images.items()]
        if case.label is not None:
            files.append(("label", case.label))
        if case.mask is not None:
            files.append(("mask", case.mask))
        missing = {path for what, path in files if not path.exists()}
        problems += [
            f"case {case.id}: {what} file {path} is missing"
            for what, path in files
            if path in missing
        ]
        infos: dict[Path, ImageInfo] = {}
        if self.check_geometry:
            for what, path in files:
                if path in missing or path in infos:
                    continue
                try:
                    infos[path] = read_info(path)
                except VolsegError as e:
                    problems.append(f"case {case.id}: {what} unreadable: {e}")
            problems += self._channels(case, infos) + self._grids(case, files, infos)
        label = case.label
        if self.check_labels and label is not None and label not in missing:
            if label in infos or not self.check_geometry:
                problems += self._label_values(case.id, label)
        return problems

    def _entries(self, case: Case, training: bool) -> list[str]:
        """What the manifest says about the case, before looking at any file."""
        m = self.manifest
        problems = [
            f"case {case.id}: image modality {name!r} is not one of the manifest's {m.modalities}"
            for name in case.images
            if name not in m.modalities
        ]
        lacking = [name for name in m.modalities if name not in case.images]
        if not case.images:  # even grading, which copes with missing modalities, needs one
            where = "CSV columns" if m.format == "csv" else "modalities"
            problems.append(
                f"case {case.id}: no image at all ({where} {', '.join(m.modalities)} all "
                "empty); give at least one image or drop the case"
            )
        elif lacking and not self.allow_missing:
            problems.append(f"case {case.id}: modalities {lacking} are missing (no image given)")
        if training and m.task == "segmentation" and case.label is None:
            problems.append(f"case {case.id}: no label file given for a training case")
        if training and m.task == "classification":
            if case.target is None:
                problems.append(f"case {case.id}: no class given for a training case")
            elif case.target not in m.classes:
                problems.append(
                    f"case {case.id}: class {case.target!r} is not one of the classes {m.classes}"
                )
        return problems

    def _channels(self, case: Case, infos: dict[Path, ImageInfo]) -> list[str]:
        """Each file's channel count against the modalities that read it."""
        users: dict[Path, list[tuple[str, int | None]]] = {}
        for name, source in case.images.items():
            users.setdefault(source.path, []).append((name, source.channel))
        problems = []
        for path, used in users.items():
            if path not in infos:
                continue
            n = infos[path].channels
            names = [name for name, _ in used]
            if n > 1 and len(used) != n:
                problems.append(
                    f"case {case.id}: file {path} has {n} channels but {len(used)} modalities "
                    f"use it ({', '.join(names)})"
                )
            for name, channel in used:
                if n > 1 and channel is None:
                    problems.append(
                        f"case {case.id}: file {path} has {n} channels; give the channel of "
                        f"modality {name!r}"
                    )
                elif channel is not None and channel >= n:
                    problems.append(
                        f"case {case.id}: modality {name!r} reads channel {channel} of {path}, "
                        f"which has {n} channel{'s' if n > 1 else ''}"
                    )
        return problems

    def _grids(
        self, case: Case, files: list[tuple[str, Path]], infos: dict[Path, ImageInfo]
    ) -> list[str]:
        """Every file's grid against the first readable image's."""
        readable = [(what, path) for what, path in files if path in infos]
        images = [(what, path) for what, path in readable if what.startswith("image")]
        if not images:
            return []
        ref_what, ref = images[0]
        problems = []
        seen = {ref}
        for what, path in readable:
            if path in seen:
                continue
            seen.add(path)
            diff = infos[path].geometry.differences(infos[ref].geometry)
            if diff:
                problems.append(
                    f"case {case.id}: {what} {path} does not match {ref_what} {ref}: "
                    + ", ".join(diff)
                )
        return problems

    def _label_values(self, case_id: str, label: Path) -> list[str]:
        try:
            array = read_image(label).array
        except VolsegError as e:
            return [f"case {case_id}: label unreadable: {e}"]
        if array.ndim != 3:
            return [f"case {case_id}: label {label} has {array.shape[0]} channels; it must be 3D"]
        values = np.unique(array).astype(np.float64)
        problems = []
        fractional = values[values != np.round(values)]
        if fractional.size:
            problems.append(
                f"case {case_id}: label {label} has non-integer values {_list(fractional)}"
            )
        unknown = [v for v in values[values == np.round(values)] if int(v) not in self.labels]
        if unknown:
            problems.append(
                f"case {case_id}: label {label} has values {_list(np.array(unknown))} not in "
                f"the label map {dict(sorted(self.manifest.labels.items()))}"
            )
        return problems

    @property
    def labels(self) -> dict[int, str]:
        return self.manifest.labels


def _id_problem(case_id: str) -> str:
    """Why ``case_id`` cannot name an output file (``../x``, ``/abs``, ``""``), or ``""``."""
    try:
        case_file_name(case_id)
    except VolsegError as e:
        return str(e)
    return ""


def _list(values: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit].tolist())
    return shown + (f", ... ({values.size} in all)" if values.size > limit else "")
