"""Where a report was made: date, volseg's git commit, Python, packages, CPU and GPU."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("volseg", "torch", "monai", "timm", "numpy", "scipy", "SimpleITK", "nibabel")


def environment() -> list[tuple[str, str]]:
    """Where this report was made: date, volseg's git commit, Python, packages, CPU, GPU."""
    items = [
        ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("git commit", _git_commit()),
        ("python", sys.version.split()[0]),
        ("platform", platform.platform()),
        ("CPU", f"{_cpu_name()} ({os.cpu_count()} logical cores)"),
    ]
    for package in PACKAGES:
        try:
            items.append((package, importlib.metadata.version(package)))
        except importlib.metadata.PackageNotFoundError:
            items.append((package, "not installed"))
    items.append(("GPU", _gpu_name()))
    return items


def _git_commit() -> str:
    """Short commit of the volseg source in use, marked when it has uncommitted changes."""
    top = _git("rev-parse", "--show-toplevel")  # a site-packages install may sit in another repo
    commit = _git("rev-parse", "--short", "HEAD")
    if not top or not commit or not (Path(top) / "volseg" / "__init__.py").is_file():
        return "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{commit} (with uncommitted changes)" if dirty else commit


def _git(*args: str) -> str:
    """Output of a read-only git command in volseg's source tree; '' when it fails."""
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpu_name() -> str:
    try:
        import torch
    except ImportError:
        return "none (torch not installed)"
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return (
            f"{torch.cuda.get_device_name(0)} x {count}"
            if count > 1
            else (torch.cuda.get_device_name(0))
        )
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "Apple MPS"
    return "none (CPU only)"
