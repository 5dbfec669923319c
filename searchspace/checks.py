"""Validation pieces every spec shares: one-line SpecErrors naming the field and value."""

from __future__ import annotations

from collections.abc import Iterable

from searchspace.errors import SpecError


def check(cond: bool, name: str, value: object, why: str) -> None:
    if not cond:
        raise SpecError(f"{name}={value!r}: {why}")


def check_multipliers(width_mult: object, depth_mult: object) -> None:
    """alpha and d: positive numbers up to 8 (larger would not fit any machine here)."""
    ok_w = isinstance(width_mult, (int, float)) and 0 < width_mult <= 8
    check(ok_w, "width_mult", width_mult, "alpha must be in (0, 8]")
    ok_d = isinstance(depth_mult, (int, float)) and 0 < depth_mult <= 8
    check(ok_d, "depth_mult", depth_mult, "d must be in (0, 8]")


def check_positions(name: str, positions: Iterable[str], known: tuple[str, ...]) -> None:
    """Head positions: each one known, none twice."""
    seen: set[str] = set()
    for pos in positions:
        check(pos in known, name, pos, f"unknown position (known: {', '.join(known)})")
        check(pos not in seen, name, pos, "listed twice")
        seen.add(pos)


def check_dropout(spec: object, rate_fields: tuple[str, ...]) -> None:
    """Dropout rates in [0, 1) and ``dropout_kind`` element or channel (V1 and V2 alike)."""
    for name in rate_fields:
        p = getattr(spec, name)
        check(0.0 <= p < 1.0, name, p, "a dropout rate must be in [0, 1)")
    kind = spec.dropout_kind
    check(kind in ("element", "channel"), "dropout_kind", kind, "expected 'element' or 'channel'")
