"""``volseg evaluate``: score predictions against references (a thin layer over volseg.metrics)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from volseg.cli.common import add_command
from volseg.errors import VolsegError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "evaluate",
        "Score predictions against references: Dice, IoU, HD95, ASSD, NSD per case and class "
        "at native spacing; AUC and friends for grading; 95% bootstrap CIs.",
        "Segmentation: --pred is a folder of label maps named <case_id>.nii.gz (any volseg\n"
        "format); --ref is a folder with the same names or a manifest (its label maps and label\n"
        "names are used). Cases are matched by id; a grid mismatch is an error, never resampled.\n"
        "Grading: --pred is predictions.csv (case_id, prob_<class> columns, as volseg predict\n"
        "writes), or the folder holding it, and --ref a manifest or CSV with case_id,label.\n"
        "Writes OUT/summary.json (per case, per class, mean, foreground mean, CIs, the\n"
        "conventions for empty masks) and OUT/per_case.csv.\n"
        "Empty references: if all are empty there is nothing to score (an error); if some are,\n"
        "they are scored by the empty-mask conventions (kept: a false positive on a healthy\n"
        "case counts; MONAI's DiceMetric(ignore_empty=True) would drop them) with a warning.\n"
        "Predicted labels missing from the label map are not scored, with a warning.\n\n"
        "examples:\n"
        "  volseg evaluate --pred preds/ --ref data/synthetic/organs/manifest.json --out eval/\n"
        "  volseg evaluate --pred preds/ --ref labelsTs/ --out eval/ --tolerance 1=2,2=3\n"
        "  volseg evaluate --pred preds/predictions.csv --ref glioma/manifest.json --out eval/",
    )
    p.add_argument("--pred", type=Path, required=True, help="predictions folder or CSV")
    p.add_argument("--ref", type=Path, required=True, help="references folder, manifest or CSV")
    p.add_argument("--out", type=Path, required=True, help="output folder for summary.json")
    p.add_argument(
        "--labels",
        help="labels to score: '1,2,3' or '1=liver,2=spleen' (default: manifest map or all "
        "non-zero reference values)",
    )
    p.add_argument(
        "--tolerance",
        default="2.0",
        help="NSD tolerance in mm, one value or per label '1=2,2=3' (default 2.0)",
    )
    p.add_argument("--workers", type=int, default=2, help="processes for segmentation cases")
    p.add_argument(
        "--allow-missing", action="store_true", help="score matched cases when some are missing"
    )
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (>= 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from volseg.metrics import evaluate_classification, evaluate_segmentation

    if args.resamples < 1000:
        raise VolsegError("--resamples must be at least 1000 for stable 95% intervals")
    common = dict(allow_missing=args.allow_missing, n_resamples=args.resamples, seed=args.seed)
    pred = args.pred
    if pred.is_dir() and (pred / "predictions.csv").is_file():
        pred = pred / "predictions.csv"  # the folder `volseg predict` wrote for a grading model
    if pred.suffix.lower() == ".csv":
        summary = evaluate_classification(pred, args.ref, args.out, **common)
        metrics, ci = summary["metrics"], summary["ci95"]
        for name in ("AUC", "balanced_accuracy", "accuracy"):
            if name in metrics:
                print(f"{name:>18}: {_fmt(metrics[name])}  95% CI {_interval(ci.get(name))}")
    else:
        summary = evaluate_segmentation(
            args.pred,
            args.ref,
            args.out,
            labels=_labels(args.labels),
            tolerance_mm=_tolerance(args.tolerance),
            workers=args.workers,
            **common,
        )
        names = summary["labels"]
        print(f"{'label':<20}{'Dice':>8}{'95% CI':>18}{'HD95 mm':>10}{'NSD':>8}")
        for label, row in summary["mean"].items():
            ci = summary["ci95"].get(label, {}).get("Dice")
            print(
                f"{names.get(label, label):<20}{_fmt(row.get('Dice')):>8}{_interval(ci):>18}"
                f"{_fmt(row.get('HD95')):>10}{_fmt(row.get('NSD')):>8}"
            )
        print(f"foreground mean Dice: {_fmt(summary['foreground_mean'].get('Dice'))}")
        for warning in summary.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'per_case.csv'}")
    return 0


def _labels(text: str | None) -> dict[int, str] | None:
    if not text:
        return None
    labels = {}
    for item in text.split(","):
        value, _, name = item.partition("=")
        try:
            labels[int(value)] = name.strip() or f"label_{int(value)}"
        except ValueError:
            raise VolsegError(f"--labels item {item!r} is not 'VALUE' or 'VALUE=name'") from None
    return labels


def _tolerance(text: str) -> float | dict[int, float]:
    try:
        if "=" not in text:
            return float(text)
        return {int(k): float(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise VolsegError(f"--tolerance {text!r} is not a number or 'LABEL=MM,...'") from None


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _interval(ci: object) -> str:
    if not ci or ci[0] is None:
        return "n/a"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"
