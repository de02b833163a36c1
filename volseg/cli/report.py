"""``volseg report``: HTML and Markdown reports of evaluations, runs and predictions."""

from __future__ import annotations

import argparse
from pathlib import Path

from volseg.cli.common import add_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "report",
        "Write a self-contained report.html and a report.md with PNGs from evaluation, "
        "training-run and prediction folders.",
        "DIRS are folders written by volseg evaluate (summary.json), volseg train (config.yaml,\n"
        "metrics.csv) or volseg predict (timings.csv), or folders holding them at any depth\n"
        "(a bench or demo folder). The report holds the dataset and model description,\n"
        "per-class tables (mean +- std, median, 95% CI), box plots, a per-case table, overlays\n"
        "of the best, median and worst case (radiological convention: patient's right on the\n"
        "left), ROC curves, the confusion matrix, a reliability diagram and the calibration\n"
        "temperature for grading, training curves, timing and peak memory, and the environment.\n"
        "Several evaluations of one task are compared side by side (the first is the\n"
        "baseline): paired per-case differences and a Wilcoxon\n"
        "signed-rank test. report.html embeds its images and opens offline; report.md links\n"
        "OUT/figures/*.png.\n\n"
        "examples:\n"
        "  volseg report eval/ --out report/\n"
        "  volseg report runs/organs predictions/ eval/ --out report/ --manifest "
        "data/synthetic/organs/manifest.json\n"
        "  volseg report eval_frozen/ eval_lora/ --out compare/ --title 'frozen vs LoRA'\n"
        "  volseg report demo_output/ --out demo_output/report",
    )
    p.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="folders to report on")
    p.add_argument("--out", type=Path, required=True, help="output folder for report.html/md")
    p.add_argument(
        "--manifest",
        type=Path,
        help="dataset manifest: describes the dataset and locates the images for the overlays "
        "(default: the manifest the evaluation used as reference, if it did)",
    )
    p.add_argument("--title", help="report title (default 'volseg report')")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from volseg.report import write_report

    html = write_report(args.dirs, args.out, manifest=args.manifest, title=args.title)
    print(f"wrote {html} and {html.with_name('report.md')} (figures in {html.parent / 'figures'})")
    return 0
