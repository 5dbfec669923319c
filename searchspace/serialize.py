"""Serialisation shared by every spec: canonical JSON, a short id, and a compact string.

Specs are frozen dataclass trees whose leaves are int, float, bool, str or tuples of those.
The canonical JSON (sorted keys, defaults included, a schema version) is the stored form;
``spec_id`` hashes it, so two specs that build the same network share an id. Fields added
after ids were first published (``added_field``) are the one exception to "defaults
included": at their default they are left out, so every id made before they existed,
and every stored record keyed by one, stays valid; set to anything else, they are in. The compact
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
from typing import Any, ClassVar, Self, TypeVar

from searchspace.errors import SpecError

SCHEMA_VERSION = 1
T = TypeVar("T")


ADDED = "added"  # dataclass field metadata key: see ``added_field``


def added_field(default: Any) -> Any:
    """A spec field added after spec_ids were published: omitted from the canonical JSON
    (so from the id) while it holds ``default``, which must be the network built before
    the field existed. Reading JSON without it gives the default, so old files load."""
    return dataclasses.field(default=default, metadata={ADDED: True})


def to_dict(obj: Any, canonical: bool = False) -> dict[str, Any]:
    """Plain nested dict of a dataclass tree (tuples become lists), defaults included;
    ``canonical`` leaves out ``added_field`` fields at their default (the id's form)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if canonical and f.metadata.get(ADDED) and value == f.default:
            continue
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value, canonical)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def canonical_json(obj: Any, kind: str, indent: int | None = None) -> str:
    """The serialised form: sorted keys, every field (``added_field`` ones only when not at
    their default), the schema version and the kind."""
    payload = {"schema": SCHEMA_VERSION, "kind": kind, "fields": to_dict(obj, canonical=True)}
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
    hints = typing.get_type_hints(cls)
    for name in (f.name for f in dataclasses.fields(cls)):  # fields only: no ClassVars
        tp = hints[name]
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


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        if part not in node or not isinstance(node[part], dict):
            raise SpecError(f"{path}: unknown field")
        node = node[part]
    if parts[-1] not in node:
        raise SpecError(f"{path}: unknown field")
    node[parts[-1]] = list(value) if isinstance(value, tuple) else value


def dict_get(data: Mapping[str, Any], path: str) -> Any:
    """A dotted path into the nested dict form (``to_dict``'s output)."""
    for part in path.split("."):
        data = data[part]
    return data


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def replace_paths(obj: T, changes: Mapping[str, Any]) -> T:
    """Apply several dotted-path replacements, validating once at the end.

    Nested parts are rebuilt without their own checks first, because an intermediate
    state (say, a booster position before the field that allows it) may be invalid.

    A change that switches other fields off (``semantic.block='ib'`` turns off the GE
    knobs) resets those fields to their off value, so ``bisenetv2_dwexp:blk=ib`` is the
    inverted-bottleneck network and not an error; a field named in ``changes`` is never
    reset, so ``v2:blk=ib,gk=1`` still fails, naming ``semantic.ge_gather_kernel``.
    """
    data = to_dict(obj)
    for path, value in changes.items():
        _set(data, path, value)
    rules = getattr(type(obj), "inapplicable", None)
    if rules is not None:
        for _ in range(8):  # switching off can switch off more (no boosters -> their width)
            resets = [
                (path, off)
                for path, _why, off in rules(data)
                if path not in changes and dict_get(data, path) != _plain(off)
            ]
            if not resets:
                break
            for path, off in resets:
                _set(data, path, off)
    return from_dict(type(obj), data)


def check_applicable(obj: Any) -> None:
    """Reject a field that does not apply to this spec unless it holds its off value.

    One network, one spec: a knob that changes nothing (a GE option of an inverted-
    bottleneck network) would otherwise give the same network several spec_ids.
    """
    data = to_dict(obj)
    for path, why, off in type(obj).inapplicable(data):
        value = dict_get(data, path)
        if value != _plain(off):
            shown = tuple(value) if isinstance(value, list) else value
            raise SpecError(f"{path}={shown!r}: does not apply {why}")


def normalise_numbers(obj: Any) -> None:
    """Store ints given for float fields as floats (``width_mult=2`` and ``2.0`` are one
    spec, one id) and lists given for tuple fields as tuples; called in ``__post_init__``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        tp = hints[f.name]
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(obj, f.name, float(value))
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            object.__setattr__(obj, f.name, tuple(value))


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
                if float(den) == 0:
                    raise SpecError(f"{path}={text!r}: division by zero")
                return float(num) / float(den)
            return float(text)
        if tp is str:
            return text
    except SpecError:
        raise
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


def parse_overrides(
    text: str, cls: type, aliases: Mapping[str, str], what: str = "spec field"
) -> dict[str, Any]:
    """Parse ``alias=value,...`` (aliases or dotted field paths) into dotted-path changes.

    A field given twice (``a=1.5,a=2`` or ``a=1.5,width_mult=2``) is an error, not a
    silent last-one-wins."""
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
            shorts = sorted(a for p, a in aliases.items() if a != p)
            known = (
                f"short names: {', '.join(shorts)}" if shorts else f"fields: {', '.join(types_)}"
            )
            raise SpecError(f"{key!r}: unknown {what} ({known})")
        if path in changes:
            raise SpecError(f"{key!r}: {path} is given twice")
        changes[path] = parse_value(raw.strip(), types_[path], path)
    return changes


class SpecViews:
    """The views every architecture spec offers, defined once: canonical JSON, its id, the
    compact string, dotted-path ``replace``. A spec class sets ``KIND`` (the JSON's kind),
    ``PREFIX`` (the compact string's) and ``ALIASES`` (path -> short name) as class
    variables; they are not dataclass fields, so they never reach the JSON or the id."""

    KIND: ClassVar[str]
    PREFIX: ClassVar[str]
    ALIASES: ClassVar[Mapping[str, str]]

    def to_json(self, indent: int | None = None) -> str:
        return canonical_json(self, self.KIND, indent)

    @property
    def spec_id(self) -> str:
        return short_hash(self.to_json())

    def to_string(self) -> str:
        return to_compact(self, self.PREFIX, self.ALIASES)

    def replace(self, **changes: object) -> Self:
        """A changed copy; dotted paths reach nested parts: ``**{"semantic.ratio": 0.5}``."""
        return replace_paths(self, changes)

    def describe(self) -> str:
        return self.to_string()
