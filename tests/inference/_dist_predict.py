"""``volseg predict`` for a torchrun test: ``torchrun --nproc_per_node=2 _dist_predict.py ARGS``.

Builds the predict subcommand on its own, so the test does not depend on the CLI's command list.
"""

from __future__ import annotations

import argparse
import sys

from volseg.cli import predict


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="volseg")
    predict.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["predict", *argv])
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
