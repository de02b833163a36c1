"""Reading the schema's dataclasses: leaf keys, section types, defaults, readable type names."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

_NONE = type(None)


def config_keys(schema_cls: type) -> list[str]:
    """All leaf keys of a schema as dotted names in schema order (``'train.lr'``, ...)."""
    keys: list[str] = []
    for name, tp in type_hints(schema_cls).items():
        section = section_type(tp)
        keys += [f"{name}.{k}" for k in config_keys(section)] if section else [name]
    return keys


@functools.cache
def all_paths(schema_cls: type) -> tuple[str, ...]:
    """Every key of a schema, sections included (``'model'``, ``'model.encoder'``, ...)."""
    paths: list[str] = []
    for name, tp in type_hints(schema_cls).items():
        section = section_type(tp)
        paths += [name, *(f"{name}.{p}" for p in all_paths(section))] if section else [name]
    return tuple(paths)


def section_type(tp: Any) -> type | None:
    """The dataclass behind ``tp`` (``Sub`` or ``Sub | None``), or None for a value type."""
    if get_origin(tp) is Union or get_origin(tp) is types.UnionType:
        options = [a for a in get_args(tp) if a is not _NONE]
        tp = options[0] if len(options) == 1 else None
    return tp if dataclasses.is_dataclass(tp) and isinstance(tp, type) else None


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of the init fields of dataclass ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def field_default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def type_name(tp: Any) -> str:
    """A readable name for an annotation: 'float or null', 'list of 3 floats', ..."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is _NONE:
        return "null"
    if origin is Union or origin is types.UnionType:
        return " or ".join(type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        keys = ", ".join(f.name for f in dataclasses.fields(tp) if f.init)
        return f"a mapping with keys {keys}"
    if origin is tuple and args and args[-1] is not Ellipsis:
        names = [type_name(a) for a in args]
        if len(set(names)) == 1:
            return f"a list of {len(args)} {names[0]}s"
        return f"a list of {len(args)} values [{', '.join(names)}]"
    if origin in (list, tuple, Sequence):
        return f"a list of {type_name(args[0])}s" if args else "a list"
    if origin in (dict, Mapping):
        return f"a mapping of {type_name(args[0])} to {type_name(args[1])}"
    return getattr(tp, "__name__", str(tp))


def describe(value: Any) -> str:
    """'str 'abc'', 'a list of 2 values [1.5, 1.5]', 'null' -- the 'got ...' of a message."""
    if value is None:
        return "null"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} values {text}"
    if isinstance(value, Mapping):
        return f"a mapping {text}"
    return f"{type(value).__name__} {text}"
