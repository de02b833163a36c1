"""tools/check_disk.py: the install's one-line refusal when the disk is too full."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "check_disk.py"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False, env=env
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
    assert "GiB free" in lines[0] and "free space there" in lines[0]


SHM = Path("/dev/shm")


@pytest.mark.skipif(
    not SHM.is_dir() or SHM.stat().st_dev == Path(__file__).stat().st_dev,
    reason="needs a temp folder on another filesystem",
)
def test_a_full_temp_disk_is_named_with_tmpdir_advice(tmp_path):
    need = (shutil.disk_usage(tmp_path).free + shutil.disk_usage(SHM).free) / 1024**3 + 1
    result = run("--need-gib", str(need), str(tmp_path), env={**os.environ, "TMPDIR": str(SHM)})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 2
    assert str(SHM) in lines[1] and "set TMPDIR" in lines[1]
