"""Report sections of one evaluation: per-class and per-case tables, plots, overlays, ROC.

Numbers come from ``summary.json`` as ``volseg evaluate`` wrote it (nothing is recomputed
except per-case means over classes, to rank cases and to pair them between evaluations).
Comparisons between evaluations are in :mod:`volseg.report.compare`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from volseg.data import Manifest, load_manifest
from volseg.errors import VolsegError
from volseg.io import Image, read_image
from volseg.report import overlays, plots
from volseg.report.attention import attention_blocks
from volseg.report.collect import Evaluation, manifest_path, number
from volseg.report.render import Block, Facts, Figure, Row, Section, Table, Text

SEG_TABLES = (("Dice", "HD95", "NSD"), ("IoU", "ASSD"))
DISTANCES = ("HD95", "ASSD")
CLS_METRICS = (
    "AUC",
    "balanced_accuracy",
    "accuracy",
    "sensitivity",
    "specificity",
    "F1",
    "precision",
    "Brier",
    "ECE",
)
PER_CLASS = ("AUC", "sensitivity", "specificity", "F1")
GEOMETRY_ATOL_MM = 1e-2


def evaluation_sections(evaluation: Evaluation, manifest: Manifest | None = None) -> list[Section]:
    """The results section of one evaluation (segmentation or grading)."""
    if evaluation.task == "segmentation":
        return [_segmentation(evaluation, manifest)]
    return [_classification(evaluation)]


# --- segmentation ------------------------------------------------------------------------------


def _segmentation(ev: Evaluation, manifest: Manifest | None) -> Section:
    s = ev.summary
    labels = labels_of(s)
    cases = s.get("metric_per_case") or []
    boot = s.get("bootstrap") or {}
    tolerance = s.get("tolerance_mm") or {}
    blocks: list[Block] = [
        Facts(
            [
                ("cases", str(s.get("n_cases", len(cases)))),
                ("classes", ", ".join(f"{k}={v}" for k, v in labels.items())),
                ("prediction", str(s.get("prediction"))),
                ("reference", str(s.get("reference"))),
                (
                    "NSD tolerance",
                    ", ".join(f"{labels.get(k, k)} {v} mm" for k, v in tolerance.items()),
                ),
                (
                    "95% CI",
                    f"{boot.get('method', 'bootstrap')}, {boot.get('n_resamples')} resamples "
                    f"over cases, seed {boot.get('seed')}",
                ),
            ]
        )
    ]
    for metrics in SEG_TABLES:
        metrics = tuple(m for m in metrics if m in (s.get("metric_names") or metrics))
        if metrics:
            blocks.append(_class_table(s, labels, metrics, len(cases)))
    values = {
        m: {name: [case_value(c, key, m) for c in cases] for key, name in labels.items()}
        for m in SEG_TABLES[0]
    }
    blocks.append(
        Figure(
            f"{ev.name}_per_class",
            plots.class_distributions(values),
            "Per-class distributions over cases: box = quartiles, line = median, dots = cases.",
        )
    )
    picks = _picks(cases, list(labels))
    blocks.append(_case_table(cases, labels, picks))
    blocks += _overlays(ev, manifest, cases, picks)
    for key, what in (
        ("missing_predictions", "without prediction (not scored)"),
        ("unmatched_predictions", "predicted but not in the reference"),
    ):
        if s.get(key):
            blocks.append(Text(f"{len(s[key])} case(s) {what}: {', '.join(s[key][:20])}", True))
    blocks.append(_conventions(s))
    return Section(f"Segmentation results: {ev.name}", blocks)


def labels_of(summary: dict) -> dict[str, str]:
    return {str(k): str(v) for k, v in (summary.get("labels") or {}).items()}


def case_value(case: dict, label: str, metric: str) -> float:
    return number(((case.get("metrics") or {}).get(label) or {}).get(metric))


def case_mean(case: dict, labels: Sequence[str], metric: str = "Dice") -> float:
    values = [v for v in (case_value(case, k, metric) for k in labels) if math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def _class_table(s: dict, labels: dict[str, str], metrics: Sequence[str], n: int) -> Table:
    header = ["class"]
    for m in metrics:
        unit = " (mm)" if m in DISTANCES else ""
        header += [f"{m}{unit} mean ± std", f"{m} median", f"{m} 95% CI"]
    rows = []
    for key, name in labels.items():
        row = [name]
        for m in metrics:
            undefined = ((s.get("undefined_count") or {}).get(key) or {}).get(m, 0)
            mean_std = _pm(
                summary_value(s, "mean", key, m), summary_value(s, "std", key, m), _digits(m)
            )
            row += [
                mean_std + (f" (n={n - undefined})" if undefined else ""),
                fmt(summary_value(s, "median", key, m), _digits(m)),
                interval(summary_value(s, "ci95", key, m), _digits(m)),
            ]
        rows.append(row)
    row = ["foreground mean"]
    for m in metrics:
        row += [
            fmt((s.get("foreground_mean") or {}).get(m), _digits(m)),
            "",
            interval((s.get("ci95_foreground") or {}).get(m), _digits(m)),
        ]
    rows.append(row)
    caption = (
        "Mean ± sample std (ddof=1), median and 95% bootstrap CI of the mean over cases. "
        "Foreground mean: mean of the class means; its CI resamples the per-case means over "
        "classes. Undefined values (see conventions) are left out; (n=k) marks a metric "
        "defined on k cases only."
    )
    return Table(header, rows, caption)


def _picks(cases: list[dict], labels: list[str]) -> dict[str, int]:
    """Best, median and worst case index by mean foreground Dice (fewer with < 3 cases)."""
    scored = sorted(
        (score, i) for i, c in enumerate(cases) if math.isfinite(score := case_mean(c, labels))
    )
    if not scored:
        return {}
    picks: dict[str, int] = {}
    for rank, position in (("best", -1), ("median", (len(scored) - 1) // 2), ("worst", 0)):
        index = scored[position][1]
        if index not in picks.values():
            picks[rank] = index
    return picks


def _case_table(cases: list[dict], labels: dict[str, str], picks: dict[str, int]) -> Table:
    shown = {index: rank for rank, index in picks.items()}
    header = [
        "case",
        *(f"Dice {name}" for name in labels.values()),
        "mean Dice",
        "mean HD95 (mm)",
        "mean NSD",
        "overlay",
    ]
    rows = [
        [
            str(c.get("case")),
            *(fmt(case_value(c, k, "Dice")) for k in labels),
            fmt(case_mean(c, list(labels))),
            fmt(case_mean(c, list(labels), "HD95"), 2),
            fmt(case_mean(c, list(labels), "NSD")),
            shown.get(i, ""),
        ]
        for i, c in enumerate(cases)
    ]
    return Table(header, rows, "Per case; means over the classes with a defined value.")


def _overlays(
    ev: Evaluation, manifest: Manifest | None, cases: list[dict], picks: dict[str, int]
) -> list[Block]:
    if not picks:
        return []
    if manifest is None:
        path = manifest_path(ev.summary.get("reference"), ev.path)
        try:
            manifest = load_manifest(path) if path is not None else None
        except VolsegError:
            manifest = None
    blocks: list[Block] = []
    labels = list(labels_of(ev.summary))
    names = {int(k): v for k, v in labels_of(ev.summary).items() if k.lstrip("-").isdigit()}
    for rank, index in picks.items():
        case = cases[index]
        case_id = str(case.get("case"))
        ref_path, pred_path = (
            ev.resolve(case.get("reference_file")),
            ev.resolve(case.get("prediction_file")),
        )
        if ref_path is None or pred_path is None:
            blocks.append(
                Text(
                    f"overlay of {case_id} skipped: its reference or prediction file "
                    "is no longer where summary.json says",
                    note=True,
                )
            )
            continue
        try:
            reference, prediction = read_image(ref_path), read_image(pred_path)
        except VolsegError as e:
            blocks.append(Text(f"overlay of {case_id} skipped: {e}", note=True))
            continue
        image, why = _case_image(manifest, case_id, reference)
        score = case_mean(case, labels)
        png = overlays.overlay(
            reference,
            prediction,
            image,
            f"{rank}: {case_id} (mean Dice {score:.3f})",
            names,
        )
        caption = (
            f"{rank.capitalize()} case by mean foreground Dice: {case_id}. Top row reference, "
            "bottom row prediction, on the same slices through the reference's centroid (slice "
            "index: 0-based voxel index in the file), in radiological convention (axial and "
            "coronal: patient's right on the left; sagittal: anterior on the left), drawn at "
            "physical aspect ratio with a scale bar in mm. One colour per label, the same in "
            "every overlay; the legend names them."
        ) + (f" {why}" if why else "")
        blocks.append(Figure(f"{ev.name}_overlay_{rank}", png, caption))
    return blocks


def _case_image(
    manifest: Manifest | None, case_id: str, reference: Image
) -> tuple[Image | None, str]:
    """The case's first-modality image on the reference grid, or None and the reason."""
    if manifest is None:
        return None, "No image found (grey: reference); pass --manifest to draw the scan."
    try:
        case = manifest.case(case_id)
    except KeyError:
        return None, f"Case not in {manifest.source} (grey: reference)."
    if not case.images:
        return None, "The manifest lists no image for this case (grey: reference)."
    source = next(iter(case.images.values()))
    try:
        image = read_image(source.path)
        image = image.channel(source.channel) if source.channel is not None else image
    except (VolsegError, IndexError) as e:
        return None, f"Image unreadable ({e}); grey: reference."
    if image.geometry.differences(reference.geometry, atol=GEOMETRY_ATOL_MM):
        return None, f"{source.path} is not on the reference grid (grey: reference)."
    return image, ""


def _conventions(summary: dict) -> Facts:
    conventions = summary.get("conventions") or {}
    return Facts(
        [(k, str(v)) for k, v in conventions.items()],
        "Conventions (from summary.json): empty masks, NaN handling, metric definitions",
        collapsed=True,
    )


# --- classification ----------------------------------------------------------------------------


def _classification(ev: Evaluation) -> Section:
    s = ev.summary
    classes = [str(c) for c in s.get("classes") or []]
    metrics, ci = s.get("metrics") or {}, s.get("ci95") or {}
    boot = s.get("bootstrap") or {}
    blocks: list[Block] = [
        Facts(
            [
                ("cases", str(s.get("n_cases"))),
                ("classes", ", ".join(classes)),
                ("positive class", str(s.get("positive_class") or "n/a (one-vs-rest per class)")),
                ("prediction", str(s.get("prediction"))),
                ("reference", str(s.get("reference"))),
                (
                    "95% CI",
                    f"{boot.get('method', 'bootstrap')}, {boot.get('n_resamples')} resamples "
                    f"over cases, seed {boot.get('seed')}",
                ),
            ]
        )
    ]
    names = [m for m in CLS_METRICS if m in metrics] + [m for m in metrics if m not in CLS_METRICS]
    blocks.append(
        Table(
            ["metric", "value", "95% CI"],
            [[m, fmt(metrics[m]), interval(ci.get(m))] for m in names],
        )
    )
    per_class, ci_class = s.get("per_class") or {}, s.get("ci95_per_class") or {}
    rows = [
        [
            c,
            str((per_class.get(c) or {}).get("n_true", "")),
            *(
                f"{fmt((per_class.get(c) or {}).get(m))} {interval((ci_class.get(c) or {}).get(m))}"
                for m in PER_CLASS
            ),
        ]
        for c in classes
    ]
    blocks.append(
        Table(["class", "n true", *PER_CLASS], rows, "Per class, one-vs-rest; value [95% CI].")
    )
    figures: list[Block] = []
    if s.get("roc_curve"):
        aucs = {
            c: ((per_class.get(c) or {}).get("AUC"), (ci_class.get(c) or {}).get("AUC"))
            for c in classes
        }
        figures.append(
            Figure(
                f"{ev.name}_roc",
                plots.roc_curves(s["roc_curve"], aucs),
                "ROC curves (one-vs-rest); AUC with 95% bootstrap CI.",
            )
        )
    if s.get("confusion_matrix"):
        figures.append(
            Figure(
                f"{ev.name}_confusion",
                plots.confusion(s["confusion_matrix"], classes),
                "Confusion matrix: rows true class, columns predicted (argmax).",
            )
        )
    if s.get("reliability"):
        figures.append(
            Figure(
                f"{ev.name}_reliability",
                plots.reliability(s["reliability"], metrics.get("ECE")),
                "Reliability: accuracy per confidence bin (15 equal-width bins; case counts on "
                "the bars, red dots the mean confidence); on the dashed line = calibrated.",
            )
        )
    if figures:
        blocks.append(Row(figures))
    blocks += attention_blocks(ev)
    if ev.per_case:
        header = list(ev.per_case[0])
        rows = [[_cell(row.get(h, "")) for h in header] for row in ev.per_case]
        blocks.append(Table(header, rows, "Per case (per_case.csv)."))
    blocks += [Text(note, note=True) for note in s.get("notes") or []]
    blocks.append(_conventions(s))
    return Section(f"Grading results: {ev.name}", blocks)


def _cell(value: str) -> str:
    v = number(value)
    return value if not math.isfinite(v) or float(v).is_integer() else f"{v:.3f}"


# --- summary access and number formatting (shared with volseg.report.compare) ---------------


def summary_value(summary: dict, table: str, label: str | None, metric: str) -> Any:
    """``summary[table][label][metric]``, or None where any level is missing."""
    if label is None:
        return None
    return ((summary.get(table) or {}).get(label) or {}).get(metric)


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; 'n/a' for None, NaN or text."""
    v = number(value)
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"


def interval(ci: Any, digits: int = 3) -> str:
    """``[low, high]`` of a CI as summary.json holds it; 'n/a' when absent or undefined."""
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return "n/a"
    lo, hi = number(ci[0]), number(ci[1])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def mean_ci(mean: Any, ci: Any) -> str:
    """``mean [low, high]`` (the mean alone when there is no CI)."""
    text = interval(ci)
    return fmt(mean) if text == "n/a" else f"{fmt(mean)} {text}"


def _digits(metric: str) -> int:
    return 2 if metric in DISTANCES else 3


def _pm(mean: Any, std: Any, digits: int = 3) -> str:
    if not math.isfinite(number(std)):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"
