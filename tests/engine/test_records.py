"""metrics.jsonl / metrics.csv on a full disk or a read-only folder: the error names the file
(issue 14, findings 5 and 6); a line cut short by a full disk does not break --resume."""

from __future__ import annotations

import errno
import json
import pathlib

import pytest

from volseg.cli.main import _os_error
from volseg.engine.records import RunRecords

ROW = {"epoch": 0, "step": 4, "train_loss": 0.5}


def refuse(monkeypatch, when, error_number: int, *, named: bool) -> None:
    """``Path.open`` of paths matching ``when`` returns a file whose ``write`` fails (or, for
    a read-only folder, ``open`` itself fails, naming the path opened)."""
    real_open = pathlib.Path.open

    class Full:
        def __init__(self, file):
            self.file = file

        def write(self, text):
            raise OSError(error_number, "No space left on device")  # no file name: a flush

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def fake_open(self, mode="r", *args, **kwargs):
        if not when(self):
            return real_open(self, mode, *args, **kwargs)
        if named:
            raise OSError(error_number, "Permission denied", str(self))
        return Full(real_open(self, mode, *args, **kwargs))

    monkeypatch.setattr(pathlib.Path, "open", fake_open)


def test_a_full_disk_names_metrics_jsonl(monkeypatch, tmp_path):
    records = RunRecords(tmp_path)
    refuse(monkeypatch, lambda p: p.name == "metrics.jsonl", errno.ENOSPC, named=False)
    with pytest.raises(OSError) as info:
        records.log(ROW)
    assert (info.value.errno, info.value.filename) == (
        errno.ENOSPC,
        str(tmp_path / "metrics.jsonl"),
    )
    assert _os_error(info.value) == (
        f"{tmp_path / 'metrics.jsonl'}: No space left on device; free some space or write to "
        "another disk"
    )
    records.close()


def test_a_read_only_folder_names_metrics_csv_not_its_temporary_file(monkeypatch, tmp_path):
    records = RunRecords(tmp_path)
    refuse(monkeypatch, lambda p: p.name.startswith(".tmp-"), errno.EACCES, named=True)
    with pytest.raises(OSError) as info:
        records.log(ROW)
    assert (info.value.errno, info.value.filename) == (errno.EACCES, str(tmp_path / "metrics.csv"))
    assert not list(tmp_path.glob(".tmp-*"))
    records.close()


def test_resume_drops_a_line_cut_short_and_later_epochs(tmp_path):
    rows = [{"epoch": e, "step": 4 * (e + 1), "train_loss": 1.0 / (e + 1)} for e in range(3)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "metrics.jsonl").write_text(text + '{"epoch": 3, "st')  # the disk filled up
    records = RunRecords(tmp_path, resume_epoch=1, resume_step=8)
    assert records.rows == rows[:2]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows[:2]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "epoch,step,train_loss"
    records.close()
