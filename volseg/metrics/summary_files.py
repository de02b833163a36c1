"""What ``volseg evaluate`` shares between tasks: matching cases, writing its two files.

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
