"""The shared progress helper: bars only for a terminal, items always passed through."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console
from rich.progress import Progress, TextColumn

from volseg.progress import bars_wanted, track


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bars_under_pytest_or_when_stderr_is_not_a_terminal(monkeypatch):
    assert not bars_wanted()  # PYTEST_CURRENT_TEST is set
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not bars_wanted()
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert bars_wanted()
    monkeypatch.setenv("VOLSEG_NO_PROGRESS", "1")
    assert not bars_wanted()


def test_track_yields_every_item_with_or_without_a_bar(monkeypatch):
    assert list(track(iter(range(5)), "x")) == [0, 1, 2, 3, 4]
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert list(track(range(3), "own bar")) == [0, 1, 2]
    assert list(track(range(3), "off", enabled=False)) == [0, 1, 2]


def test_track_adds_its_bar_to_a_live_display_and_removes_it(monkeypatch):
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.setattr(sys, "stderr", _Terminal())
    display = Progress(
        TextColumn("{task.description} loss {task.fields[loss]}"),
        console=Console(file=io.StringIO()),
    )
    seen = []
    with display:
        for item in track(["a", "b"], "validation", progress=display, loss="-"):
            (task,) = display.tasks
            seen.append((item, task.description, task.total, task.completed))
        assert display.tasks == []
    assert seen == [("a", "validation", 2, 0), ("b", "validation", 2, 1)]


@pytest.mark.parametrize("enabled", [True, False])
def test_validation_counts_its_samples_on_the_training_display(monkeypatch, enabled):
    """validate_segmentation adds a "validation" bar to the display it is given."""
    import torch

    from volseg.engine import validate

    calls = []

    def fake_track(samples, description, **kwargs):
        calls.append((description, kwargs["enabled"], kwargs["progress"]))
        return samples

    monkeypatch.setattr(validate, "track", fake_track)
    monkeypatch.setattr(
        validate, "sliding_window_logits", lambda model, image, **kw: torch.zeros(1, 2, 2, 2, 1)
    )
    display = object() if enabled else None
    sample = {"image": torch.zeros(1, 2, 2, 1), "label": torch.zeros(1, 2, 2, 1)}
    model = torch.nn.Linear(1, 1)
    from volseg.runtime import DistContext

    metrics = validate.validate_segmentation(
        model, [sample], class_names=["bg", "organ"], slab=1, overlap=0.0, sw_batch_size=1,
        amp="no", ctx=DistContext(), progress=display,
    )  # fmt: skip
    assert calls == [("validation", enabled, display)]
    assert metrics["dice/organ"] == 1.0
