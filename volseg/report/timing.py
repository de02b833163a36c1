"""The report's timing section: seconds per prediction step and per training run, peak memory."""

from __future__ import annotations

import math
import statistics
from typing import Any

from volseg.report.collect import Predictions, Run, number
from volseg.report.render import Row, Section, Table, Text
from volseg.report.results import fmt

STEPS = ("read", "preprocess", "encode", "head", "postprocess", "write", "total")


def timing_sections(predictions: list[Predictions], runs: list[Run]) -> list[Section]:
    """'Timing and memory': a titled table per prediction folder, one for training runs."""
    blocks: list[Any] = []
    tables = [_prediction_timing(p) for p in predictions]
    if tables:
        blocks.append(Row(tables))
    failed = [(p.name, r) for p in predictions for r in p.timings if r.get("status") == "failed"]
    for name, r in failed[:10]:
        blocks.append(Text(f"{name}: {r.get('case_id')} failed: {r.get('error', '')}", note=True))
    rows = [row for row in (_training_timing(run) for run in runs) if row]
    if rows:
        header = ["training run", "epochs", "training time", "mean s per row", "peak memory"]
        caption = (
            "From the runs' logged columns: time sums the columns named like 'seconds'; peak "
            "memory is the largest logged memory value (unit as logged)."
        )
        blocks.append(Table(header, rows, caption, title="Training time and memory"))
    return [Section("Timing and memory", blocks)] if blocks else []


def _prediction_timing(prediction: Predictions) -> Table:
    """Seconds per step over the cases predicted ok (timings.csv), and the peak memory."""
    rows = prediction.timings
    status = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "skipped", "failed")}
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    table = []
    for step in [s for s in STEPS if any(s in r for r in rows)]:
        values = [v for v in (number(r.get(step)) for r in ok) if math.isfinite(v)]
        if values:
            table.append(
                [
                    step,
                    fmt(statistics.fmean(values), 3),
                    fmt(statistics.median(values), 3),
                    fmt(max(values), 3),
                    fmt(sum(values), 2),
                ]
            )
    caption = (
        f"{prediction.name}: seconds per case over {status['ok']} cases predicted ok "
        f"({status['skipped']} skipped, {status['failed']} failed)."
    )
    memory = [number(cell) for r in ok for k, cell in r.items() if _is_memory(k)]
    memory = [m for m in memory if math.isfinite(m)]
    if memory:
        caption += f" Peak memory {max(memory):,.0f} MB (largest over cases)."
    title = f"Prediction time per case: {prediction.name}"
    return Table(["step", "mean s", "median s", "max s", "sum s"], table, caption, title=title)


def _training_timing(run: Run) -> list[str]:
    seconds = [v for r in run.metrics for k, v in r.items() if "second" in k.lower()]
    memory = [v for r in run.metrics for k, v in r.items() if _is_memory(k)]
    if not seconds and not memory:
        return []
    epochs = {r["epoch"] for r in run.metrics if "epoch" in r}
    return [
        run.name,
        str(len(epochs) or len(run.metrics)),
        _duration(sum(seconds)) if seconds else "n/a",
        fmt(statistics.fmean(seconds), 1) if seconds else "n/a",
        fmt(max(memory), 0) if memory else "n/a",
    ]


def _is_memory(key: str) -> bool:
    lowered = key.lower()
    return "memory" in lowered or lowered.startswith("mem_") or lowered.endswith("_mb")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
