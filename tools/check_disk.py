"""Fail early, in one line, when a fresh install would run out of disk.

`make install` runs this before pip: torch's wheel for these machines unpacks to about 6 GiB,
and pip stopped halfway by a full disk leaves a broken `.venv` and a long OSError. Standard
library only, since it runs before anything is installed.

    python tools/check_disk.py --need-gib 8 .venv
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

GIB = 1024**3


def existing_parent(path: Path) -> Path:
    """The path itself or its nearest existing ancestor (the venv may not exist yet)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def shortfalls(paths: list[Path], need_gib: float, temp: Path | None = None) -> list[str]:
    """One message per filesystem among `paths` with less than `need_gib` free; ``temp`` (pip's
    unpacking folder) gets advice to point TMPDIR elsewhere."""
    messages = []
    seen = set()
    for path in [*paths, *([temp] if temp else [])]:
        where = existing_parent(path)
        device = where.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(where)
        if usage.free < need_gib * GIB:
            fix = "set TMPDIR to a roomier disk" if path == temp else "free space there"
            messages.append(
                f"error: {usage.free / GIB:.1f} GiB free on the disk holding {path}, the install "
                f"needs about {need_gib:g} GiB: {fix} and run make again"
            )
    return messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="where the install writes")
    parser.add_argument(
        "--need-gib", type=float, default=8.0, help="free space needed on each disk (default 8)"
    )
    args = parser.parse_args(argv)
    messages = shortfalls(args.paths, args.need_gib, temp=Path(tempfile.gettempdir()))
    for message in messages:
        print(message, file=sys.stderr)
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main())
