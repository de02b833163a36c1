"""``volseg bench``: train or reuse each model, predict, evaluate, time and report."""

from __future__ import annotations

import argparse
from pathlib import Path

from volseg.cli.common import add_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``volseg bench`` to ``sub``."""
    p = add_command(
        sub,
        "bench",
        "Run a whole benchmark: train or reuse each model, predict, evaluate, time, report.",
        "CONFIG is a bench YAML: name, output_dir, test (manifest of the held-out cases), and\n"
        "models, each with a name and a training config plus overrides (or an existing run).\n"
        "MONAI baselines are models too (model.encoder.name=none model.head.name=monai_unet).\n"
        "Writes OUTPUT_DIR/NAME/{runs,predictions,evaluation}/, bench.csv (quality, seconds per\n"
        "volume, peak memory) and report/report.html. See configs/bench_synthetic_organs.yaml.\n"
        "A probes: list adds volseg probe runs (configs/bench_seed_radiology.yaml).\n\n"
        "examples:\n"
        "  volseg bench configs/bench_synthetic_organs.yaml\n"
        "  volseg bench configs/bench_synthetic_organs.yaml output_dir=/tmp/bench\n"
        "  volseg bench configs/bench_few_labels_pelvis.yaml --only imgfocus_n5,none_n5",
    )
    p.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="run only these models and probes of the config (comma-separated names); "
        "bench.csv keeps the earlier rows of the other models; the encoder's contribution is "
        "filled where a model's encoder-off row is among them",
    )
    p.add_argument("config", type=Path, help="bench YAML")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="bench config overrides")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from volseg.bench import load_bench_config, run_bench, select

    cfg = load_bench_config(args.config, args.overrides)
    order: list[str] = []
    if args.only is not None:
        order = [m.name for m in cfg.models]  # the other models' earlier rows stay in bench.csv
        cfg = select(cfg, [n.strip() for n in args.only.split(",") if n.strip()], args.config)
    report = run_bench(cfg, order=order)
    print(f"report: {report}")
    return 0
