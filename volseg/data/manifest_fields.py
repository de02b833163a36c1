"""Reading the fields of a dataset description: typed keys, label maps, paths.

Shared by every manifest format (:mod:`volseg.data.formats`, :mod:`volseg.data.dataset_json`);
each failure is a one-line :class:`~volseg.errors.VolsegError` naming the file and the key.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

from volseg.errors import VolsegError


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (a BOM is allowed)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise VolsegError(
            f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); fix the file"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise VolsegError(f"{path}: cannot read ({e})") from None
    if not isinstance(doc, dict):
        raise VolsegError(f"{path}: top level must be a JSON object, got {type(doc).__name__}")
    return doc


_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def get_key(
    doc: dict[str, Any],
    key: str,
    kind: type,
    path: Path,
    where: str = "",
    *,
    required: bool = True,
) -> Any:
    """``doc[key]`` checked to be of type ``kind``; None when absent and not required."""
    name = f"{where}.{key}" if where else key
    if key not in doc or doc[key] is None:
        if required:
            raise VolsegError(f"{path}: required key {name!r} is missing; add it")
        return None
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise VolsegError(
            f"{path}: key {name!r} must be {_TYPE_NAMES.get(kind, kind.__name__)}, "
            f"got {type(value).__name__} {value!r:.60}"
        )
    return value


def int_keyed(mapping: dict[str, Any], path: Path, key: str) -> dict[int, str]:
    """``{"0": "CT", "1": "PET"}`` -> ``{0: "CT", 1: "PET"}``, sorted by the integer."""
    out: dict[int, str] = {}
    for k, v in mapping.items():
        try:
            index = int(k)
        except ValueError:
            raise VolsegError(f"{path}: {key} key {k!r} is not an integer") from None
        if not isinstance(v, str) or not v:
            raise VolsegError(f"{path}: {key}.{k} must be a non-empty name, got {v!r}")
        out[index] = v
    if not out:
        raise VolsegError(f"{path}: key {key!r} is empty")
    return dict(sorted(out.items()))


def unique_names(names: list[str]) -> list[str]:
    """Modality names made unique: ``["zscore", "zscore"]`` -> ``["zscore", "zscore_1"]``."""
    out: list[str] = []
    for i, name in enumerate(names):
        out.append(name if name not in out else f"{name}_{i}")
    return out


def absolute(value: str | Path, root: Path) -> Path:
    """Absolute, normalised path (``./x`` and ``..`` folded, symlinks kept)."""
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else root.absolute() / path))


def absolute_or_none(value: str | None, root: Path) -> Path | None:
    """:func:`absolute`, or None for a field that is not given."""
    return None if value is None else absolute(value, root)


def hint(key: str, allowed: set[str] | list[str]) -> str:
    """`` (did you mean 'x'?)`` for a mistyped key, or ``""``."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
