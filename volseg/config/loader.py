"""Typed configuration for any dataclass schema: defaults, YAML files on top, ``key=value`` last.

A config is a tree of dataclasses. :func:`load_config` starts from the dataclass defaults,
deep-merges a YAML file on top (a file may name a ``base:`` file, loaded first), then applies
``a.b.c=value`` overrides. :func:`from_dict` checks every key and value against the type
annotations, so a typo or a wrong type stops the run before it starts, with a message naming
the key and the file or override it came from.

YAML is read with PyYAML's safe loader plus two YAML 1.2 rules that configs trip over:
``1e-3`` is a float (not the string ``'1e-3'``) and only ``true``/``false`` are booleans
(``off``, ``yes``, ``no`` stay strings, so ``train.amp=off`` means ``'off'``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from volseg.config.introspect import all_paths, describe, field_default, type_hints, type_name
from volseg.errors import VolsegError
from volseg.io.paths import input_path

T = TypeVar("T")

BASE_KEY = "base"  # top-level YAML key naming the file(s) to load first; never a schema key
_NONE = type(None)
FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_BOOL_TAG = "tag:yaml.org,2002:bool"
FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """Safe loader with YAML 1.2 floats and booleans that rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key_node.value}'", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    char: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for char, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, _BOOL_12, list("tTfF"))
_Loader.add_implicit_resolver(FLOAT_TAG, FLOAT_12, list("-+0123456789."))


# ----------------------------------------------------------------------------- building


@dataclasses.dataclass
class _Context:
    """Where values came from, for error messages: dotted key -> file or override."""

    root: type
    source: str
    origins: dict[str, str] = dataclasses.field(default_factory=dict)

    def source_of(self, key: str) -> str:
        key = re.sub(r"\[\d+\]", "", key)
        while key:
            if key in self.origins:
                return self.origins[key]
            key = key.rpartition(".")[0]
        return self.source

    def type_error(self, key: str, expected: str, value: Any) -> VolsegError:
        return VolsegError(
            f"config key '{key}' in {self.source_of(key)}: expected {expected}, "
            f"got {describe(value)}"
        )


def from_dict(schema_cls: type[T], data: Mapping[str, Any], *, source: str) -> T:
    """Build a ``schema_cls`` instance from plain data, checking keys and types.

    Missing keys take the dataclass defaults; nested dataclasses are built from nested
    mappings. Ints are accepted for floats, lists for tuples; nothing else is converted.

    Args:
        schema_cls: a dataclass whose fields are annotated with supported types: ``int``,
            ``float``, ``bool``, ``str``, ``Path``, ``X | None``, ``list[X]``, ``tuple[X, ...]``,
            fixed tuples, ``dict[str, X]``, ``Literal[...]`` and nested dataclasses.
        data: the values, e.g. parsed YAML.
        source: where ``data`` came from (file name), used in error messages.

    Returns:
        The instance.

    Raises:
        VolsegError: for an unknown key (with the closest valid keys), a missing required key,
            or a value of the wrong type.
    """
    return _from_dict(schema_cls, data, _Context(schema_cls, source))


def _from_dict(schema_cls: type[T], data: Any, ctx: _Context) -> T:
    if not isinstance(data, Mapping):
        raise VolsegError(f"config in {ctx.source} must be a mapping of keys, got {describe(data)}")
    return _build(schema_cls, data, ctx, prefix="", base=None)


def _build(cls: type[T], data: Mapping[str, Any], ctx: _Context, prefix: str, base: Any) -> T:
    """Build dataclass ``cls`` from ``data``; keys absent from it come from ``base`` or defaults."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise _unknown_key(cls, prefix, key, ctx)
    hints = type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key = prefix + name
        if name in data:
            default = getattr(base, name) if base is not None else field_default(field)
            kwargs[name] = _coerce(hints[name], data[name], key, ctx, default)
        elif base is not None:
            kwargs[name] = getattr(base, name)
        elif field.default is field.default_factory is dataclasses.MISSING:
            raise VolsegError(
                f"config key '{key}' is required but missing in {ctx.source_of(key)}; "
                f"set it in the YAML or with {key}=..."
            )
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, ctx: _Context, default: Any = None) -> Any:
    """Check ``value`` against annotation ``tp`` and return it in the annotated type."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return value
    if tp is _NONE:
        if value is None:
            return None
        raise ctx.type_error(key, "null", value)
    if origin is Union or origin is types.UnionType:
        if value is None:
            if _NONE in args:
                return None
            raise ctx.type_error(key, type_name(tp), value)
        options = [a for a in args if a is not _NONE]
        if len(options) == 1:  # X | None: X's own, more precise message
            return _coerce(options[0], value, key, ctx, default)
        for option in options:
            try:
                return _coerce(option, value, key, ctx, default)
            except VolsegError:
                continue
        raise ctx.type_error(key, type_name(tp), value)
    if origin is Literal:
        for allowed in args:
            if type(allowed) is type(value) and allowed == value:
                return allowed
        raise ctx.type_error(key, type_name(tp), value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ctx.type_error(key, type_name(tp), value)
        return _build(tp, value, ctx, key + ".", default if isinstance(default, tp) else None)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ctx.type_error(key, "bool (true or false)", value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ctx.type_error(key, "int", value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ctx.type_error(key, "float", value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ctx.type_error(key, "str (quote numbers and dates)", value)
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)):
            return tp(value)
        raise ctx.type_error(key, "path (str)", value)
    if tp in (list, tuple) or origin in (list, tuple, Sequence):
        return _coerce_sequence(tp, value, key, ctx)
    if tp is dict or origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ctx.type_error(key, type_name(tp), value)
        key_tp, value_tp = args or (Any, Any)
        return {
            _coerce(key_tp, k, f"{key}.{k}", ctx): _coerce(value_tp, v, f"{key}.{k}", ctx)
            for k, v in value.items()
        }
    raise TypeError(f"config key '{key}' has an unsupported annotation {tp!r}")


def _coerce_sequence(tp: Any, value: Any, key: str, ctx: _Context) -> list[Any] | tuple[Any, ...]:
    """Coerce a list/tuple annotation: ``list[X]``, ``tuple[X, ...]`` or a fixed ``tuple[X, Y]``."""
    origin, args = get_origin(tp) or tp, get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise ctx.type_error(key, type_name(tp), value)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ctx.type_error(key, type_name(tp), value)
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(a, v, f"{key}[{i}]", ctx) for i, (a, v) in pairs)
    item_tp = args[0] if args else Any
    items = [_coerce(item_tp, v, f"{key}[{i}]", ctx) for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _unknown_key(cls: type, prefix: str, key: Any, ctx: _Context) -> VolsegError:
    """An 'unknown key' error with the closest valid keys, or all valid keys of the section."""
    full = f"{prefix}{key}"
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    guesses = [prefix + g for g in difflib.get_close_matches(str(key), valid, n=3)]
    if not guesses:  # right name, wrong section? (train.overlap -> inference.overlap)
        paths = [p for p in all_paths(ctx.root) if not full.startswith(p + ".")]
        guesses = [p for p in paths if p.rpartition(".")[2] == key]
        guesses = guesses or difflib.get_close_matches(full, paths, n=3, cutoff=0.75)
    message = f"unknown config key '{full}' in {ctx.source_of(full)}"
    if guesses:
        return VolsegError(f"{message}; did you mean {' or '.join(repr(g) for g in guesses)}?")
    section = f" under '{prefix[:-1]}'" if prefix else ""
    return VolsegError(f"{message}; valid keys{section}: {', '.join(valid)}")


# ----------------------------------------------------------------------------- loading


def load_config(
    schema_cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()
) -> T:
    """Load a config: dataclass defaults, then the YAML file, then ``key=value`` overrides.

    A YAML file may start with ``base: other.yaml`` (or a list of files), resolved relative to
    the file and loaded first, recursively; mappings are deep-merged, anything else replaced.
    Override values are parsed as YAML: ``train.lr=1e-3``, ``data.spacing=[1.5,1.5,3]``,
    ``model.encoder.weights=null``; an empty value is the empty string.

    Args:
        schema_cls: the dataclass schema (e.g. ``volseg.config.Config``).
        path: a YAML file, or None for defaults and overrides only.
        overrides: ``dotted.key=value`` strings, applied in order.

    Returns:
        The checked ``schema_cls`` instance (its ``__post_init__`` may validate values).

    Raises:
        VolsegError: for a missing or unparsable file, a ``base:`` cycle, a malformed override,
            an unknown key or a value of the wrong type; the message names the file or override.
    """
    data: dict[str, Any] = {}
    ctx = _Context(schema_cls, str(path) if path is not None else "defaults")
    if path is not None:
        _merge_file(Path(path), data, ctx.origins, chain=())
    for item in overrides:
        key, value = _parse_override(item)
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        _deep_merge(data, nested, ctx.origins, "", f"override '{item}'")
    return _from_dict(schema_cls, data, ctx)


def _merge_file(
    path: Path, data: dict[str, Any], origins: dict[str, str], chain: tuple[Path, ...]
) -> None:
    """Merge ``path`` (after its ``base:`` files) into ``data``; ``chain`` detects cycles."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain[chain.index(resolved) :], resolved))
        raise VolsegError(f"config files inherit in a cycle: {cycle}; remove one 'base:' key")
    raw = _read_yaml(path, chain[-1] if chain else None)
    bases = raw.pop(BASE_KEY, None)
    if isinstance(bases, str):
        bases = [bases]
    if bases is not None and not (
        isinstance(bases, list) and all(isinstance(b, str) for b in bases)
    ):
        raise VolsegError(
            f"'{BASE_KEY}' in {path} must be a file name or a list of file names, "
            f"got {describe(bases)}"
        )
    for base in bases or ():
        _merge_file(path.parent / base, data, origins, (*chain, resolved))
    _deep_merge(data, raw, origins, "", str(path))


def _read_yaml(path: Path, parent: Path | None) -> dict[str, Any]:
    """Parse one YAML file into a mapping (empty file -> ``{}``)."""
    where = f" (base of {parent})" if parent is not None else ""
    if path.exists():
        input_path(path, "config file")  # a FIFO would block read_text forever
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VolsegError(f"config file {path}{where} not found; check the path") from None
    except OSError as exc:
        raise VolsegError(f"cannot read config file {path}{where}: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise VolsegError(f"invalid YAML in config file {path}{_yaml_problem(exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise VolsegError(
            f"config file {path}{where} must hold a mapping of keys at the top level, "
            f"got {describe(raw)}"
        )
    return raw


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """' line N: problem' for a YAML error (lines counted from 1)."""
    mark = getattr(exc, "problem_mark", None)
    line = f" line {mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{line}: {problem}; fix the YAML syntax"


def _parse_override(item: str) -> tuple[str, Any]:
    """Split ``'a.b=value'`` into the dotted key and the YAML-parsed value."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or not all(part.strip() for part in key.split(".")):
        raise VolsegError(
            f"override '{item}' is not of the form key=value; write e.g. train.lr=1e-3"
        )
    if not text.strip():
        return key, ""
    try:
        return key, yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise VolsegError(
            f"cannot parse the value of override '{item}' as YAML: {problem}; quote it"
        ) from None


def _deep_merge(
    dst: dict[str, Any], src: Mapping[Any, Any], origins: dict[str, str], prefix: str, source: str
) -> None:
    """Merge ``src`` into ``dst`` in place (mappings recursively) and record each key's source."""
    for key, value in src.items():
        if not isinstance(key, str):
            raise VolsegError(
                f"config key {prefix}{key!r} in {source} is not a string; write it as a name"
            )
        dotted = prefix + key
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            origins.setdefault(dotted, source)
            _deep_merge(dst[key], value, origins, dotted + ".", source)
        elif isinstance(value, Mapping):
            dst[key] = {}
            origins[dotted] = source
            _deep_merge(dst[key], value, origins, dotted + ".", source)
        else:
            dst[key] = value
            origins[dotted] = source
