"""Prepare the next case of a cohort while the current one runs (``volseg predict --prefetch``).

Reading and preprocessing a case (:meth:`~volseg.inference.predict.Predictor.prepare`) is host
work; the network and post-processing (:meth:`~volseg.inference.predict.Predictor.run`) keep
the device busy. With prefetch on, one daemon thread prepares case ``i+1`` while the main
thread runs case ``i``: never more than one case ahead, so at most two prepared cases are in
memory at once. The background preparation is timed with a CPU :class:`StepTimer` (it never
waits on CUDA); its ``read`` and ``preprocess`` seconds go into the case's row as usual.

The thread is a daemon and is never joined: Ctrl-C in the main thread stops the cohort at
once, and a preparation still under way is abandoned (it only reads).

By default (``prefetch=None``) prefetch is on when the model runs on a CUDA device and off
otherwise: on a CPU, preparation would compete with torch's own threads for the same cores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

from volseg.inference.cases import CaseSpec
from volseg.inference.results import PreparedCase, StepTimer

__all__ = ["Staged", "prefetch_wanted", "prefetched", "stage_case"]

T = TypeVar("T")
R = TypeVar("R")


def prefetch_wanted(prefetch: bool | None, device: torch.device | str | None) -> bool:
    """``prefetch`` if given, else whether ``device`` is a CUDA device."""
    if prefetch is not None:
        return bool(prefetch)
    return device is not None and torch.device(device).type == "cuda"


@dataclass
class Staged:
    """A case's host work, done: skipped, or prepared, or the error preparing it raised.

    Attributes:
        skipped: the case's outputs already exist (``skip_existing``); nothing was prepared.
        prepared: the case read and preprocessed, until :meth:`pop` hands it over.
        error: what :meth:`Predictor.prepare` raised (an unreadable file, ...), or None.
        timer: the ``read`` and ``preprocess`` seconds.
        seconds: wall seconds of the preparation (where it ran: thread or main).
    """

    skipped: bool = False
    prepared: PreparedCase | None = None
    error: Exception | None = None
    timer: StepTimer = field(default_factory=StepTimer)
    seconds: float = 0.0

    def pop(self) -> PreparedCase:
        """The prepared case (this object lets go of it), or raise the preparation's error."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        prepared, self.prepared = self.prepared, None
        assert prepared is not None, "a skipped case, or popped twice"
        return prepared


def stage_case(
    predictor: Any,
    spec: CaseSpec,
    *,
    done: Callable[[CaseSpec], bool],
    timer: StepTimer,
) -> Staged:
    """Skip ``spec`` if ``done(spec)``, else prepare it; a failed preparation is kept, not raised.

    ``timer`` times the steps: a CPU timer (``StepTimer(None)``) on the background thread.
    """
    if done(spec):
        return Staged(skipped=True)
    start = time.perf_counter()
    try:
        prepared = predictor.prepare(spec.sources, mask=spec.mask, timer=timer)
    except Exception as error:  # the case fails alone, when its turn comes
        return Staged(error=error, timer=timer, seconds=time.perf_counter() - start)
    return Staged(prepared=prepared, timer=timer, seconds=time.perf_counter() - start)


class _Job(Generic[R]):
    """``work()`` on a daemon thread, started at once, or in the caller on :meth:`result`."""

    def __init__(self, work: Callable[[], R], background: bool) -> None:
        self._work: Callable[[], R] | None = work
        self._value: R | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._run, name="volseg-prefetch", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        work, self._work = self._work, None
        try:
            assert work is not None
            self._value = work()
        except BaseException as error:  # handed to the main thread by result()
            self._error = error
        finally:
            self._done.set()

    def result(self) -> R:
        """The work's value (or its exception, raised here); waits for the thread, which
        Ctrl-C interrupts. The job lets go of the value."""
        if self._thread is None and not self._done.is_set():
            self._run()
        self._done.wait()
        value, error, self._value, self._error = self._value, self._error, None, None
        if error is not None:
            raise error
        return value  # type: ignore[return-value]


def prefetched(
    work: Callable[[T], R], items: Sequence[T], *, background: bool
) -> Iterator[tuple[T, Callable[[], R]]]:
    """Yield ``(item, take)`` in order, where ``take()`` returns ``work(item)``.

    Without ``background``, ``take()`` runs ``work(item)`` there and then. With it, the first
    item's work starts on a daemon thread at once, and each ``take()`` that returns (or raises
    an ``Exception``) starts the next item's work on a new daemon thread: the caller handles
    item ``i`` while item ``i+1`` is worked on, and never more than one item ahead. A
    ``take()`` the caller skips is done on the next step.
    """
    items = list(items)
    ahead: _Job[R] | None = None
    for i, item in enumerate(items):
        job = ahead if ahead is not None else _Job(lambda item=item: work(item), background)
        ahead = None
        following = items[i + 1 : i + 2]

        def take(job: _Job[R] = job, following: list[T] = following) -> R:
            nonlocal ahead
            try:
                value = job.result()
            except Exception:
                ahead = _start(work, following, background)
                raise
            ahead = _start(work, following, background)
            return value

        yield item, take
        del job, take


def _start(work: Callable[[T], R], following: list[T], background: bool) -> _Job[R] | None:
    if not (background and following):
        return None
    item = following[0]
    return _Job(lambda: work(item), background=True)
