"""Write files so that a crash or Ctrl-C never leaves a half-written one behind."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write to; rename it onto ``path`` on success.

    The temporary name keeps the full suffix (``.nii.gz``, ``.nrrd``) so writers that pick a
    format by extension still work; it may be a file or a folder (DICOM series). On any
    exception the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex[:8]}-{path.name}"
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``write(file)`` into a temporary sibling, then rename it.

    For writers that take a file object (``torch.save``). A full disk makes torch raise
    ``RuntimeError: unexpected pos`` (or ``OSError`` without a file name); the first error the
    file's ``write`` met is raised instead, as an ``OSError`` naming ``path`` (not its
    temporary name). The data is flushed to disk before the rename, so ``path`` is the
    previous version or the new one, never a mix.

    Raises:
        OSError: the disk is full or the folder not writable; ``filename`` is ``path`` and
            ``path`` is left as it was.
    """
    path = Path(path)
    with errors_named(path), atomic_path(path) as tmp, open(tmp, "wb") as f:
        recording = _Recording(f)
        try:
            write(recording)  # type: ignore[arg-type]
        except Exception:
            if recording.error is not None:
                raise recording.error from None
            raise
        f.flush()
        os.fsync(f.fileno())
    return path


@contextmanager
def errors_named(path: str | Path) -> Iterator[None]:
    """Re-raise an ``OSError`` met while writing ``path`` with ``path`` as its file name (a
    full disk fails on flush with no name, a read-only folder names the temporary file)."""
    try:
        yield
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from None


class _Recording:
    """A binary file that remembers the first ``OSError`` its ``write`` raised."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str):
        return getattr(self.file, name)
