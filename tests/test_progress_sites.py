"""The long loops count on :func:`volseg.progress.track` and pass their items through unchanged;
a run whose stderr is not a terminal prints no bar (issue 13, item 5)."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from volseg.data.manifest import Case, ImageSource
from volseg.engine import cache as cache_module
from volseg.engine.cache import FeatureCache
from volseg.metrics import evaluate as evaluate_module
from volseg.metrics import evaluate_grading
from volseg.synth import glioma as glioma_module
from volseg.synth import shapes, synthesize_glioma, synthesize_organs

ROOT = Path(__file__).parents[1]
BAR = "━"  # rich's bar character


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def bars_on(monkeypatch) -> io.StringIO:
    """Bars drawn as for a person at a terminal; returns what they wrote. Called in the test
    body: pytest sets PYTEST_CURRENT_TEST again for the call after fixtures ran."""
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.delenv("VOLSEG_NO_PROGRESS", raising=False)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    return terminal


def recorder(monkeypatch, module) -> list[tuple[str, list, dict]]:
    """Replace ``module.track`` by one that records ``(description, items, kwargs)``."""
    calls = []

    def fake_track(items, description, **kwargs):
        items = list(items)
        calls.append((description, items, kwargs))
        return iter(items)

    monkeypatch.setattr(module, "track", fake_track)
    return calls


# --- feature cache ---------------------------------------------------------------------------


def fill(tmp_path: Path, *, shard=(0, 1), progress=True):
    cases, items = [], []
    tmp_path.mkdir(exist_ok=True)
    for k in range(3):
        image = tmp_path / f"case{k}.nii.gz"
        if not image.exists():  # only the file's identity enters the key
            image.write_bytes(b"x" * (k + 1))
        cases.append(Case(f"case{k}", {"CT": ImageSource(image)}))
        items.append({"id": f"case{k}", "value": float(k)})
    cache = FeatureCache(tmp_path / "cache", {"encoder": "fake"}, torch.float32)
    report = cache.fill(
        cases,
        items,
        kind="val",
        preprocess=lambda d: {"id": d["id"], "image": torch.full((1, 2, 2, 2), d["value"])},
        encode=lambda image: image.repeat(1, 3, 1, 1, 1),
        shard=shard,
        progress=progress,
    )
    return cache, cases, report


def test_cache_fill_counts_this_ranks_cases_on_a_bar(monkeypatch, tmp_path):
    calls = recorder(monkeypatch, cache_module)
    cache, cases, report = fill(tmp_path)
    assert calls == [("feature cache (val)", [0, 1, 2], {"enabled": True})]
    assert report.computed == 3
    for k, case in enumerate(cases):  # every case encoded from its own item
        assert torch.equal(
            cache.load(cache.key(case, "val"))["features"], torch.full((3, 2, 2, 2), k)
        )
    calls.clear()
    fill(tmp_path / "rank1", shard=(1, 2))
    assert calls == [("feature cache (val)", [1], {"enabled": False})]  # rank 0 draws
    calls.clear()
    fill(tmp_path / "quiet", progress=False)
    assert calls[0][2] == {"enabled": False}


def test_cache_fill_with_a_bar_computes_then_reuses_every_entry(monkeypatch, tmp_path):
    terminal = bars_on(monkeypatch)
    _, _, first = fill(tmp_path)
    _, _, again = fill(tmp_path)
    assert (first.computed, first.reused, again.computed, again.reused) == (3, 0, 0, 3)
    assert "feature cache (val)" in terminal.getvalue()


# --- evaluation ------------------------------------------------------------------------------


def _square(x: int, y: int) -> tuple[int, int]:
    return x * x, y


@pytest.mark.parametrize("with_bar", [False, True])
def test_evaluation_jobs_come_back_in_order(monkeypatch, with_bar):
    terminal = bars_on(monkeypatch) if with_bar else io.StringIO()
    jobs = [(k, str(k)) for k in range(5)]
    assert evaluate_module._run(_square, jobs, workers=1) == [(k * k, str(k)) for k in range(5)]
    assert ("evaluating" in terminal.getvalue()) == with_bar


def test_evaluation_counts_cases_and_grading_rows(monkeypatch):
    calls = recorder(monkeypatch, evaluate_module)
    jobs = [(2, "a"), (3, "b")]
    assert evaluate_module._run(_square, jobs, workers=1) == [(4, "a"), (9, "b")]
    assert calls == [("evaluating", jobs, {})]
    calls = recorder(monkeypatch, evaluate_grading)
    rows = [{"case_id": "a", "prob_x": "0.25", "prob_y": "0.75"}]
    probs = evaluate_grading._probabilities(rows, ["x", "y"], Path("p.csv"))
    assert probs["a"].tolist() == [0.25, 0.75]
    assert calls == [("reading predictions", [(2, rows[0])], {"total": 1})]


# --- synthesis -------------------------------------------------------------------------------


def test_synth_counts_cases_and_writes_the_same_files_with_a_bar(monkeypatch, tmp_path):
    calls = recorder(monkeypatch, shapes)
    quiet = synthesize_organs(tmp_path / "quiet", cases=2, shape=(16, 16, 8), seed=3)
    assert calls == [("synth organs", [(0, "organs_000"), (1, "organs_001")], {"total": 2})]
    calls = recorder(monkeypatch, glioma_module)
    synthesize_glioma(tmp_path / "glioma", cases=1, shape=(16, 16, 8), seed=3)
    assert [c[:2] for c in calls] == [("synth glioma", [(0, "glioma_000")])]
    monkeypatch.undo()
    terminal = bars_on(monkeypatch)
    shown = synthesize_organs(tmp_path / "shown", cases=2, shape=(16, 16, 8), seed=3)
    for name in ("imagesTr/organs_001.nii.gz", "labelsTr/organs_000.nii.gz"):
        assert (shown.parent / name).read_bytes() == (quiet.parent / name).read_bytes()
    assert "synth organs" in terminal.getvalue()


# --- training and prediction displays --------------------------------------------------------


def test_training_and_cohort_displays_follow_the_terminal_rule(monkeypatch):
    from volseg.engine.records import epoch_progress
    from volseg.inference.cohort import _progress

    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file
    with epoch_progress(True) as bar:
        assert bar is None
    assert _progress(True).disable
    monkeypatch.setattr(sys, "stderr", _Terminal())
    with epoch_progress(True) as bar:
        assert bar is not None
    assert not _progress(True).disable
    assert _progress(False).disable


# --- a real command ------------------------------------------------------------------------


def synth_stderr(tmp_path: Path, *, terminal: bool) -> str:
    """stderr of ``volseg synth`` (4 tiny cases), through a pipe or a pseudo-terminal."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_CURRENT_TEST", "VOLSEG_NO_PROGRESS")
    }
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TERM="xterm", COLUMNS="120")
    argv = [sys.executable, "-m", "volseg", "synth", "--dataset", "organs", "--size", "tiny"]
    argv += ["--cases", "4", "--out", str(tmp_path / ("tty" if terminal else "pipe"))]
    if not terminal:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stderr
    main, child = pty.openpty()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=child, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert process.wait(timeout=120) == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_synth_draws_a_bar_only_on_a_terminal(tmp_path):
    assert BAR not in synth_stderr(tmp_path, terminal=False)
    assert BAR in synth_stderr(tmp_path, terminal=True)  # the check above can fail
