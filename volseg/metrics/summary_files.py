"""What ``volseg evaluate`` shares between tasks: matching cases, writing its two files, and
the shape of ``summary.json`` that readers (``volseg report``) rely on.

``summary.json`` and ``per_case.csv`` go to an output folder checked up front
(:func:`volseg.io.output_folder`), atomically; NaN is written as JSON ``null`` and as an empty
CSV cell.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from volseg.errors import VolsegError
from volseg.io import atomic_path

# Per task: top-level key -> (JSON type, required, type of each value when it is a table).
# Keys not listed are free; a listed optional key, when present, must have its type.
_SUMMARY_KEYS: dict[str, dict[str, tuple[type, bool, type | None]]] = {
    "segmentation": {
        "labels": (dict, True, None),
        "mean": (dict, True, dict),
        "foreground_mean": (dict, True, None),
        "metric_per_case": (list, True, dict),
        **{k: (dict, False, dict) for k in ("std", "median", "ci95")},
        **{k: (dict, False, None) for k in ("ci95_foreground", "bootstrap", "tolerance_mm")},
        **{k: (list, False, None) for k in ("metric_names", "missing_predictions")},
        "unmatched_predictions": (list, False, None),
        "conventions": (dict, False, None),
    },
    "classification": {
        "metrics": (dict, True, None),
        "ci95": (dict, True, None),
        **{k: (dict, False, dict) for k in ("per_class", "ci95_per_class", "roc_curve")},
        **{k: (list, False, None) for k in ("classes", "confusion_matrix", "notes")},
        **{k: (list, False, None) for k in ("missing_predictions", "unmatched_predictions")},
        **{k: (dict, False, None) for k in ("bootstrap", "conventions")},
    },
}
_JSON_NAMES = {dict: "an object", list: "a list"}


def match_cases(
    reference_ids: list[str], predictions: Iterable[str], where: Path, allow_missing: bool
) -> tuple[list[str], list[str], list[str]]:
    """(matched ids in reference order, references without prediction, unmatched predictions)."""
    predicted = set(predictions)
    matched = [c for c in reference_ids if c in predicted]
    missing = [c for c in reference_ids if c not in predicted]
    extra = sorted(predicted - set(reference_ids))
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise VolsegError(
            f"{where}: no prediction for {len(missing)} reference case(s): {shown}; predict "
            "them, or allow missing predictions to score only the matched cases"
        )
    if not matched:
        raise VolsegError(f"{where}: no prediction matches a reference case id")
    return matched, missing, extra


def write_summary(out_dir: Path, summary: dict, rows: list[dict]) -> dict[str, Any]:
    """Write summary.json and per_case.csv atomically; return the summary as JSON holds it."""
    summary = jsonable(summary)
    text = json.dumps(summary, indent=2, allow_nan=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(text + "\n")
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: cell(v) for k, v in row.items()} for row in rows)
    with atomic_path(out_dir / "per_case.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    return summary


def cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(float(value))
    return value


def jsonable(value: Any) -> Any:
    """Plain JSON types: string keys, NaN/inf -> None, numpy scalars and arrays unwrapped."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def check_summary(summary: Any, path: Path) -> dict[str, Any]:
    """``summary`` (a loaded ``summary.json``) if it has the keys and types
    :func:`write_summary` writes for its task; the check readers run before using it.

    Raises:
        VolsegError: naming ``path`` and the first missing or mistyped key.
    """
    redo = "re-run volseg evaluate to write it again"
    task = summary.get("task") if isinstance(summary, dict) else None
    if task not in _SUMMARY_KEYS:
        raise VolsegError(
            f"{path}: is not a volseg evaluate summary (no task segmentation/classification); "
            + redo
        )
    for key, (kind, required, item) in _SUMMARY_KEYS[task].items():
        if key not in summary:
            if required:
                raise VolsegError(f"{path}: {task} summary lacks key {key!r}; {redo}")
            continue
        value = summary[key]
        if not isinstance(value, kind):
            raise VolsegError(
                f"{path}: key {key!r} is {_json_type(value)}, not {_JSON_NAMES[kind]} as in a "
                f"{task} summary; {redo}"
            )
        entries = value.items() if isinstance(value, dict) else enumerate(value)
        for name, entry in entries if item else ():
            if not isinstance(entry, item):
                raise VolsegError(
                    f"{path}: key {key!r} entry {name!r} is {_json_type(entry)}, not "
                    f"{_JSON_NAMES[item]}; {redo}"
                )
    for i, case in enumerate(summary.get("metric_per_case", []) if task == "segmentation" else []):
        scores = case.get("metrics", {})  # label -> metric -> value
        if not isinstance(scores, dict) or not all(isinstance(v, dict) for v in scores.values()):
            raise VolsegError(
                f"{path}: key 'metric_per_case' entry {i} ({case.get('case')!r}) has 'metrics' "
                f"that are not label -> metric -> value; {redo}"
            )
    return summary


def _json_type(value: Any) -> str:
    """The JSON name of a loaded value's type (``a number``, ``null``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    return _JSON_NAMES.get(type(value), type(value).__name__)
