"""The tables of a cohort run: ``timings.csv``, and for grading ``predictions.csv``/``.json``.

Tables are rewritten after every case, atomically, so an interrupted run keeps what it
finished. A table that cannot be written (disk full, read-only folder, a file name that is not
valid UTF-8) never stops the cohort: :func:`write_tables` returns the one-line reason, the
next case tries again, and the run reports it at the end. The bytes of a file name that is not
UTF-8 are written as backslash escapes (``scan_\\xff``) rather than failing.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from volseg.errors import VolsegError
from volseg.inference.predict import GradeResult, Predictor
from volseg.io import atomic_path

STEPS = ("read", "preprocess", "encode", "head", "postprocess", "write")
TIMING_COLUMNS = ("case_id", "status", *STEPS, "total", "peak_memory_mb", "error")
TABLE_NAMES = ("timings.csv", "predictions.csv", "predictions.json")


def rank_table_names(world: int) -> list[str]:
    """The per-rank tables of a ``torchrun`` cohort (merged by rank 0, then removed)."""
    return [f"{kind}_rank{r}.{ext}" for r in range(world) for kind, ext in _RANK_KINDS]


_RANK_KINDS = (("timings", "csv"), ("predictions", "json"))


def grade_record(case_id: str, result: GradeResult) -> dict[str, Any]:
    """The ``predictions.json`` entry of one graded case."""
    return {
        "case_id": case_id,
        "probabilities": {k: round(float(v), 6) for k, v in result.probabilities.items()},
        "predicted": result.predicted,
        "temperature": round(float(result.temperature), 6),
        "modalities_used": list(result.modalities_used),
        "modality_attention": {k: round(v, 6) for k, v in result.modality_attention.items()},
        "top_slices": {k: list(v) for k, v in result.top_slices.items()},
        "top_slices_axis": dict(result.slice_axis),
    }


def write_tables(
    output: Path,
    rows: list[dict[str, Any]],
    records: list[dict[str, Any]],
    predictor: Predictor,
    rank: int | None = None,
) -> str:
    """Write the tables of the cases so far; ``""`` on success, else why they were not written.

    Args:
        output: the output folder.
        rows: one :data:`TIMING_COLUMNS` row per case.
        records: :func:`grade_record` entries (grading).
        predictor: names the classes and modalities of the predictions tables.
        rank: one rank of several writes ``timings_rank{r}.csv`` (and
            ``predictions_rank{r}.json``) for rank 0 to merge; None: the final tables.
    """
    try:
        if rank is not None:
            _write_csv(output / f"timings_rank{rank}.csv", rows, TIMING_COLUMNS)
            if predictor.task != "segmentation":
                _write_json(output / f"predictions_rank{rank}.json", records)
            return ""
        _write_csv(output / "timings.csv", rows, TIMING_COLUMNS)
        if predictor.task != "segmentation":
            _write_predictions(output, records, predictor)
    except _TableError as e:
        return str(e)
    return ""


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """case id -> ``predictions.json`` entry of an earlier run (``{}`` without one).

    Raises:
        VolsegError: a file that is not an earlier run's ``predictions.json``.
    """
    if not path.is_file():
        return {}
    try:
        cases = json.loads(path.read_text())["cases"]
        return {r["case_id"]: r for r in cases}
    except (ValueError, KeyError, TypeError) as e:
        raise VolsegError(
            f"{path}: cannot read the earlier predictions ({e}); delete it or drop --skip-existing"
        ) from None


def merge_ranks(
    output: Path, world: int, order: list[str], predictor: Predictor
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Rank 0: merge the per-rank tables into ``timings.csv`` (and predictions), in input order.

    Returns:
        The rows, the grade records, and why the merged tables were not written (or ``""``).
    """
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for r in range(world):
        timings = output / f"timings_rank{r}.csv"
        if timings.is_file():
            with open(timings, newline="", encoding="utf-8", errors="replace") as f:
                rows += list(csv.DictReader(f))
        preds = output / f"predictions_rank{r}.json"
        if preds.is_file():
            records += json.loads(preds.read_text())
    for row in rows:  # back to numbers, as a single process keeps them
        row.update({k: float(row[k]) for k in (*STEPS, "total") if row.get(k)})
    position = {case_id: i for i, case_id in enumerate(order)}
    rows.sort(key=lambda row: position.get(row["case_id"], len(order)))
    records.sort(key=lambda rec: position.get(rec["case_id"], len(order)))
    problem = write_tables(output, rows, records, predictor)
    if not problem:
        for name in rank_table_names(world):
            (output / name).unlink(missing_ok=True)
    return rows, records, problem


def _write_predictions(output: Path, records: list[dict[str, Any]], predictor: Predictor) -> None:
    classes = predictor.classes or sorted({k for r in records for k in r["probabilities"]})
    doc = {
        "classes": classes,
        "modalities": predictor.modalities,
        "slice_axis": predictor.config.model.encoder.slice_axis,
        "top_slices_index_space": "input file voxel index along top_slices_axis",
        "probabilities": "softmax(logits / temperature); temperature fitted on the validation "
        "cases of the checkpoint's epoch (1.0 = uncalibrated)",
        "cases": records,
    }
    _write_json(output / "predictions.json", doc)
    columns = [
        "case_id",
        *(f"prob_{c}" for c in classes),
        "predicted",
        "temperature",
        "modalities_used",
        *(f"top_slices_{m}" for m in predictor.modalities),
    ]
    table = []
    for r in records:
        row = {"case_id": r["case_id"], "predicted": r["predicted"]}
        row["temperature"] = r.get("temperature", 1.0)  # 1.0: uncalibrated
        row.update({f"prob_{c}": r["probabilities"].get(c, "") for c in classes})
        row["modalities_used"] = ";".join(r["modalities_used"])
        for m in predictor.modalities:
            row[f"top_slices_{m}"] = ";".join(str(i) for i in r["top_slices"].get(m, []))
        table.append(row)
    _write_csv(output / "predictions.csv", table, columns)


class _TableError(Exception):
    """A table the operating system refused to take; the message names it."""


@contextmanager
def _table(path: Path) -> Iterator[Path]:
    """:func:`~volseg.io.atomic_path`, with a refusal (disk full, ...) as a :class:`_TableError`."""
    try:
        with atomic_path(path) as tmp:
            yield tmp
    except OSError as e:
        raise _TableError(f"{path}: cannot write the table ({e.strerror or e})") from None


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    with _table(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _printable(v) for k, v in row.items()} for row in rows)


def _printable(value: Any) -> Any:
    """A file name that is not UTF-8 (its bytes kept as surrogates) as text: ``scan_\\xff``."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def _write_json(path: Path, doc: Any) -> None:
    with _table(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")  # ASCII: surrogates are escaped
