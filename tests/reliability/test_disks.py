"""Full and read-only disks, file names that are not UTF-8, and outputs cut short (issue 14,
findings 4, 5, 6 and 9): one line each, and a cohort that keeps going."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from tests.reliability.conftest import changed, error_line, fill, snapshot, volseg
from volseg.io import read_image


def read_only_folder(mount_tmpfs, tmp_path) -> Path:
    """A folder nobody can write into: a read-only tmpfs as root, else mode 0555."""
    if os.geteuid() == 0:
        return mount_tmpfs("ro,size=64k")
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o555)
    return folder


def timings(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "timings.csv", newline="", encoding="utf-8") as f:
        return {row["case_id"]: row for row in csv.DictReader(f)}


def test_disk_full_fails_each_case_then_names_the_table(organs, seg_model, mount_tmpfs):
    disk = mount_tmpfs("size=64k")
    fill(disk)
    out = disk / "pred"
    result = volseg("predict", "--model", seg_model, "--input", organs, "--output", out, "--quiet")
    assert result.returncode == 1, result.stderr
    for case in ("organs_000", "organs_001"):  # both tried: the first failure stopped nothing
        assert f"  failed {case}: OSError: [Errno 28] No space left on device" in result.stderr
    assert error_line(result) == (
        f"error: {out / 'timings.csv'}: cannot write the table (No space left on device); fix "
        "the disk and re-run with --skip-existing (finished cases are kept)"
    )
    assert sorted(p.name for p in out.iterdir()) == []  # no partial file left behind


def test_disk_full_after_a_case_keeps_that_case(organs, seg_model, mount_tmpfs):
    """Room for some outputs: what fits is written whole, the rest fails by name."""
    disk = mount_tmpfs("size=64k")
    out = disk / "pred"
    first = volseg("predict", "--model", seg_model, "--input", organs, "--output", out, "--quiet")
    assert first.returncode == 0, first.stderr
    (out / "organs_001.nii.gz").unlink()
    fill(disk)
    again = volseg(
        "predict", "--model", seg_model, "--input", organs, "--output", out, "--skip-existing",
        "--quiet",
    )  # fmt: skip
    assert again.returncode == 1
    assert "  failed organs_001: OSError: [Errno 28] No space left on device" in again.stderr
    read_image(out / "organs_000.nii.gz")  # the skipped case is still whole


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_read_only_output_is_one_line_before_any_work(
    organs, seg_model, mount_tmpfs, tmp_path, command
):
    folder = read_only_folder(mount_tmpfs, tmp_path)
    out = folder / "out"
    if command == "predict":
        argv = ["predict", "--model", seg_model, "--input", organs, "--output", out]
        option = "--output"
    else:
        argv = ["evaluate", "--pred", organs.parent / "labelsTr", "--ref", organs, "--out", out]
        option = "--out"
    before = snapshot(tmp_path)
    result = volseg(*argv)
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert line.startswith(f"error: {out}: cannot write to the {option} folder (")
    assert line.endswith("); choose a folder you can write to")
    assert changed(before, tmp_path) == []


def test_read_only_train_output_is_one_line(train_config, mount_tmpfs, tmp_path):
    folder = read_only_folder(mount_tmpfs, tmp_path)
    result = volseg("train", train_config, f"output_dir={folder / 'runs'}", "train.epochs=1")
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    assert line.startswith(f"error: {folder / 'runs'}")
    assert "write to another folder" in line or "write to a folder you may write to" in line


def test_a_file_name_that_is_not_utf8_is_predicted_and_tabled(organs, seg_model, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    image = (organs.parent / "imagesTr" / "organs_000.nii.gz").read_bytes()
    try:
        (scans / os.fsdecode(b"scan_\xff.nii.gz")).write_bytes(image)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    (scans / "plain.nii.gz").write_bytes(image)
    out = tmp_path / "pred"
    argv = ["predict", "--model", seg_model, "--input", scans, "--output", out, "--quiet"]
    first = volseg(*argv)
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(os.fsencode(out))) == [
        b"plain.nii.gz", b"scan_\xff.nii.gz", b"timings.csv"
    ]  # fmt: skip
    table = timings(out)
    assert sorted(table) == ["plain", "scan_\\xff"]
    again = volseg(*argv, "--skip-existing")
    assert again.returncode == 0, again.stderr
    assert [row["status"] for row in timings(out).values()] == ["skipped", "skipped"]


def test_skip_existing_redoes_empty_and_truncated_outputs(organs, seg_model, tmp_path):
    out = tmp_path / "pred"
    argv = ["predict", "--model", seg_model, "--input", organs, "--output", out, "--quiet"]
    assert volseg(*argv).returncode == 0
    whole = {name: (out / name).read_bytes() for name in ("organs_000.nii.gz", "organs_001.nii.gz")}
    (out / "organs_000.nii.gz").write_bytes(b"")
    (out / "organs_001.nii.gz").write_bytes(whole["organs_001.nii.gz"][:100])
    result = volseg(*argv, "--skip-existing")
    assert result.returncode == 0, result.stderr
    assert [row["status"] for row in timings(out).values()] == ["ok", "ok"]
    for name, data in whole.items():
        assert (out / name).read_bytes() == data
    again = volseg(*argv, "--skip-existing")
    assert [row["status"] for row in timings(out).values()] == ["skipped", "skipped"]
    assert again.returncode == 0
