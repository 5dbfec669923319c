"""Building a record: the one dict a run leaves behind (see ``searchspace/records.py``)."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from typing import Any

from searchspace.atomic import json_data
from searchspace.errors import StoreError
from searchspace.records import SCHEMA, RecordKey, check_record


def utc_now() -> str:
    """ISO 8601 UTC timestamp with seconds, for ``timings.started_at`` / ``finished_at``."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def plain(record: Mapping[str, Any], where: str = "record") -> dict[str, Any]:
    """The record as JSON data (NaN -> null, tuples -> lists); StoreError if it is not data."""
    try:
        return json_data(dict(record), where)
    except TypeError as exc:
        raise StoreError(str(exc)) from None


def dataset_section(dataset: Any) -> dict[str, Any]:
    """The record's ``dataset`` object from a ``runners.data.source.DataSource`` or a mapping."""
    if isinstance(dataset, Mapping):
        data = dict(dataset)
        missing = [k for k in ("id", "label", "is_builtin") if k not in data]
        if missing:
            raise StoreError(f"dataset section lacks {', '.join(missing)}")
        return data
    return {
        "id": dataset.data_id,
        "label": dataset.label,
        "is_builtin": bool(dataset.is_builtin),
        "kind": dataset.kind,  # synth, cityscapes or folder: only cityscapes meets the paper
        "num_classes": int(dataset.num_classes),
        "class_names": list(dataset.class_names),
    }


def build_record(
    spec: Any,
    recipe: Any,
    dataset: Any,
    seed: int,
    *,
    status: str = "ok",
    reason: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    timings: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A schema-1 record for ``spec`` under ``recipe`` (a Recipe) on ``dataset``.

    ``dataset`` is a ``runners.data.source.DataSource`` or a mapping with id, label, is_builtin,
    num_classes, class_names. ``env`` defaults to ``runners.env.environment()``. Validated
    here, so a mistake surfaces before the run's time is spent on writing it.
    """
    if env is None:
        from runners.env import environment  # torch is needed only for this default

        env = environment()
    data = dataset_section(dataset)
    key = RecordKey.of(spec, recipe, data["id"], seed)
    record = {
        "schema": SCHEMA,
        "key": key.to_dict(),
        "status": status,
        "reason": reason,
        "spec": json.loads(spec.to_json()),
        "spec_string": spec.to_string(),
        "recipe": json.loads(recipe.to_json()),
        "recipe_name": getattr(recipe, "name", None),
        "dataset": data,
        "metrics": dict(metrics) if metrics is not None else None,
        "train": dict(train) if train is not None else None,
        "env": dict(env),
        "timings": dict(timings) if timings is not None else None,
        "context": dict(context) if context is not None else {},
    }
    record = plain(record)
    check_record(record, f"record {key}")
    return record
