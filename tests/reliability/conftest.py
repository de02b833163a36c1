"""Bad inputs built in ``tmp_path``, run through the command a user types.

Every test runs ``python -m volseg ...`` in a subprocess (with a timeout, so a hang fails
instead of blocking the suite) and checks three things: the exit status, a one-line message
naming the file or key, and that nothing outside the output folder changed
(:func:`snapshot` before, :func:`changed` after).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.inference.conftest import write_grading_checkpoint, write_segmentation_checkpoint

TIMEOUT_S = 120
ROOT = Path(__file__).parents[2]


def volseg(*args: str | Path, cwd: Path | None = None, timeout: float = TIMEOUT_S):
    """Run ``python -m volseg ARGS``; returns the CompletedProcess (text, both streams kept)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "volseg", *map(str, args)],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def error_line(result) -> str:
    """The one ``error: ...`` line a failed command printed (asserting there is exactly one)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> content hash (or a kind) of everything under ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir" if path.is_dir() else "special"
    return out


def changed(before: dict[str, str], root: Path, *, inside: Path | None = None) -> list[str]:
    """Paths under ``root`` created, deleted or modified since ``before``, except in ``inside``."""
    after = snapshot(root)
    keys = set(before) | set(after)
    diff = sorted(k for k in keys if before.get(k) != after.get(k))
    if inside is not None:
        prefix = inside.relative_to(root).as_posix()
        diff = [k for k in diff if k != prefix and not k.startswith(prefix + "/")]
    return diff


@pytest.fixture(scope="session")
def organs_template(tmp_path_factory) -> Path:
    """A 2-case tiny organ dataset written once by ``volseg synth``; copy it before changing it."""
    out = tmp_path_factory.mktemp("synth")
    result = volseg("synth", "--dataset", "organs", "--size", "tiny", "--cases", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    return out / "organs"


@pytest.fixture
def organs(organs_template, tmp_path) -> Path:
    """This test's own copy of the organ dataset: ``tmp_path/data/manifest.json``."""
    data = tmp_path / "data"
    shutil.copytree(organs_template, data)
    return data / "manifest.json"


@pytest.fixture(scope="session")
def seg_model(tmp_path_factory) -> Path:
    """A run folder with a tiny random segmentation checkpoint (test-size ViT, CPU)."""
    run = tmp_path_factory.mktemp("seg_run")
    write_segmentation_checkpoint(run / "checkpoints" / "best.pt")
    return run


@pytest.fixture(scope="session")
def grade_model(tmp_path_factory) -> Path:
    """A tiny random grading checkpoint with modalities T1 and FLAIR."""
    return write_grading_checkpoint(tmp_path_factory.mktemp("grade_run") / "best.pt")


@pytest.fixture
def train_config(organs, tmp_path):
    """A 2-case organ config with the test-size ViT: an epoch takes about a second."""
    path = tmp_path / "tiny.yaml"
    config = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "data": {"manifest": str(organs), "folds": 2, "slab": 8, "mirror": False},
        "model": {
            "encoder": {"name": "vit_test_patch14_dinov2"},
            "head": {"channels": 8, "depth": 1},
        },
        "train": {"batch_size": 1, "num_workers": 0, "warmup_epochs": 1, "val_every": 1},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def edit_manifest(manifest: Path, edit) -> Path:
    """Apply ``edit(doc)`` to a volseg manifest JSON in place; returns its path."""
    doc = json.loads(manifest.read_text())
    edit(doc)
    manifest.write_text(json.dumps(doc, indent=2))
    return manifest


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(options)`` mounts a small tmpfs at a fresh folder (root only, else skip)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)])
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(disk: Path) -> None:
    """Write zeros into ``disk`` until it is full."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass
