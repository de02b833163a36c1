"""Prefetch: the next case is read and preprocessed on a background thread while one runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import GEOMETRIES
from tests.inference._dist_predict import main as cli
from tests.inference.conftest import body_ct
from volseg.inference import predict_cohort
from volseg.inference.predict import Predictor
from volseg.inference.prefetch import prefetch_wanted, prefetched
from volseg.io import Geometry, read_image, write_image

WAIT_S = 30.0  # how long a test waits for a background thread that should be running


def cases(folder: Path, names=("a", "b", "c")) -> Path:
    folder.mkdir()
    g = GEOMETRIES["oblique"]
    for i, name in enumerate(names):
        geometry = Geometry((20, 17, 6), g.spacing, g.origin, g.direction)
        write_image(body_ct(geometry, i), folder / f"{name}.nii.gz")
    return folder


def name(sources) -> str:
    """The file name of a one-volume case's sources (a path, or a tuple of one)."""
    first = sources[0] if isinstance(sources, tuple | list) else sources
    return Path(str(first)).name


class Recorder:
    """Wraps a predictor's ``prepare`` and ``run``: which cases were prepared, on which thread,
    and whether the second case's preparation started while the first case was running."""

    def __init__(self, predictor: Predictor, wait_s: float = WAIT_S) -> None:
        self.prepared: list[str] = []
        self.threads: list[threading.Thread] = []
        self.overlapped: bool | None = None
        self.ahead_while_running: int | None = None
        self.second_started = threading.Event()
        self.runs = 0
        self.wait_s = wait_s
        prepare, run = predictor.prepare, predictor.run

        def recording_prepare(sources, *, mask=None, timer):
            self.prepared.append(name(sources))
            self.threads.append(threading.current_thread())
            if len(self.prepared) == 2:
                self.second_started.set()
            return prepare(sources, mask=mask, timer=timer)

        def recording_run(prepared, *, timer, probabilities=False):
            self.runs += 1
            if self.runs == 1:  # the first case waits for the second's preparation to start
                self.overlapped = self.second_started.wait(self.wait_s)
                time.sleep(0.2)  # room for a third preparation, which must not start
                self.ahead_while_running = len(self.prepared)
            return run(prepared, timer=timer, probabilities=probabilities)

        predictor.prepare = recording_prepare
        predictor.run = recording_run


@pytest.fixture
def predictor(seg_checkpoint) -> Predictor:
    return Predictor.from_checkpoint(seg_checkpoint)


def test_prefetch_gives_the_same_outputs_and_timing_columns(seg_checkpoint, tmp_path):
    folder = cases(tmp_path / "in")
    off = predict_cohort(seg_checkpoint, folder, tmp_path / "off", progress=False, prefetch=False)
    on = predict_cohort(seg_checkpoint, folder, tmp_path / "on", progress=False, prefetch=True)
    assert [r["status"] for r in on.rows] == [r["status"] for r in off.rows] == ["ok"] * 3
    for a, b in zip(off.rows, on.rows, strict=True):
        assert a.keys() == b.keys() and a["case_id"] == b["case_id"]
        assert b["read"] > 0 and b["preprocess"] > 0 and b["encode"] > 0 and b["peak_memory_mb"] > 0
        assert b["total"] >= b["read"] + b["preprocess"]
    for name in ("a", "b", "c"):
        want, got = (
            read_image(tmp_path / "off" / f"{name}.nii.gz"),
            read_image(tmp_path / "on" / f"{name}.nii.gz"),
        )
        assert got.array.dtype == want.array.dtype
        assert got.array.tobytes() == want.array.tobytes()
        assert got.geometry.matches(want.geometry)
    assert (tmp_path / "on" / "timings.csv").read_text().splitlines()[0] == (
        (tmp_path / "off" / "timings.csv").read_text().splitlines()[0]
    )


def test_a_broken_middle_case_fails_alone_with_prefetch(seg_checkpoint, tmp_path):
    folder = cases(tmp_path / "in", names=("a", "c"))
    (folder / "b.nii.gz").write_bytes(b"\x1f\x8b\x08 truncated, not gzip")
    on = predict_cohort(seg_checkpoint, folder, tmp_path / "on", progress=False, prefetch=True)
    assert [r["status"] for r in on.rows] == ["ok", "failed", "ok"]
    assert "b.nii.gz" in on.rows[1]["error"] and "\n" not in on.rows[1]["error"]
    assert on.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "on").iterdir()) == [
        "a.nii.gz",
        "c.nii.gz",
        "timings.csv",
    ]
    off = predict_cohort(seg_checkpoint, folder, tmp_path / "off", progress=False, prefetch=False)
    assert off.rows[1]["error"] == on.rows[1]["error"]


@pytest.mark.parametrize("prefetch", [True, False, None])
def test_the_next_case_is_prepared_while_one_runs(predictor, tmp_path, prefetch):
    folder = cases(tmp_path / "in", names=("a", "b", "c", "d"))
    on = bool(prefetch)  # None: the model is on the CPU, so off
    recorder = Recorder(predictor, wait_s=WAIT_S if on else 1.0)
    result = predict_cohort(predictor, folder, tmp_path / "out", progress=False, prefetch=prefetch)
    assert [r["status"] for r in result.rows] == ["ok"] * 4
    assert recorder.prepared == ["a.nii.gz", "b.nii.gz", "c.nii.gz", "d.nii.gz"]
    assert recorder.overlapped is on  # case b's preparation began while case a ran
    assert recorder.ahead_while_running == (2 if on else 1)  # one case ahead, never two
    main = threading.main_thread()
    if on:
        assert all(t is not main and t.daemon for t in recorder.threads)
    else:
        assert all(t is main for t in recorder.threads)


def test_skip_existing_with_prefetch_prepares_only_the_missing_case(predictor, tmp_path):
    folder = cases(tmp_path / "in")
    out = tmp_path / "out"
    predict_cohort(predictor, folder, out, progress=False, prefetch=True)
    (out / "b.nii.gz").unlink()
    recorder = Recorder(predictor, wait_s=0.1)
    again = predict_cohort(
        predictor, folder, out, skip_existing=True, progress=False, prefetch=True
    )
    assert [r["status"] for r in again.rows] == ["skipped", "ok", "skipped"]
    assert recorder.prepared == ["b.nii.gz"] and recorder.runs == 1
    assert (out / "b.nii.gz").is_file()


def test_ctrl_c_does_not_wait_for_the_case_being_prepared(predictor, tmp_path):
    folder = cases(tmp_path / "in")
    release, stuck = threading.Event(), threading.Event()
    prepare = predictor.prepare

    def slow_prepare(sources, *, mask=None, timer):
        if name(sources) == "b.nii.gz":
            stuck.set()
            release.wait(WAIT_S)  # a long read: Ctrl-C must not wait for it
        return prepare(sources, mask=mask, timer=timer)

    def interrupted_run(prepared, *, timer, probabilities=False):
        assert stuck.wait(WAIT_S)
        raise KeyboardInterrupt

    predictor.prepare, predictor.run = slow_prepare, interrupted_run
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            predict_cohort(predictor, folder, tmp_path / "out", progress=False, prefetch=True)
        assert time.perf_counter() - start < WAIT_S / 2
    finally:
        release.set()


def test_prefetched_is_one_ahead_and_reraises_in_order():
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        if i == 1:
            raise ValueError("case 1")
        return i * 10

    got = []
    for i, take in prefetched(work, [0, 1, 2], background=True):
        try:
            got.append((i, take()))
        except ValueError as e:
            got.append((i, str(e)))
        time.sleep(0.05)
        assert len(started) <= i + 2  # never more than one item ahead
    assert got == [(0, 0), (1, "case 1"), (2, 20)] and started == [0, 1, 2]
    assert [take() for _, take in prefetched(work, [2, 0], background=False)] == [20, 0]


def test_prefetch_default_follows_the_device():
    assert prefetch_wanted(None, torch.device("cuda", 0)) is True
    assert prefetch_wanted(None, "cpu") is False and prefetch_wanted(None, None) is False
    assert prefetch_wanted(True, "cpu") is True and prefetch_wanted(False, "cuda") is False


@pytest.mark.parametrize(
    ("flag", "want"), [([], None), (["--prefetch"], True), (["--no-prefetch"], False)]
)
def test_cli_prefetch_flag(seg_checkpoint, tmp_path, monkeypatch, capsys, flag, want):
    import volseg.inference.cohort as cohort

    seen = {}

    def fake_cohort(*args, **kwargs):
        seen.update(kwargs)
        return cohort.CohortResult(tmp_path / "out", [], tables=False)

    monkeypatch.setattr(cohort, "predict_cohort", fake_cohort)
    image = cases(tmp_path / "in", names=("ct",)) / "ct.nii.gz"
    args = ["--model", str(seg_checkpoint), "-i", str(image), "-o", str(tmp_path / "out"), *flag]
    assert cli(args) == 0
    assert seen["prefetch"] is want
    with pytest.raises(SystemExit):
        cli(["--help"])
    assert "--prefetch" in capsys.readouterr().out
