"""Predict a cohort: predict each case, time each step, survive broken cases and full disks.

The cases come from :func:`~volseg.inference.cases.discover_cases` (a file, a DICOM folder, a
folder of cases or a manifest). Before anything is written, every output name is checked
(:func:`~volseg.inference.outputs.check_outputs`: no case id may leave the output folder, no
output may replace a file the input references) and the output folder is checked to accept
files.

Outputs in ``OUTPUT`` (all written atomically, temporary file + rename, so Ctrl-C or a crash
never leaves a half-written file):

- segmentation: ``<case_id>.nii.gz`` label maps with the input's exact geometry (``--format``
  picks another extension; ``dicom-seg`` writes ``<case_id>.dcm``, a DICOM-SEG over the source
  series, see :mod:`volseg.io.dicom_seg`); with ``save_probs`` also ``<case_id>_probs.nii.gz``,
  the class probabilities ``(K, X, Y, Z)`` rounded to float16 (stored as float32: NIfTI, NRRD and
  MetaImage have no float16 type);
- grading: ``predictions.csv`` and ``predictions.json``;
- ``timings.csv``: per case ``status`` (``ok``, ``skipped``, ``failed``), seconds spent in
  ``read, preprocess, encode, head, postprocess, write`` and in ``total``, and the ``error``.

Tables are rewritten after every case (:mod:`volseg.inference.tables`), so an interrupted run
keeps what it finished. A case that fails is recorded and the others continue; so do the
cases after a table that could not be written. ``skip_existing`` skips a case only when its
outputs read back completely. Under ``torchrun`` (``WORLD_SIZE > 1``) rank ``r`` takes cases
``r::WORLD_SIZE`` and writes ``timings_rank{r}.csv`` (and ``predictions_rank{r}.json``); after
a barrier rank 0 merges them into the tables above.

With ``prefetch`` (default: on for a CUDA device) a background thread reads and preprocesses
the next case while the current one runs (:mod:`volseg.inference.prefetch`); the outputs and
tables are the same as without it.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from volseg.errors import VolsegError
from volseg.inference.api import as_predictor
from volseg.inference.cases import CaseSpec, check_request, discover_cases
from volseg.inference.ensemble import Ensemble
from volseg.inference.memory import peak_memory
from volseg.inference.outputs import (
    OUTPUT_FORMATS,
    check_outputs,
    file_format,
    output_file,
    output_paths,
)
from volseg.inference.predict import (
    GradeResult,
    InferenceOptions,
    Predictor,
    SegmentationResult,
    StepTimer,
)
from volseg.inference.prefetch import Staged, prefetch_wanted, prefetched, stage_case
from volseg.inference.tables import (
    STEPS,
    TABLE_NAMES,
    TIMING_COLUMNS,
    grade_record,
    merge_ranks,
    rank_table_names,
    read_predictions,
    write_tables,
)
from volseg.io import output_folder, read_image, write_like
from volseg.io.dicom_seg import read_dicom_seg_check, write_dicom_seg
from volseg.progress import bars_wanted, new_progress
from volseg.runtime import init_distributed, patient_barrier

__all__ = ["TIMING_COLUMNS", "CaseSpec", "CohortResult", "discover_cases", "predict_cohort"]

log = logging.getLogger(__name__)


@dataclass
class CohortResult:
    """What a cohort run did (on rank 0 of a multi-process run: all ranks, merged).

    Attributes:
        output: the output folder, or the label-map file of a one-volume input.
        rows: one :data:`TIMING_COLUMNS` row per case, in input order.
        table_error: why ``timings.csv`` (or the predictions tables) could not be written at
            the end, or ``""``.
        tables: whether ``timings.csv`` (and the predictions tables) were written; not for
            a label-map file as output.
    """

    output: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    table_error: str = ""
    tables: bool = True

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when every case was predicted or skipped and the tables written, else 1."""
        return 1 if self.failed or self.table_error else 0


def predict_cohort(
    model: Predictor | Ensemble | nn.Module | str | Path | Mapping[str, Any] | Sequence[Any],
    inputs: str | Path,
    output: str | Path,
    *,
    options: InferenceOptions | None = None,
    save_probs: bool = False,
    output_format: str = "nii.gz",
    skip_existing: bool = False,
    progress: bool = True,
    prefetch: bool | None = None,
) -> CohortResult:
    """Predict every case of ``inputs`` into ``output`` (see the module docstring).

    Args:
        model: checkpoint file, run folder, checkpoint dict, :class:`Predictor` or model; a
            list of several: an :class:`~volseg.inference.ensemble.Ensemble`.
        inputs: file, DICOM folder, folder of cases, or manifest.
        output: output folder (created), or for one volume the label-map file (an image
            extension: ``seg.nii.gz``; the extension decides its format, probabilities go
            to ``seg_probs.nii.gz``, no tables are written); for a DICOM series also
            ``seg.dcm``, a DICOM-SEG (``output_format`` ``dicom-seg`` implied).
        options: window, TTA, device settings; None fields from the checkpoint config.
        save_probs: also write the class probabilities (segmentation).
        output_format: one of :data:`OUTPUT_FORMATS`; ``same`` keeps the input's extension
            (``.nii.gz`` for DICOM input).
        skip_existing: keep cases whose outputs already exist and read back whole (resume a
            cohort).
        progress: show a progress bar (rank 0).
        prefetch: read and preprocess the next case on a background thread while the current
            one runs (one case ahead); None: on when the model runs on CUDA. A case's
            ``total`` is then still its own seconds: its preparation (timed on that thread)
            plus its turn on the main thread, less any wait there for the preparation to
            finish; the sum of ``total`` over cases exceeds the run's wall time by the
            overlap gained.

    Returns:
        The :class:`CohortResult`; its ``exit_code`` is 1 if any case failed or the tables
        could not be written.

    Raises:
        VolsegError: bad checkpoint, input or option, a case id that would leave ``output``,
            an output over a file the input references, or an output folder that cannot be
            written (all before anything is written).
        KeyboardInterrupt: passed on after the current write is rolled back.
    """
    if output_format not in OUTPUT_FORMATS:
        raise VolsegError(f"output format {output_format!r} is not one of {OUTPUT_FORMATS}")
    output = Path(output)
    models = model if isinstance(model, list | tuple) else [model]
    check_request(models, inputs, output, output_format)
    single = output_file(output)
    if single:  # seg.dcm is a DICOM-SEG; an image extension sets the format itself
        output_format = file_format(output, output_format)
    ctx = init_distributed()
    rank, world, barrier = ctx.rank, ctx.world_size, patient_barrier(ctx)
    options = options or InferenceOptions()
    if options.device is None and world > 1 and torch.cuda.is_available():
        options = replace(options, device=str(ctx.device))
    predictor = as_predictor(model, options=options)
    cases = discover_cases(inputs, predictor.modalities, exclude=[output])
    grading = predictor.task != "segmentation"
    if single and grading:
        raise VolsegError(
            f"--output {output}: {predictor.name} grades cases into predictions.csv and "
            "predictions.json; pass an output folder"
        )
    tables = [] if single else [*TABLE_NAMES, *rank_table_names(world)]
    check_outputs(
        cases,
        output,
        output_format,
        label_maps=not grading,
        probabilities=save_probs and not grading,
        tables=tables,
    )
    output_folder(output.parent if single else output)
    previous = read_predictions(output / "predictions.json") if grading and skip_existing else {}
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    table_rank = rank if world > 1 else None
    problem = ""
    background = prefetch_wanted(prefetch, predictor.device)
    log.debug("prefetch %s", "on" if background else "off")

    def done(spec: CaseSpec) -> bool:
        return skip_existing and _done(predictor, spec, output, save_probs, output_format, previous)

    def stage(spec: CaseSpec) -> Staged:  # the CPU timer on the thread: it never syncs CUDA
        timer = StepTimer(None if background else predictor.device)
        return stage_case(predictor, spec, done=done, timer=timer)

    mine = cases[rank::world]
    with _progress(progress and rank == 0) as bar:
        task = bar.add_task("predicting", total=len(mine))
        for spec, take in prefetched(stage, mine, background=background):
            bar.update(task, description=spec.id)
            row, record = _run_case(
                predictor, spec, take, output, save_probs, output_format, previous
            )
            if row["status"] == "failed":
                bar.console.print(f"[red]failed[/red] {spec.id}: {row['error']}")
            rows.append(row)
            if record is not None:
                records.append(record)
            if single:  # the label map is the whole output
                bar.advance(task)
                continue
            reported, problem = problem, write_tables(output, rows, records, predictor, table_rank)
            if problem and problem != reported:
                bar.console.print(f"[red]table not written[/red] {problem}")
            bar.advance(task)
    if world > 1:
        barrier()
        if rank == 0 and not single:
            rows, records, problem = merge_ranks(output, world, [c.id for c in cases], predictor)
    return CohortResult(output, rows, problem, tables=not single)


def _run_case(
    predictor: Predictor,
    spec: CaseSpec,
    take: Callable[[], Staged],
    output: Path,
    save_probs: bool,
    output_format: str,
    previous: Mapping[str, dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Predict and write one case; a failure becomes a ``failed`` row, not an exception.

    ``take()`` gives the case skipped or prepared: prepared there and then, or by the
    background thread (waited for). ``total`` leaves that wait out and adds the preparation's
    own seconds, so it means the same with and without prefetch.
    """
    row: dict[str, Any] = {"case_id": spec.id, "status": "ok", "error": ""}
    labels_path, probs_path = output_paths(spec, output, output_format)
    timer = StepTimer(predictor.device)
    record, staged, waited = None, Staged(), 0.0
    start = time.perf_counter()
    try:
        with peak_memory(predictor.device) as peak:
            staged = take()
            waited = time.perf_counter() - start
            if staged.skipped:
                row["status"] = "skipped"
                grading = predictor.task != "segmentation"
                return row, dict(previous[spec.id]) if grading else None
            result = predictor.run(staged.pop(), timer=timer, probabilities=save_probs)
        row["peak_memory_mb"] = round(peak["mb"], 1)
        with timer("write"):
            if isinstance(result, SegmentationResult):
                if output_format == "dicom-seg":
                    _write_dicom_seg(predictor, spec, result.labels, labels_path)
                else:
                    write_like(result.labels.array, result.labels, labels_path, label=True)
                if save_probs and result.probabilities is not None:
                    probs = result.probabilities.astype(np.float32)  # no float16 in NIfTI
                    write_like(probs, result.labels, probs_path)
            else:
                assert isinstance(result, GradeResult)
                record = grade_record(spec.id, result)
    except Exception as error:  # a broken case must not stop the cohort; Ctrl-C still does
        row["status"] = "failed"
        row["error"] = _one_line(error)
        log.info("case %s failed: %s", spec.id, row["error"])
        log.debug("case %s traceback:\n%s", spec.id, traceback.format_exc())
    for step in STEPS:
        seconds = timer.seconds.get(step, 0.0) + staged.timer.seconds.get(step, 0.0)
        row[step] = round(seconds, 3)
    row["total"] = round(staged.seconds + time.perf_counter() - start - waited, 3)
    return row, record


def _done(
    predictor: Predictor,
    spec: CaseSpec,
    output: Path,
    save_probs: bool,
    output_format: str,
    previous: Mapping[str, dict[str, Any]],
) -> bool:
    """Whether ``skip_existing`` keeps the case: its outputs (or grade) exist and read back."""
    if predictor.task != "segmentation":
        return spec.id in previous
    labels_path, probs_path = output_paths(spec, output, output_format)
    return _complete(labels_path) and (not save_probs or _complete(probs_path))


def _complete(path: Path) -> bool:
    """Whether an earlier output reads back whole (a 0-byte or cut-off file is redone)."""
    if not path.exists():
        return False
    try:
        read_dicom_seg_check(path) if path.suffix.lower() == ".dcm" else read_image(path)
    except VolsegError as e:
        log.info("%s: redoing the case, its output is incomplete (%s)", path, e)
        return False
    return True


def _write_dicom_seg(predictor: Predictor, spec: CaseSpec, labels: Any, path: Path) -> None:
    """The label map as a DICOM-SEG over the case's source series, one segment per label the
    model writes (``roi_subset`` ones only), named from its checkpoint."""
    config = predictor.config
    keep = predictor.roi_values
    names = {v: n for v, n in predictor.label_names.items() if keep is None or v in keep}
    parameters = {
        "model": str(predictor.name),
        "encoder": config.model.encoder.name,
        "head": config.model.head.name,
    }
    background = (predictor.label_values or [0])[0]
    write_dicom_seg(
        labels,
        spec.input,
        path,
        label_names=names or None,
        background=background,
        algorithm=config.name,
        parameters=parameters,
    )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, VolsegError):
        text = f"{type(error).__name__}: {text}"
    if "out of memory" in text.lower():
        text += " (try --stitch-device cpu, a smaller --chunk, --sw-batch-size or --roi-slices)"
    return text[:500]


def _progress(show: bool) -> Any:
    """The cohort's bar; drawn only for a terminal (:func:`volseg.progress.bars_wanted`). Its
    console still prints failed cases as they happen when ``show``."""
    from rich.console import Console

    return new_progress(
        transient=False,
        console=Console(stderr=True, quiet=not show),
        disable=not (show and bars_wanted()),
    )
