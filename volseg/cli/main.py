"""The ``volseg`` command: one subcommand per pipeline step, each a thin layer over a function.

Errors a user can cause are :class:`~volseg.errors.VolsegError`; they print as one line
(``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from volseg import __version__
from volseg.errors import VolsegError

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``volseg`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except VolsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="volseg",
        description="3D medical image segmentation and grading with slice-wise DINOv2 "
        "encoders and light 3D heads.",
    )
    parser.add_argument("--version", action="version", version=f"volseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from volseg.cli import commands

    for register in commands.REGISTER:
        register(sub)
    return parser


def add_command(
    sub: argparse._SubParsersAction, name: str, summary: str, description: str = ""
) -> argparse.ArgumentParser:
    """Add a subcommand whose help shows ``summary`` and ``description`` verbatim."""
    return sub.add_parser(
        name,
        help=summary,
        description=f"{summary}\n\n{description}".strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
