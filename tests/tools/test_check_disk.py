"""tools/check_disk.py: the install's one-line refusal when the disk is too full."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "check_disk.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )


def test_enough_space_passes_silently(tmp_path):
    result = run("--need-gib", "0", str(tmp_path / "not" / "yet" / ".venv"))
    assert result.returncode == 0
    assert result.stderr == ""


def test_too_little_space_is_one_line_naming_the_path(tmp_path):
    free_gib = shutil.disk_usage(tmp_path).free / 1024**3
    venv = tmp_path / ".venv"
    result = run("--need-gib", str(free_gib * 4 + 1), str(venv))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1  # tmp_path and TMPDIR share a filesystem here: reported once
    assert str(venv) in lines[0]
    assert "GiB free" in lines[0]
