"""The files a cohort writes: their names, and the checks made before any is written.

``--output`` is a folder, or, for an input of one volume, the label-map file itself when it
ends in an image extension (``seg.nii.gz``, ``seg.nrrd``: the extension sets the format) or,
for a DICOM series, in ``.dcm`` (``seg.dcm``: a DICOM-SEG; :func:`output_file`,
:func:`file_format`).

Case ids become output file names only through :func:`volseg.io.case_file_name`
(:func:`output_paths`), and :func:`check_outputs` refuses a cohort whose outputs would land
on a file it reads, before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from volseg.errors import VolsegError
from volseg.io import case_file_name, refuse_overwrite
from volseg.io.names import DICOM_SLICE, split_extension

if TYPE_CHECKING:
    from volseg.inference.cases import CaseSpec

OUTPUT_FORMATS = ("nii.gz", "nii", "nrrd", "mha", "same", "dicom-seg")


def output_file(output: Path) -> bool:
    """Whether ``--output`` names a label-map file: an image extension, or ``.dcm`` (a
    DICOM-SEG), and not a folder."""
    return bool(_label_map_name(output.name)[1]) and not output.is_dir()


def file_format(output: Path, output_format: str) -> str:
    """The format a label-map file ``--output`` (:func:`output_file`) is written in:
    ``dicom-seg`` for ``seg.dcm`` (``--format`` need not say it); for an image extension the
    extension decides the format and ``output_format`` is returned as given.

    Raises:
        VolsegError: ``--format dicom-seg`` with an image extension.
    """
    if output.name.lower().endswith(DICOM_SLICE):
        return "dicom-seg"
    if output_format == "dicom-seg":
        raise VolsegError(
            f"--output {output}: --format dicom-seg writes a DICOM file; name it "
            f"{_label_map_name(output.name)[0]}.dcm, or pass an output folder"
        )
    return output_format


def check_output_file(output: Path, source: Path, output_format: str) -> None:
    """Refuse a label-map file ``output`` (:func:`output_file`) that cannot be written for the
    one volume ``source``: a DICOM-SEG (``seg.dcm``) needs a DICOM series, and must not land
    in the series' own folder (it would read as one more slice of it).

    Raises:
        VolsegError: naming ``--output`` and what to do.
    """
    if file_format(output, output_format) != "dicom-seg":
        return
    if split_extension(source.name)[1]:
        raise VolsegError(
            f"--output {output} is a DICOM-SEG, which needs a DICOM series as --input; "
            f"{source} is an image file (name the output {_label_map_name(output.name)[0]}"
            ".nii.gz)"
        )
    series = source.parent if source.is_file() else source
    if output.parent.resolve() == series.resolve():
        raise VolsegError(
            f"--output {output} would become a slice of the series it segments ({series}); "
            "write it outside that folder"
        )


def output_suffix(spec: CaseSpec, output_format: str) -> str:
    """Extension of a case's label map: ``.<format>``, the input's for ``same``, ``.dcm`` for
    ``dicom-seg``."""
    if output_format == "same":
        return spec.suffix or ".nii.gz"
    if output_format == "dicom-seg":
        return ".dcm"
    return f".{output_format}"


def output_paths(spec: CaseSpec, output: Path, output_format: str) -> tuple[Path, Path]:
    """The label map and probabilities files of a case in ``output``.

    With ``dicom-seg`` the probabilities go to ``<case>_probs.nii.gz`` (a binary SEG holds no
    class probabilities).

    When ``output`` is a label-map file (:func:`output_file`) it is the label map, in the
    format its extension names, and the probabilities go next to it as ``<name>_probs<ext>``
    (``<name>_probs.nii.gz`` next to ``<name>.dcm``).

    Raises:
        VolsegError: a case id that would name a file outside ``output``.
    """
    if output_file(output):
        stem, suffix = _label_map_name(output.name)
        suffix = ".nii.gz" if suffix.lower() == DICOM_SLICE else suffix
        return output, output.with_name(f"{stem}_probs{suffix}")
    suffix = output_suffix(spec, output_format)
    name = case_file_name(spec.id, suffix, source=spec.origin)
    probs_suffix = ".nii.gz" if output_format == "dicom-seg" else suffix
    probs = case_file_name(spec.id, f"_probs{probs_suffix}", source=spec.origin)
    return output / name, output / probs


def check_outputs(
    cases: Sequence[CaseSpec],
    output: Path,
    output_format: str,
    *,
    label_maps: bool,
    probabilities: bool,
    tables: Iterable[str],
) -> None:
    """Refuse, before anything is written, a cohort whose outputs could harm a file.

    Every case id must make a plain file name (:func:`volseg.io.case_file_name`), no two
    outputs may share a name, and no output may replace a file the cohort reads or its
    manifest references (images, labels, masks, the manifest itself). ``dicom-seg`` needs
    every case's input to be a DICOM series, and highdicom.

    Args:
        cases: the cohort.
        output: the output folder.
        output_format: as for :func:`output_paths`.
        label_maps: the cohort writes a label map per case (segmentation).
        probabilities: ... and a probabilities file per case.
        tables: names of the tables written into ``output``.

    Raises:
        VolsegError: naming the case id or the file.
    """
    if output_format == "dicom-seg" and label_maps:
        from volseg.io.dicom_seg import require_dicom_series, require_highdicom

        for spec in cases:
            require_dicom_series(spec.input)
        require_highdicom()
    planned: dict[Path, str] = {}
    for spec in cases:
        labels, probs = output_paths(spec, output, output_format)
        for path in [labels] * label_maps + [probs] * probabilities:
            if path in planned:
                raise VolsegError(
                    f"{path}: cases {planned[path]!r} and {spec.id!r} would both write this "
                    "file; rename one of them"
                )
            planned[path] = spec.id
    outputs = [*planned, *(output / name for name in tables)]
    protected = {path: what for spec in cases for path, what in spec.files}
    refuse_overwrite(outputs, protected, "choose another --output folder")


def _label_map_name(name: str) -> tuple[str, str]:
    """``name`` split into stem and extension as a label-map file: an image extension, or
    ``.dcm`` for a DICOM-SEG; ``(name, "")`` for neither."""
    stem, suffix = split_extension(name)
    if not suffix and name.lower().endswith(DICOM_SLICE):
        return name[: -len(DICOM_SLICE)], name[-len(DICOM_SLICE) :]
    return stem, suffix
