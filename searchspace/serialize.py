"""Serialisation shared by every spec: canonical JSON, a short id, and a compact string.

Specs are frozen dataclass trees whose leaves are int, float, bool, str or tuples of those.
The canonical JSON (sorted keys, defaults included, a schema version) is the stored form;
``spec_id`` hashes it, so two specs that build the same network share an id. The compact
string lists only the fields that differ from the architecture's defaults, under short
aliases, so it stays readable on a command line and in a table cell, and parses back to
the identical spec.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from searchspace.errors import SpecError

SCHEMA_VERSION = 1
T = TypeVar("T")


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass tree (tuples become lists), defaults included."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def canonical_json(obj: Any, kind: str, indent: int | None = None) -> str:
    """The serialised form: sorted keys, every field, the schema version and the kind."""
    payload = {"schema": SCHEMA_VERSION, "kind": kind, "fields": to_dict(obj)}
    if indent is None:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return json.dumps(payload, sort_keys=True, indent=indent)


def short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert a JSON value to the annotated field type, or raise SpecError naming ``path``."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{path}={value!r}: expected a list")
        args = typing.get_args(tp)
        item_tp = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise SpecError(f"{path}={list(value)!r}: expected {len(args)} values")
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(map(repr, typing.get_args(tp)))
            raise SpecError(f"{path}={value!r}: expected one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise SpecError(f"{path}={value!r}: expected an object")
        return from_dict(tp, value, prefix=f"{path}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{path}={value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{path}={value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{path}={value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(f"{path}={value!r}: expected a string")
        return value
    raise SpecError(f"{path}: unsupported field type {_describe(tp)}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build a dataclass tree from a dict; missing fields take defaults, unknown ones fail."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{prefix or cls.__name__}: expected an object, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpecError(f"{prefix}{unknown[0]}: unknown field (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except SpecError as exc:
        if prefix and not str(exc).startswith(prefix):
            raise SpecError(f"{prefix}{exc}") from None
        raise


def leaf_types(cls: type) -> dict[str, Any]:
    """Dotted field path -> annotated type, for every leaf of a dataclass tree."""
    out: dict[str, Any] = {}
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            for sub, sub_tp in leaf_types(tp).items():
                out[f"{name}.{sub}"] = sub_tp
        else:
            out[name] = tp
    return out


def get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def replace_path(obj: T, path: str, value: Any) -> T:
    """``dataclasses.replace`` for a dotted path into nested dataclasses."""
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(obj, **{head: value})  # type: ignore[type-var]
    return dataclasses.replace(obj, **{head: replace_path(getattr(obj, head), rest, value)})  # type: ignore[type-var]


def replace_paths(obj: T, changes: Mapping[str, Any]) -> T:
    """Apply several dotted-path replacements, validating once at the end.

    Nested parts are rebuilt without their own checks first, because an intermediate
    state (say, a booster position before the field that allows it) may be invalid.
    """
    data = to_dict(obj)
    for path, value in changes.items():
        node = data
        parts = path.split(".")
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise SpecError(f"{path}: unknown field")
            node = node[part]
        if parts[-1] not in node:
            raise SpecError(f"{path}: unknown field")
        node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    return from_dict(type(obj), data)


# --- compact string view -------------------------------------------------------------


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return "+".join(format_value(v) for v in value) if value else "none"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def parse_value(text: str, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        if text == "none":
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return parse_value(text, args[0], path)
    if origin is tuple:
        args = typing.get_args(tp)
        items = [] if text == "none" else text.split("+")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(parse_value(t, args[0], path) for t in items)
        if len(items) != len(args):
            raise SpecError(f"{path}={text!r}: expected {len(args)} values joined by '+'")
        return tuple(parse_value(t, a, path) for t, a in zip(items, args))
    if origin is typing.Literal:
        if text not in typing.get_args(tp):
            choices = ", ".join(typing.get_args(tp))
            raise SpecError(f"{path}={text!r}: expected one of {choices}")
        return text
    try:
        if tp is bool:
            if text.lower() in ("1", "true", "on", "yes"):
                return True
            if text.lower() in ("0", "false", "off", "no"):
                return False
            raise ValueError(text)
        if tp is int:
            return int(text)
        if tp is float:
            if "/" in text:
                num, den = text.split("/", 1)
                return float(num) / float(den)
            return float(text)
        if tp is str:
            return text
    except ValueError:
        raise SpecError(f"{path}={text!r}: expected {_describe(tp)}") from None
    raise SpecError(f"{path}: unsupported field type {_describe(tp)}")


def to_compact(obj: Any, prefix: str, aliases: Mapping[str, str]) -> str:
    """``prefix`` alone for the defaults, else ``prefix:alias=value,...`` sorted by alias."""
    default = type(obj)()
    parts = []
    for path, alias in aliases.items():
        value = get_path(obj, path)
        if value != get_path(default, path):
            parts.append(f"{alias}={format_value(value)}")
    parts.sort()
    return prefix if not parts else f"{prefix}:{','.join(parts)}"


def parse_overrides(text: str, cls: type, aliases: Mapping[str, str]) -> dict[str, Any]:
    """Parse ``alias=value,...`` (aliases or dotted field paths) into dotted-path changes."""
    by_alias = {a: p for p, a in aliases.items()}
    types_ = leaf_types(cls)
    changes: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise SpecError(f"{item!r}: expected key=value")
        path = by_alias.get(key, key)
        if path not in types_:
            known = ", ".join(sorted(by_alias))
            raise SpecError(f"{key!r}: unknown spec field (short names: {known})")
        changes[path] = parse_value(raw.strip(), types_[path], path)
    return changes
