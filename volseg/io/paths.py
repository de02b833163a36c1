"""What volseg accepts as an input path, and how a case id becomes an output file name.

Two safety rules live here, once:

- **Inputs are regular files or folders.** A FIFO, socket or device given as an image or a
  manifest would block a reader forever (or read garbage); it is refused by name before
  anything opens it.
- **Nothing escapes the output folder.** Case ids come from manifests a user may not have
  written; :func:`case_file_name` is the only way an id becomes a file name, and it refuses
  ids that are empty, absolute, hold a path separator or are ``.``/``..``.
  :func:`refuse_overwrite` keeps outputs off the files a cohort reads.

Also where a run folder keeps its checkpoints (:func:`resolve_checkpoint`), so a wrong
``--model`` path fails before torch imports.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from volseg.errors import VolsegError

_SEPARATORS = {"/", "\\", os.sep, os.altsep or "/"}
CHECKPOINT_NAMES = ("best.pt", "last.pt")


def input_path(path: str | Path, what: str = "input") -> Path:
    """``path`` checked to exist and to be a regular file or a folder.

    Symbolic links are followed. Nothing is opened, so a FIFO never blocks.

    Args:
        path: the file or folder a user named.
        what: what it should be, for the message (``image``, ``manifest``, ...).

    Raises:
        VolsegError: missing, or a FIFO, socket or device.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise VolsegError(f"{path}: no such file or folder") from None
    except OSError as e:
        raise VolsegError(f"{path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        return path
    if not stat.S_ISREG(mode):
        raise VolsegError(
            f"{path}: {what} is a {_kind(mode)}, not a regular file; save it as a regular "
            "file and pass that"
        )
    return path


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def case_file_name(case_id: str, suffix: str = "", *, source: str | Path | None = None) -> str:
    """The output file name of a case: ``case_id + suffix``, refused if it could leave its folder.

    Args:
        case_id: the case id as the manifest or input names it.
        suffix: what follows the id (``.nii.gz``, ``_probs.nrrd``).
        source: the manifest or input the id came from, named in the message.

    Returns:
        A plain file name: joined to a folder, it names a file inside that folder.

    Raises:
        VolsegError: an id that is empty, ``.`` or ``..``, absolute, or holds a path separator,
            a NUL or another control character.
    """
    problem = _id_problem(str(case_id))
    if problem:
        where = f"{source}: " if source is not None else ""
        raise VolsegError(
            f"{where}case id {case_id!r} {problem}; outputs are named by case id, so give "
            "the case a plain name (letters, digits, '_', '-', '.')"
        )
    return f"{case_id}{suffix}"


def _id_problem(case_id: str) -> str:
    if not case_id.strip():
        return "is empty"
    if case_id in (".", ".."):
        return "is a relative folder name"
    if any(s in case_id for s in _SEPARATORS) or Path(case_id).is_absolute():
        return "holds a path separator"
    if len(case_id) > 1 and case_id[1] == ":":  # a Windows drive, C:x
        return "names a drive"
    if any(ord(c) < 32 or ord(c) == 127 for c in case_id):
        return "holds a control character"
    return ""


def refuse_overwrite(outputs: Iterable[Path], protected: Mapping[Path, str], hint: str) -> None:
    """Raise if an output path would land on a protected file (by path, link or inode).

    Args:
        outputs: files about to be written.
        protected: files that must survive (a manifest, its images, labels and masks), each
            with what it is for the message (``the label of case 7``).
        hint: what to do, ending the message (``choose another --output folder``).

    Raises:
        VolsegError: naming the first output that is one of the protected files.
    """
    names: dict[Path, str] = {}
    inodes: dict[tuple[int, int], str] = {}
    for path, what in protected.items():
        names |= {_absolute(path): what, path.resolve(): what}
        if (identity := _inode(path)) is not None:
            inodes[identity] = what
    for out in outputs:
        what = names.get(_absolute(out)) or names.get(out.resolve())
        if what is None and (identity := _inode(out)) is not None:
            what = inodes.get(identity)
        if what is not None:
            raise VolsegError(f"{out}: would overwrite an input ({what}); {hint}")


def _absolute(path: Path) -> Path:
    return Path(os.path.normpath(path.absolute()))


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def output_folder(path: str | Path, option: str = "--output") -> Path:
    """``path`` created if needed and checked to accept new files, before any work is done.

    Args:
        path: the output folder.
        option: the option that named it, for the message.

    Raises:
        VolsegError: ``path`` is a file, or a folder that cannot be created or written to
            (read-only file system, no permission).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VolsegError(f"{path}: {option} is a file, not a folder; pass a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".volseg-write-test-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as e:
        raise VolsegError(
            f"{path}: cannot write to the {option} folder ({e.strerror or e}); choose a folder "
            "you can write to"
        ) from None
    return path


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
