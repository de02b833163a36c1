"""What training writes, when the disk or an earlier crash spoils it (issue 14, findings 5 and
9): a damaged feature-cache entry is recomputed with a warning, a checkpoint write cut short
by a kill is cleaned up at --resume, and a full disk ends in one line naming the file while
the last good checkpoint stays whole."""

from __future__ import annotations

import errno

import pytest
import torch

from tests.reliability.conftest import changed, error_line, fill, snapshot, volseg
from volseg.engine.checkpoint import save_checkpoint

DISK_FULL = "No space left on device; free some space or write to another disk"


def test_resume_recomputes_damaged_cache_entries_and_drops_a_cut_short_checkpoint(
    train_config, tmp_path
):
    run = tmp_path / "runs" / "tiny"
    first = volseg("train", train_config, "train.epochs=1", "--no-progress")
    assert first.returncode == 0, first.stderr
    cut, foreign = sorted((run / "cache").glob("*.pt"))
    cut.write_bytes(cut.read_bytes()[:1000])  # a write cut short by an older version
    torch.save({"format": "volseg-feature-cache/1", "id": "x", "features": 1}, foreign)
    partial = run / "checkpoints" / ".tmp-0123abcd-last.pt"  # a kill during torch.save
    partial.write_bytes((run / "checkpoints" / "last.pt").read_bytes()[:5000])
    before = snapshot(tmp_path)
    result = volseg("train", "--resume", run, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = sorted(line for line in result.stderr.splitlines() if line.startswith("warning:"))
    assert warnings == sorted(
        [
            f"warning: {cut}: feature-cache entry is unreadable (PytorchStreamReader failed "
            "reading zip archive: failed finding central directory); recomputing it",
            f"warning: {foreign}: feature-cache entry belongs to case 'x', not "
            f"'{_case_of(run, foreign)}'; recomputing it",
        ]
    )
    assert "2 volumes encoded" in result.stderr + result.stdout
    assert f"removed {partial}, a checkpoint write cut short" in result.stderr + result.stdout
    assert not partial.exists()
    assert changed(before, tmp_path, inside=run) == []


def _case_of(run, entry) -> str:
    """The case an entry's name stands for: the one whose recomputed entry says so."""
    return torch.load(entry, weights_only=True)["id"] if entry.stat().st_size > 1000 else "?"


@pytest.mark.parametrize("where", ["cache", "checkpoints"])
def test_disk_full_during_training_is_one_line_naming_the_file(
    train_config, mount_tmpfs, tmp_path, where
):
    """Room for the run's small files, none for a cache entry (430 kB) or checkpoint (1 MB)."""
    disk = mount_tmpfs("size=384k")
    if where == "cache":
        argv = [f"train.cache_dir={disk / 'cache'}"]
        fill(disk)
    else:
        argv = [f"output_dir={disk / 'runs'}", f"train.cache_dir={tmp_path / 'cache'}"]
    before = snapshot(tmp_path / "data")  # the inputs; the run writes where argv says
    result = volseg("train", train_config, "train.epochs=1", "--no-progress", *argv)
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    folder = disk / "cache" if where == "cache" else disk / "runs" / "tiny" / "checkpoints"
    assert line.startswith(f"error: {folder}/")
    assert line.endswith(f".pt: {DISK_FULL}")
    assert list(folder.glob(".tmp-*")) == []  # no half-written file left behind
    assert changed(before, tmp_path / "data") == []


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(mount_tmpfs):
    disk = mount_tmpfs("size=1536k")
    path = disk / "last.pt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.zeros(200_000)})  # 800 kB
    with pytest.raises(OSError) as error:
        save_checkpoint(path, {"epoch": 2, "weights": torch.ones(200_000)})
    assert (error.value.errno, error.value.filename) == (errno.ENOSPC, str(path))
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in disk.iterdir()) == ["last.pt"]


def test_a_read_only_cache_folder_is_one_line(train_config, mount_tmpfs):
    folder = mount_tmpfs("ro,size=64k")
    result = volseg(
        "train", train_config, "train.epochs=1", "--no-progress", f"train.cache_dir={folder}"
    )
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    assert line.startswith(f"error: {folder}/")
    assert line.endswith(".pt: Read-only file system; write to another folder")
