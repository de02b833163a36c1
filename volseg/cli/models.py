"""``volseg models``: the encoders and heads volseg builds, with parameters and GFLOP."""

from __future__ import annotations

import argparse
from pathlib import Path

from volseg.cli.common import add_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``volseg models`` to ``sub``."""
    p = add_command(
        sub,
        "models",
        "List the encoders and heads volseg builds, with parameter counts and head GFLOP.",
        "Counts come from the real architectures (built on PyTorch's meta device, so even\n"
        "ViT-g costs no memory). Head settings come from CONFIG (default: configs/base.yaml's\n"
        "defaults) plus key=value overrides.\n\n"
        "examples:\n"
        "  volseg models\n"
        "  volseg models configs/synthetic_organs.yaml model.head.channels=128 --json",
    )
    p.add_argument("config", type=Path, nargs="?", help="YAML config for the head settings")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from volseg.config import Config, load_config
    from volseg.models import ENCODERS, head_parameter_table

    config = load_config(Config, args.config, args.overrides)
    rows = head_parameter_table(model=config.model)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("encoders: " + ", ".join(ENCODERS.names()))
    head, enc = config.model.head, config.model.encoder
    print(
        f"heads with channels={head.channels}, depth={head.depth}, input_size={enc.input_size}, "
        f"layers={enc.layers} ({enc.fusion}); segmentation: 4 classes on 1 channel, GFLOP of one "
        "forward on a 512 x 512 x 16 slab; mil: 2 grades, 4 modalities"
    )
    print(
        f"{'encoder':<16}{'E':>6}{'encoder params':>16}  {'head':<8}{'head params':>13}"
        f"{'GFLOP/slab':>12}"
    )
    for row in rows:
        flops = "-" if row["gflops_per_slab"] is None else f"{row['gflops_per_slab']:,.1f}"
        print(
            f"{row['encoder']:<16}{row['embed_dim']:>6}{row['encoder_params']:>16,}  "
            f"{row['head']:<8}{row['head_params']:>13,}{flops:>12}"
        )
    return 0
