"""Progress bars for the long loops (validation, evaluation, cache filling, synthesis).

One helper, :func:`track`, so every loop shows the same bar and follows the same rule: a bar
is drawn only for a person watching, that is when stderr is a terminal, not under pytest and
not with ``VOLSEG_NO_PROGRESS`` set. Logs redirected to a file and CI output stay free of
bar frames.

A loop that runs while another rich display is live (validation inside the training epoch
bar) passes that display as ``progress``; its bar is then added to it as one more task, since
rich allows one live display at a time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

T = TypeVar("T")
OFF_VARIABLE = "VOLSEG_NO_PROGRESS"


def bars_wanted() -> bool:
    """True when a bar would be seen: stderr is a terminal, not under pytest, not switched off
    with ``VOLSEG_NO_PROGRESS=1``."""
    if os.environ.get(OFF_VARIABLE, "") not in ("", "0") or "PYTEST_CURRENT_TEST" in os.environ:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def new_progress(
    *,
    transient: bool = True,
    fields: Sequence[str] = (),
    console: Console | None = None,
    disable: bool = False,
) -> Progress:
    """A rich progress display on stderr: description, bar, done/total, ``fields`` (text
    columns such as ``"loss {task.fields[loss]}"``), elapsed, remaining.

    ``console``: print through this console (lines printed with it then stay above the live
    bar); ``disable``: draw nothing (the console still prints).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(field) for field in fields),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True, highlight=False),
        transient=transient,
        disable=disable,
    )


def track(
    items: Iterable[T],
    description: str,
    *,
    total: int | None = None,
    enabled: bool = True,
    progress: Progress | None = None,
    **fields: Any,
) -> Iterator[T]:
    """Yield ``items`` while a bar counts them.

    Args:
        items: what the loop goes through.
        description: the bar's label (``"validation"``, ``"evaluating"``, ...).
        total: number of items; default ``len(items)`` when it has one (else no bar length).
        enabled: False draws nothing (e.g. ranks other than 0, ``--quiet``).
        progress: a live rich display to add this bar to (removed again at the end); without
            one a transient display of its own is drawn.
        fields: task fields the columns of ``progress`` expect (e.g. the training bar's
            ``loss``).

    A bar is drawn only when ``enabled`` and :func:`bars_wanted`; otherwise the items pass
    through untouched.
    """
    if not enabled or not bars_wanted():
        yield from items
        return
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    own = progress is None
    display = new_progress() if own else progress
    assert display is not None
    if own:
        display.start()
    task = display.add_task(description, total=total, **fields)
    try:
        for item in items:
            yield item
            display.advance(task)
    finally:
        display.remove_task(task)
        if own:
            display.stop()
