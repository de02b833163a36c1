"""What every ``volseg`` subcommand module shares: adding its parser with verbatim help.

Each subcommand lives in its own module (``volseg/cli/<name>.py``) exporting
``add_parser(subparsers)``, which adds its options and ``set_defaults(run=run)``, and
``run(args) -> int``, a thin call of one Python function; :mod:`volseg.cli.main` imports them.
"""

from __future__ import annotations

import argparse


def add_command(
    sub: argparse._SubParsersAction, name: str, summary: str, description: str = ""
) -> argparse.ArgumentParser:
    """Add a subcommand whose help shows ``summary`` and ``description`` verbatim."""
    parser = sub.add_parser(
        name,
        help=summary.replace("%", "%%"),  # argparse %-formats help strings, not descriptions
        description=f"{summary}\n\n{description}".strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(command_parser=parser)
    return parser
