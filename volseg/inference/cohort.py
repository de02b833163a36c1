"""Predict a cohort: find its cases, predict each, time each step, survive broken cases.

Inputs (:func:`discover_cases`):

- a **file** (NIfTI, NRRD, MetaImage) or a **DICOM series folder**: one case;
- a **folder**: every image file in it and every sub-folder (a DICOM series) is a case. Files
  named the nnU-Net way, ``{case}_{XXXX}.nii.gz``, are grouped into one case with modality
  ``XXXX`` (for a one-modality model ``_0000`` is simply dropped from the id). Hidden files,
  other files, and the output folder are skipped;
- a **manifest** (volseg JSON, MSD/nnU-Net ``dataset.json`` or its folder, classification
  CSV): all its cases, labelled and test, with their modalities and masks by name.

Case ids are file names without extension (DICOM: the folder name), or the manifest's ids.

Outputs in ``OUTPUT`` (all written atomically, temporary file + rename, so Ctrl-C or a crash
never leaves a half-written file):

- segmentation: ``<case_id>.nii.gz`` label maps with the input's exact geometry (``--format``
  picks another extension); with ``save_probs`` also ``<case_id>_probs.nii.gz``, the class
  probabilities ``(K, X, Y, Z)`` rounded to float16 (stored as float32: NIfTI, NRRD and
  MetaImage have no float16 type);
- grading: ``predictions.csv`` and ``predictions.json``;
- ``timings.csv``: per case ``status`` (``ok``, ``skipped``, ``failed``), seconds spent in
  ``read, preprocess, encode, head, postprocess, write`` and in ``total``, and the ``error``.

Tables are rewritten after every case, so an interrupted run keeps what it finished. A case
that fails is recorded and the others continue. Under ``torchrun`` (``WORLD_SIZE > 1``) rank
``r`` takes cases ``r::WORLD_SIZE`` and writes ``timings_rank{r}.csv`` (and
``predictions_rank{r}.json``); after a barrier rank 0 merges them into the tables above.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from volseg.errors import VolsegError
from volseg.inference.memory import peak_memory
from volseg.inference.predict import (
    GradeResult,
    InferenceOptions,
    Predictor,
    SegmentationResult,
    Source,
    StepTimer,
    as_predictor,
)
from volseg.io import atomic_path, write_like
from volseg.io.read import FORMATS

log = logging.getLogger(__name__)

STEPS = ("read", "preprocess", "encode", "head", "postprocess", "write")
TIMING_COLUMNS = ("case_id", "status", *STEPS, "total", "peak_memory_mb", "error")
OUTPUT_FORMATS = ("nii.gz", "nii", "nrrd", "mha", "same")
MANIFEST_NAMES = ("dataset.json", "manifest.json")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_SUFFIXES = sorted(FORMATS, key=len, reverse=True)  # .nii.gz before .nii


@dataclass(frozen=True)
class CaseSpec:
    """One case to predict.

    Attributes:
        id: case id; names the outputs.
        sources: one source per model modality (None: missing), or a single volume.
        mask: optional region mask (grading).
        input: the file or folder named in messages (the first present source).
        suffix: the input's extension (``""`` for DICOM), for ``output_format="same"``.
    """

    id: str
    sources: Source | tuple[Source | None, ...]
    input: Path
    suffix: str = ""
    mask: Path | None = None


@dataclass
class CohortResult:
    """What a cohort run did (on rank 0 of a multi-process run: all ranks, merged).

    Attributes:
        output: the output folder.
        rows: one :data:`TIMING_COLUMNS` row per case, in input order.
    """

    output: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when every case was predicted or skipped, 1 when any failed."""
        return 1 if self.failed else 0


def discover_cases(
    path: str | Path, modalities: Sequence[str], *, exclude: Sequence[Path] = ()
) -> list[CaseSpec]:
    """The cases of a file, DICOM folder, folder of cases, or manifest (module docstring).

    Args:
        path: what ``--input`` names.
        modalities: the model's modality names (manifest cases are matched by name).
        exclude: folders never taken for cases (the output folder).

    Raises:
        VolsegError: missing input, an empty folder, a manifest without the model's
            modalities, or two cases with one id.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise VolsegError(
            f"{path}: no such file or folder; pass an image file, a DICOM folder, a folder of "
            "images or a manifest"
        )
    if path.is_file():
        if path.suffix.lower() in (".json", ".csv"):
            cases = _manifest_cases(path, modalities)
        elif path.name.lower().endswith(".dcm"):
            cases = [_dicom_case(path.parent)]
        else:
            cases = [_file_case(path)]
    elif any((path / name).is_file() for name in MANIFEST_NAMES):
        cases = _manifest_cases(path, modalities)
    else:
        cases = _folder_cases(path, modalities, {p.resolve() for p in exclude})
    ids = [c.id for c in cases]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise VolsegError(
            f"{path}: several inputs give the case ids {repeated[:5]}; outputs are named by "
            "case id, so rename the files"
        )
    return cases


def predict_cohort(
    model: Predictor | nn.Module | str | Path | Mapping[str, Any],
    inputs: str | Path,
    output: str | Path,
    *,
    options: InferenceOptions | None = None,
    save_probs: bool = False,
    output_format: str = "nii.gz",
    skip_existing: bool = False,
    progress: bool = True,
) -> CohortResult:
    """Predict every case of ``inputs`` into ``output`` (see the module docstring).

    Args:
        model: checkpoint file, run folder, checkpoint dict, :class:`Predictor` or model.
        inputs: file, DICOM folder, folder of cases, or manifest.
        output: output folder (created).
        options: window, TTA, device settings; None fields from the checkpoint config.
        save_probs: also write the class probabilities (segmentation).
        output_format: one of :data:`OUTPUT_FORMATS`; ``same`` keeps the input's extension
            (``.nii.gz`` for DICOM input).
        skip_existing: keep cases whose outputs already exist (resume a cohort).
        progress: show a progress bar (rank 0).

    Returns:
        The :class:`CohortResult`; its ``exit_code`` is 1 if any case failed.

    Raises:
        VolsegError: bad checkpoint, input or option (before any case runs).
        KeyboardInterrupt: passed on after the current write is rolled back.
    """
    if output_format not in OUTPUT_FORMATS:
        raise VolsegError(f"output format {output_format!r} is not one of {OUTPUT_FORMATS}")
    rank, world, local_rank, barrier = _distributed()
    options = options or InferenceOptions()
    if options.device is None and world > 1 and torch.cuda.is_available():
        options = replace(options, device=f"cuda:{local_rank}")
    predictor = as_predictor(model, options=options)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    cases = discover_cases(inputs, predictor.modalities, exclude=[output])
    _check_no_overwrite(cases, output, output_format)
    grading = predictor.task != "segmentation"
    previous = _read_predictions(output / "predictions.json") if grading and skip_existing else {}
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    names = (f"timings_rank{rank}.csv", f"predictions_rank{rank}.json") if world > 1 else None
    with _progress(progress and rank == 0) as bar:
        task = bar.add_task("predicting", total=len(cases[rank::world]))
        for spec in cases[rank::world]:
            bar.update(task, description=spec.id)
            row, record = _run_case(
                predictor, spec, output, save_probs, output_format, skip_existing, previous
            )
            if row["status"] == "failed":
                bar.console.print(f"[red]failed[/red] {spec.id}: {row['error']}")
            rows.append(row)
            if record is not None:
                records.append(record)
            _write_tables(output, rows, records, predictor, names)
            bar.advance(task)
    if world > 1:
        barrier()
        if rank == 0:
            rows, records = _merge_ranks(output, world, [c.id for c in cases], predictor)
    return CohortResult(output, rows)


def _run_case(
    predictor: Predictor,
    spec: CaseSpec,
    output: Path,
    save_probs: bool,
    output_format: str,
    skip_existing: bool,
    previous: Mapping[str, dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Predict and write one case; a failure becomes a ``failed`` row, not an exception."""
    row: dict[str, Any] = {"case_id": spec.id, "status": "ok", "error": ""}
    suffix = output_suffix(spec, output_format)
    labels_path = output / f"{spec.id}{suffix}"
    probs_path = output / f"{spec.id}_probs{suffix}"
    grading = predictor.task != "segmentation"
    if skip_existing:
        done = (
            spec.id in previous
            if grading
            else labels_path.exists() and (probs_path.exists() or not save_probs)
        )
        if done:
            row["status"] = "skipped"
            return row, dict(previous[spec.id]) if grading else None
    timer = StepTimer(predictor.device)
    record = None
    start = time.perf_counter()
    try:
        with peak_memory(predictor.device) as peak:
            result = predictor.predict(
                spec.sources, mask=spec.mask, timer=timer, probabilities=save_probs
            )
        row["peak_memory_mb"] = round(peak["mb"], 1)
        with timer("write"):
            if isinstance(result, SegmentationResult):
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
        row[step] = round(timer.seconds.get(step, 0.0), 3)
    row["total"] = round(time.perf_counter() - start, 3)
    return row, record


def _check_no_overwrite(cases: list[CaseSpec], output: Path, output_format: str) -> None:
    """Refuse an output folder where a prediction would replace one of the inputs."""
    inputs = {c.input.resolve() for c in cases}
    for spec in cases:
        suffix = output_suffix(spec, output_format)
        for name in (f"{spec.id}{suffix}", f"{spec.id}_probs{suffix}"):
            if (output / name).resolve() in inputs:
                raise VolsegError(
                    f"{output / name}: the prediction would overwrite an input; choose "
                    "another --output folder"
                )


def output_suffix(spec: CaseSpec, output_format: str) -> str:
    """Extension of a case's outputs: ``.<format>``, or the input's for ``same``."""
    if output_format == "same":
        return spec.suffix or ".nii.gz"
    return f".{output_format}"


def grade_record(case_id: str, result: GradeResult) -> dict[str, Any]:
    """The ``predictions.json`` entry of one graded case."""
    return {
        "case_id": case_id,
        "probabilities": {k: round(float(v), 6) for k, v in result.probabilities.items()},
        "predicted": result.predicted,
        "modalities_used": list(result.modalities_used),
        "modality_attention": {k: round(v, 6) for k, v in result.modality_attention.items()},
        "top_slices": {k: list(v) for k, v in result.top_slices.items()},
        "top_slices_axis": dict(result.slice_axis),
    }


def _write_tables(
    output: Path,
    rows: list[dict[str, Any]],
    records: list[dict[str, Any]],
    predictor: Predictor,
    rank_names: tuple[str, str] | None,
) -> None:
    if rank_names is not None:  # one rank of several: rank 0 merges at the end
        _write_csv(output / rank_names[0], rows, TIMING_COLUMNS)
        if predictor.task != "segmentation":
            _write_json(output / rank_names[1], records)
        return
    _write_csv(output / "timings.csv", rows, TIMING_COLUMNS)
    if predictor.task != "segmentation":
        _write_predictions(output, records, predictor)


def _write_predictions(output: Path, records: list[dict[str, Any]], predictor: Predictor) -> None:
    classes = predictor.classes or sorted({k for r in records for k in r["probabilities"]})
    doc = {
        "classes": classes,
        "modalities": predictor.modalities,
        "slice_axis": predictor.config.model.encoder.slice_axis,
        "top_slices_index_space": "input file voxel index along top_slices_axis",
        "cases": records,
    }
    _write_json(output / "predictions.json", doc)
    columns = [
        "case_id",
        *(f"prob_{c}" for c in classes),
        "predicted",
        "modalities_used",
        *(f"top_slices_{m}" for m in predictor.modalities),
    ]
    table = []
    for r in records:
        row = {"case_id": r["case_id"], "predicted": r["predicted"]}
        row.update({f"prob_{c}": r["probabilities"].get(c, "") for c in classes})
        row["modalities_used"] = ";".join(r["modalities_used"])
        for m in predictor.modalities:
            row[f"top_slices_{m}"] = ";".join(str(i) for i in r["top_slices"].get(m, []))
        table.append(row)
    _write_csv(output / "predictions.csv", table, columns)


def _read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        cases = json.loads(path.read_text())["cases"]
        return {r["case_id"]: r for r in cases}
    except (ValueError, KeyError, TypeError) as e:
        raise VolsegError(
            f"{path}: cannot read the earlier predictions ({e}); delete it or drop --skip-existing"
        ) from None


def _merge_ranks(
    output: Path, world: int, order: list[str], predictor: Predictor
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rank 0: merge the per-rank tables into ``timings.csv`` (and predictions), in input order."""
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for r in range(world):
        timings = output / f"timings_rank{r}.csv"
        if timings.is_file():
            with open(timings, newline="") as f:
                rows += list(csv.DictReader(f))
        preds = output / f"predictions_rank{r}.json"
        if preds.is_file():
            records += json.loads(preds.read_text())
    for row in rows:  # back to numbers, as a single process keeps them
        row.update({k: float(row[k]) for k in (*STEPS, "total") if row.get(k)})
    position = {case_id: i for i, case_id in enumerate(order)}
    rows.sort(key=lambda row: position.get(row["case_id"], len(order)))
    records.sort(key=lambda rec: position.get(rec["case_id"], len(order)))
    _write_tables(output, rows, records, predictor, None)
    for r in range(world):
        for name in (f"timings_rank{r}.csv", f"predictions_rank{r}.json"):
            (output / name).unlink(missing_ok=True)
    return rows, records


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _write_json(path: Path, doc: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, VolsegError):
        text = f"{type(error).__name__}: {text}"
    if "out of memory" in text.lower():
        text += " (try --stitch-device cpu, a smaller --chunk, --sw-batch-size or --roi-slices)"
    return text[:500]


# --- finding cases ----------------------------------------------------------------------------


def _split_suffix(name: str) -> tuple[str, str]:
    lower = name.lower()
    for suffix in _SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ""


def _file_case(path: Path) -> CaseSpec:
    stem, suffix = _split_suffix(path.name)
    if not suffix:
        raise VolsegError(
            f"{path}: not an image volseg reads (NIfTI, NRRD, MetaImage, a DICOM folder) nor "
            "a manifest (.json, .csv)"
        )
    return CaseSpec(stem, path, path, suffix)


def _dicom_case(folder: Path) -> CaseSpec:
    return CaseSpec(folder.name, folder, folder, "")


def _folder_cases(folder: Path, modalities: Sequence[str], exclude: set[Path]) -> list[CaseSpec]:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    images = [p for p in entries if p.is_file() and _split_suffix(p.name)[1]]
    folders = [p for p in entries if p.is_dir() and p.resolve() not in exclude]
    if not images and not folders:
        if any(p.is_file() for p in entries):
            return [_dicom_case(folder)]  # slices of one DICOM series
        raise VolsegError(f"{folder}: folder holds no images; pass files, a folder or a manifest")
    skipped = [p.name for p in entries if p.is_file() and p not in images]
    if skipped:
        log.info("%s: skipping %d non-image files (%s...)", folder, len(skipped), skipped[0])
    stems = [_split_suffix(p.name)[0] for p in images]
    matches = [_CHANNEL.match(s) for s in stems]
    grouped = images and all(matches) and (len(modalities) > 1 or _all_zero(matches))
    cases = _grouped_cases(images, matches) if grouped else [_file_case(p) for p in images]
    return cases + [_dicom_case(p) for p in folders]


def _all_zero(matches: list[re.Match[str] | None]) -> bool:
    return all(m is not None and m["channel"] == "0000" for m in matches)


def _grouped_cases(images: list[Path], matches: list[re.Match[str] | None]) -> list[CaseSpec]:
    """nnU-Net naming: ``{case}_{XXXX}{ext}`` files are the modalities ``XXXX`` of ``case``."""
    by_case: dict[str, dict[int, Path]] = {}
    for path, match in zip(images, matches, strict=True):
        assert match is not None
        by_case.setdefault(match["case"], {})[int(match["channel"])] = path
    cases = []
    for case_id, channels in by_case.items():
        sources = tuple(channels.get(c) for c in range(max(channels) + 1))
        first = channels[min(channels)]
        cases.append(CaseSpec(case_id, sources, first, _split_suffix(first.name)[1]))
    return cases


def _manifest_cases(path: Path, modalities: Sequence[str]) -> list[CaseSpec]:
    from volseg.data import load_manifest

    manifest = load_manifest(path)
    if not set(modalities) & set(manifest.modalities):
        raise VolsegError(
            f"{manifest.source}: modalities {manifest.modalities} include none of the model's "
            f"{list(modalities)}; name them as the model was trained"
        )
    cases = []
    for case in manifest.cases + manifest.test_cases:
        sources = tuple(case.images.get(m) for m in modalities)
        first = next((s.path for s in sources if s is not None), None)
        if first is None:  # none of the model's modalities: let the case fail with a message
            first = next(iter(case.images.values())).path
        suffix = _split_suffix(first.name)[1] if first.is_file() else ""
        cases.append(CaseSpec(case.id, sources, first, suffix, case.mask))
    return cases


# --- several processes ----------------------------------------------------------------------


def _distributed() -> tuple[int, int, int, Any]:
    """``(rank, world_size, local_rank, barrier)`` from torchrun's environment.

    The default group uses NCCL on CUDA and gloo on CPU; the final barrier runs in a gloo group
    with a long timeout, since ranks may finish hours apart and prediction needs no other
    collective (an NCCL barrier would be killed by its watchdog).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, lambda: None
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    group = dist.new_group(backend="gloo", timeout=timedelta(days=7))
    return dist.get_rank(), dist.get_world_size(), local_rank, lambda: dist.barrier(group)


def _progress(show: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description:<24}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True, quiet=not show),
        disable=not show,
    )
