"""Where a run folder keeps its checkpoints; no torch, so a wrong path fails in a blink."""

from __future__ import annotations

from pathlib import Path

from volseg.errors import VolsegError

CHECKPOINT_NAMES = ("best.pt", "last.pt")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the best (else last) checkpoint of a run folder.

    Raises:
        VolsegError: no such file or folder, or a folder without ``checkpoints/best.pt`` or
            ``checkpoints/last.pt``.
    """
    path = Path(path)
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise VolsegError(f"{path}: run folder has no checkpoints/best.pt or checkpoints/last.pt")
    if not path.is_file():
        raise VolsegError(f"{path}: no such checkpoint file or run folder")
    return path
