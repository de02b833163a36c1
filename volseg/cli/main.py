"""The ``volseg`` command: one subcommand per pipeline step, each a thin layer over a function.

Every documented use ends in a result or in one line and a non-zero exit status:

- errors a user can cause are :class:`~volseg.errors.VolsegError`; they print as one line
  (``error: ...``) and exit with status 2, as do argument errors (with the subcommand's usage);
- the operating system refusing a file (disk full, read-only, no permission) prints one line
  and exits with status 1;
- Ctrl-C exits with status 130 (``volseg train`` saves its state first).

``KEY=VALUE`` config overrides may come anywhere after the subcommand, before or after flags.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from volseg import __version__
from volseg.cli import bench, check, demo, evaluate, models, predict, probe, report, synth, train
from volseg.errors import VolsegError

# Subcommands in the order `volseg --help` lists them: the pipeline's order.
COMMANDS = (synth, check, train, models, probe, predict, evaluate, report, bench, demo)
EXIT_USER_ERROR = 2
EXIT_SYSTEM_ERROR = 1
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``volseg`` command line; returns the exit status."""
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 must still print
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parse(parser, argv)
    try:
        return int(args.run(args) or 0)
    except VolsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `volseg models | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SYSTEM_ERROR
    except OSError as e:
        print(f"error: {_os_error(e)}", file=sys.stderr)
        return EXIT_SYSTEM_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``, taking ``KEY=VALUE`` words after flags as overrides of the subcommand.

    argparse fills a positional list once, so ``train CONFIG --dry-run a.b=1`` would leave
    ``a.b=1`` unrecognised; such words join ``args.overrides``. A config path that is really
    an override (``volseg models a.b=1``) joins them too. Anything else unknown is an error
    shown with the subcommand's own usage.
    """
    args, extra = parser.parse_known_args(argv)
    command = getattr(args, "command_parser", parser)
    takes_overrides = isinstance(getattr(args, "overrides", None), list)
    config = getattr(args, "config", None)
    if takes_overrides and _is_override(str(config)) and not Path(str(config)).exists():
        args.overrides.insert(0, str(config))
        args.config = None
    if extra:
        if not takes_overrides or not all(_is_override(word) for word in extra):
            command.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides.extend(extra)
    return args


def _is_override(word: str) -> bool:
    key, eq, _ = word.partition("=")
    return bool(eq) and bool(key) and not key.startswith("-") and "/" not in key


def _os_error(error: OSError) -> str:
    """One line for a file the operating system refused, with what to do."""
    where = f"{error.filename}: " if error.filename else ""
    reason = error.strerror or str(error) or type(error).__name__
    hints = {
        errno.ENOSPC: "free some space or write to another disk",
        errno.EDQUOT: "free some space or write to another disk",
        errno.EROFS: "write to another folder",
        errno.EACCES: "write to a folder you may write to",
        errno.EPERM: "write to a folder you may write to",
    }
    hint = hints.get(error.errno or 0, "check the path, its permissions and the disk")
    return " ".join(f"{where}{reason}; {hint}".split())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="volseg",
        description="3D medical image segmentation and grading with slice-wise DINOv2 "
        "encoders and light 3D heads.",
    )
    parser.add_argument("--version", action="version", version=f"volseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser
