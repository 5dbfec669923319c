"""A frame's column schema, declared once: names, order, how a value is read, and dtype.

A tidy frame written as a column list, a per-row dict with the same names and a list of
columns to cast drifts when one of the three is edited alone. Here each column is one
``Column``; the order, the row dicts and the dtypes (of an empty frame too) all come
from the one tuple of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pandas as pd

T = TypeVar("T")


@dataclass(frozen=True)
class Column(Generic[T]):
    """One column: its name, its value for one source item, and the dtype the frame casts
    it to (None: left as pandas infers it)."""

    name: str
    get: Callable[[T], Any]
    dtype: str | None = None


def row_of(item: T, columns: Sequence[Column[T]]) -> dict[str, Any]:
    """One row dict, in the columns' order."""
    return {c.name: c.get(item) for c in columns}


def typed_frame(
    rows: Iterable[Mapping[str, Any]], dtypes: Mapping[str, str | None]
) -> pd.DataFrame:
    """Rows as a frame with exactly the columns of ``dtypes`` (in its order), each cast to
    its dtype (None: as inferred); no rows give the same columns and dtypes, empty."""
    frame = pd.DataFrame(list(rows), columns=list(dtypes))
    for name, dtype in dtypes.items():
        if dtype is not None:
            frame[name] = frame[name].astype(dtype)
    return frame


def frame_of(items: Iterable[T], columns: Sequence[Column[T]]) -> pd.DataFrame:
    """One row per item, read and typed by ``columns``."""
    return typed_frame((row_of(i, columns) for i in items), {c.name: c.dtype for c in columns})
