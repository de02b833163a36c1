"""Where ``volseg synth`` may write, checked before any volume is drawn.

A synthetic set goes to ``OUT/<dataset>/``. That folder must be new or empty, so a synth never
mixes with (or silently overwrites) a dataset that is already there. ``overwrite`` replaces a
previous synth output only: the files its ``manifest.json`` lists (images and labels), the
manifest and ``synth.json``. A folder without ``synth.json`` was not written by synth and is
never touched.
"""

from __future__ import annotations

import json
from pathlib import Path

from volseg.errors import VolsegError
from volseg.io import output_folder


def check_folder(folder: str | Path, *, overwrite: bool = False) -> bool:
    """Whether synth may write to ``folder``, changing nothing; True if an earlier synth
    output there must be removed first.

    Raises:
        VolsegError: ``folder`` or its parent is a file; it holds files and ``overwrite`` is
            off; or it holds files synth did not write (no ``synth.json``).
    """
    folder = Path(folder)
    for path in (folder.parent, folder):
        if path.exists() and not path.is_dir():
            raise VolsegError(f"{path}: --out names a file, not a folder; pass a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return False
    if not overwrite:
        raise VolsegError(
            f"{folder}: folder is not empty; pass --overwrite to replace the volseg synth "
            "output there, or choose another --out"
        )
    if not (folder / "synth.json").is_file():
        raise VolsegError(
            f"{folder}: holds files that volseg synth did not write (no synth.json); --overwrite "
            "only replaces a synth output, so choose another --out"
        )
    return True


def prepare_folder(folder: str | Path, *, overwrite: bool = False) -> Path:
    """``folder`` ready for a synthetic set: created, or empty, or an earlier synth's cleared.

    Args:
        folder: ``OUT/<dataset>``.
        overwrite: remove an earlier synth output there (only its own files).

    Returns:
        The folder, existing and writable.

    Raises:
        VolsegError: as :func:`check_folder`, or a folder that cannot be written to.
    """
    folder = Path(folder)
    if check_folder(folder, overwrite=overwrite):
        _remove_previous(folder)
    return output_folder(folder, "--out")


def _remove_previous(folder: Path) -> None:
    """Delete the files a previous synth wrote into ``folder`` (and folders left empty)."""
    params, manifest = folder / "synth.json", folder / "manifest.json"
    files = [params, manifest]
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        for case in doc.get("cases", []) + doc.get("test", []):
            for image in case.get("images", {}).values():
                files.append(folder / (image["path"] if isinstance(image, dict) else image))
            files += [folder / case["label"]] if case.get("label") else []
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        pass  # no readable manifest: synth.json goes, and the new images replace the old
    for path in files:
        if path.resolve().is_relative_to(folder.resolve()) and path.is_file():
            path.unlink()
    for sub in ("imagesTr", "labelsTr"):
        if (folder / sub).is_dir() and not any((folder / sub).iterdir()):
            (folder / sub).rmdir()
