"""Writing configs: plain data (:func:`to_dict`) and YAML that loads back equal."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import yaml

from volseg.config.loader import FLOAT_12, FLOAT_TAG
from volseg.io.atomic import atomic_path


class _Dumper(yaml.SafeDumper):
    """Safe dumper for readable configs: sections as blocks, lists of scalars inline.

    It also quotes strings that our loader would read as floats (``'1e-3'``).
    """

    def represent_dict(self, data: Any) -> yaml.MappingNode:
        return self.represent_mapping("tag:yaml.org,2002:map", data, flow_style=False)

    def represent_list(self, data: Any) -> yaml.SequenceNode:
        inline = all(not isinstance(v, (list, tuple, dict)) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=inline)


# Strings the loader would read as floats ('1e-3') are quoted on the way out.
_Dumper.add_implicit_resolver(FLOAT_TAG, FLOAT_12, list("-+0123456789."))
_Dumper.add_representer(dict, _Dumper.represent_dict)
_Dumper.add_representer(list, _Dumper.represent_list)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Convert a config instance to plain YAML-safe data, keys in schema order.

    Tuples become lists and paths strings, so :func:`from_dict` turns the result back into
    an equal instance.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write ``cfg`` as YAML to ``path`` atomically; ``load_config(type(cfg), path) == cfg``.

    Sections are written as blocks in schema order, short lists inline (``[1.5, 1.5, 3.0]``).

    Returns:
        The path written.
    """
    text = yaml.dump(
        to_dict(cfg),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
