#!/usr/bin/env python3
"""Render a volseg report.html to a PNG with headless Chromium (for READMEs and CI artefacts).

usage:
  python tools/render_report.py demo_output/report/report.html --out report.png
  python tools/render_report.py report.html --out top.png --width 1400 --max-height 2400

Chromium comes from the system (Debian: ``apt-get install -y chromium``); it is never needed
by ``make test``. The page is loaded from a ``file://`` URL with networking features switched
off and a throw-away profile, so the screenshot also shows that the report renders offline.

The whole page is captured by default. Chromium's ``--screenshot`` captures only its window,
so the page is measured first: a copy of the HTML with a one-line script that puts the page's
height (after the images decoded) in its title is loaded with ``--dump-dom``, and the window
is then made that tall. ``--max-height`` caps the PNG (the top of the page). Exit status: 0
written, 2 Chromium missing or the input not found, 1 Chromium failed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "apt-get update && apt-get install -y chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


# Puts the page height in the title once everything (the embedded PNGs too) has loaded.
MEASURE_SCRIPT = (
    "<script>window.addEventListener('load',function(){document.title='volseg-height:'+"
    "Math.ceil(document.documentElement.scrollHeight)})</script>"
)
_HEIGHT = re.compile(r"<title>volseg-height:(\d+)</title>")
MEASURE_FALLBACK = 4000  # window height when the page cannot be measured


class RenderError(Exception):
    """Chromium is missing or failed; the message says what to do."""


def find_chromium(explicit: str | None = None) -> str | None:
    """Path of a Chromium/Chrome executable: ``explicit`` if it exists, else the first on PATH."""
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def page_height(html: Path, width: int, browser: str, timeout: float = 120.0) -> int | None:
    """Height in CSS pixels of ``html`` laid out ``width`` pixels wide; None when unknown."""
    text = Path(html).read_text(encoding="utf-8", errors="replace")
    index = text.lower().rfind("</body>")
    text = text[:index] + MEASURE_SCRIPT + text[index:] if index >= 0 else text + MEASURE_SCRIPT
    with tempfile.TemporaryDirectory(prefix="volseg-chromium-") as folder:
        copy = Path(folder) / "measure.html"
        copy.write_text(text, encoding="utf-8")
        command = [
            browser,
            *FLAGS,
            f"--user-data-dir={Path(folder) / 'profile'}",
            "--dump-dom",
            "--virtual-time-budget=20000",
            f"--window-size={width},1000",
            copy.as_uri(),
        ]
        result = _run(command, timeout)
    if result is None:
        return None
    match = _HEIGHT.search(result.stdout)
    return int(match.group(1)) if match else None


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess | None:
    """Run Chromium, its output decoded as UTF-8 whatever the locale; None on a timeout."""
    try:
        return subprocess.run(
            command, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None


def render(
    html: Path,
    png: Path,
    *,
    width: int = 1400,
    height: int | None = None,
    max_height: int | None = None,
    chromium: str | None = None,
    timeout: float = 120.0,
) -> Path:
    """Screenshot ``html`` (a local file) into ``png``, ``width`` CSS pixels wide.

    Args:
        height: window height; default the whole page (measured by :func:`page_height`;
            :data:`MEASURE_FALLBACK` when it cannot be measured).
        max_height: cap on the height (the PNG then shows the top of the page).

    Raises:
        RenderError: no Chromium found, Chromium failing or timing out, or no PNG written.
    """
    browser = find_chromium(chromium)
    if browser is None:
        raise RenderError(f"chromium not found; install it with: {INSTALL_HINT}")
    html, png = Path(html).resolve(), Path(png).resolve()
    if height is None:
        height = page_height(html, width, browser, timeout) or MEASURE_FALLBACK
    if max_height is not None:
        height = min(height, max_height)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".tmp-{png.name}")
    tmp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="volseg-chromium-") as profile:
        command = [
            browser,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={tmp}",
            f"--window-size={width},{height}",
            html.as_uri(),
        ]
        result = _run(command, timeout)
    if result is None:
        raise RenderError(f"{browser} did not finish within {timeout:.0f} s")
    if not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise RenderError(f"{browser} wrote no screenshot (exit {result.returncode}):\n{tail}")
    tmp.replace(png)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Render a report.html to PNG with headless Chromium.",
        epilog=f"Chromium missing? {INSTALL_HINT}",
    )
    parser.add_argument("html", type=Path, help="the report.html to render")
    parser.add_argument("--out", type=Path, help="PNG to write (default: next to the HTML)")
    parser.add_argument("--width", type=int, default=1400, help="window width in px (1400)")
    parser.add_argument(
        "--height", type=int, help="window height in px (default: the whole page, measured)"
    )
    parser.add_argument(
        "--max-height", type=int, help="cap the PNG at this many px from the top of the page"
    )
    parser.add_argument("--chromium", help="browser executable (default: first found on PATH)")
    args = parser.parse_args(argv)
    if not args.html.is_file():
        print(f"error: {args.html}: not found; pass a report.html", file=sys.stderr)
        return 2
    if find_chromium(args.chromium) is None:
        print(
            f"error: chromium not found; install it with:\n  {INSTALL_HINT}\n"
            "(or pass --chromium PATH to another Chromium/Chrome)",
            file=sys.stderr,
        )
        return 2
    out = args.out or args.html.with_suffix(".png")
    try:
        written = render(
            args.html,
            out,
            width=args.width,
            height=args.height,
            max_height=args.max_height,
            chromium=args.chromium,
        )
    except RenderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
