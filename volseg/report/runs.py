"""Report sections of training runs: the model of each run and its training curves."""

from __future__ import annotations

import math
from typing import Any

from volseg.report import plots
from volseg.report.collect import Run
from volseg.report.datasets import split_text
from volseg.report.headline import encoder_weights_text, mapping
from volseg.report.render import Facts, Figure, Section, Table
from volseg.report.results import fmt


def model_section(run: Run) -> Section:
    config = run.config
    model = mapping(config, "model")
    encoder, head = mapping(model, "encoder"), mapping(model, "head")
    train, data = mapping(config, "train"), mapping(config, "data")
    mode = str(encoder.get("mode", "n/a"))
    if mode == "last_n":
        mode += f" (last {encoder.get('last_n')} blocks trained)"
    elif mode == "lora":
        lora = mapping(encoder, "lora")
        mode += f" (rank {lora.get('rank')}, alpha {lora.get('alpha')})"
    items = [
        ("run", f"{config.get('name', run.name)} ({run.path})"),
        ("task", str(model.get("task", "n/a"))),
        ("encoder", str(encoder.get("name", "n/a"))),
        ("encoder mode", mode),
        ("encoder weights", encoder_weights_text(encoder)),
        ("slice axis", str(encoder.get("slice_axis", "n/a"))),
        ("head", _head(head)),
        ("parameters", _parameters(run.params)),
    ]
    if train:
        lrs = f"lr {train.get('lr')}"
        if encoder.get("mode") not in (None, "frozen"):
            lrs += f", encoder lr {train.get('encoder_lr')}"
        items.append(
            (
                "training",
                f"{train.get('epochs')} epochs, batch {train.get('batch_size')}, {lrs}, "
                f"amp {train.get('amp')}",
            )
        )
    if data:
        items.append(("data", f"{data.get('manifest')}{split_text(run)}"))
    return Section(f"Model: {run.name}", [Facts(items)])


def _head(head: dict) -> str:
    if not head:
        return "n/a"
    details = ", ".join(f"{k} {head[k]}" for k in ("channels", "depth", "dropout") if k in head)
    return f"{head.get('name', '?')} ({details})" if details else str(head.get("name", "?"))


def _parameters(params: dict | None) -> str:
    if not params:
        return "not recorded (no params.json in the run folder)"
    parts = []
    for part in ("encoder", "head", "model"):
        total, trainable = params.get(f"{part}_total"), params.get(f"{part}_trainable")
        if isinstance(total, int) and isinstance(trainable, int):
            parts.append(f"{part} {trainable:,} trainable of {total:,}")
    if parts:
        return "; ".join(parts)
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in params.items())


def training_sections(runs: list[Run]) -> list[Section]:
    sections = []
    for run in runs:
        if not run.metrics:
            continue
        blocks: list[Any] = []
        png = plots.training_curves(run.metrics, run.name)
        if png is not None:
            caption = (
                f"Logged values of {run.name} per epoch; the dashed line marks the best epoch "
                "(highest validation score, the epoch of best.pt). Counters, time and memory "
                "columns are left out (time and memory: see Timing and memory)."
            )
            blocks.append(Figure(f"training_{run.name}", png, caption))
        rows = []
        for key in [k for ks in plots.curve_groups(run.metrics).values() for k in ks]:
            if plots.is_lr(key):
                continue
            points = [
                (r.get("epoch", r.get("step", n)), r[key])
                for n, r in enumerate(run.metrics)
                if key in r
            ]
            lower = "loss" in key or key.startswith("ece")
            best = (min if lower else max)(points, key=lambda p: p[1])
            rows.append(
                [
                    key,
                    fmt(points[-1][1], 4),
                    fmt(best[1], 4),
                    fmt(best[0], 0),
                    "lowest" if lower else "highest",
                ]
            )
        if rows:
            blocks.append(
                Table(
                    ["column", "last", "best", "at epoch", "best is"],
                    rows,
                    title="Last and best value of each logged curve",
                )
            )
        calibration = calibration_table(run.metrics)
        if calibration is not None:
            blocks.append(calibration)
        sections.append(Section(f"Training: {run.name}", blocks))
    return sections


def calibration_table(rows: list[dict]) -> Table | None:
    """Temperature and ECE of the best epoch's validation (the epoch of best.pt, whose T
    ``volseg predict`` applies); None for runs that log no temperature (segmentation)."""
    scored = [r for r in rows if "temperature" in r]
    if not scored:
        return None
    key = plots.score_column(rows)

    def score(r: dict) -> float:  # NaN never wins, as when training picks best.pt
        value = r.get(key, math.nan) if key else math.nan
        return -math.inf if math.isnan(value) else value

    best = max(scored, key=score)
    return Table(
        ["epoch", "temperature T", "ECE before", "ECE after"],
        [
            [
                fmt(best.get("epoch", 0), 0),
                fmt(best["temperature"], 3),
                fmt(best["ece"], 4),
                fmt(best["ece_calibrated"], 4),
            ]
        ],
        title="Calibration of the best epoch (validation cases; T fitted on them by NLL; "
        "ECE over 15 equal-width confidence bins; predict divides logits by this T)",
    )
