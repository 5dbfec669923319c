"""What a result record IS: its key, its place on disk, its validation, reading it back.

One JSON file per run, keyed by (spec_id, recipe_id, dataset_id, seed), at
``<results>/records/<spec_id>/<recipe_id>__<dataset_id>__s<seed>.json``. Data about an
experiment, so it lives low: the write side (``runners/store``: building, atomic writes,
locks) and the read side (``analysis/records.py``: the tidy DataFrame) both import it
downwards, and a file the store accepts is a file the loader reads. Standard library only.

A file that is not valid JSON, has another schema, or whose key does not match its file
name is *corrupt*: it is reported (logged, and listed by the callers' ``problems``) and
skipped, never guessed at. Numbers written before NaN became null (``"nan"`` strings,
bare ``NaN``) read back as null.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchspace.atomic import finite_or_none
from searchspace.errors import StoreError

log = logging.getLogger(__name__)

SCHEMA = 1
STATUSES = ("ok", "failed")
RECORDS_DIRNAME = "records"
RECORD_SUFFIX = ".json"  # temp and corrupt-aside files never end with it
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True, order=True)
class RecordKey:
    """What makes two runs the same run. Every part is safe in a file name."""

    spec_id: str
    recipe_id: str
    dataset_id: str
    seed: int

    def __post_init__(self) -> None:
        for name in ("spec_id", "recipe_id", "dataset_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ID_RE.match(value):
                raise StoreError(
                    f"record key {name}={value!r}: expected letters, digits, '.', '_' or '-'"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise StoreError(f"record key seed={self.seed!r}: expected an integer")

    @classmethod
    def of(cls, spec: Any, recipe: Any, dataset_id: str, seed: int) -> RecordKey:
        """The key of a run of ``spec`` (anything with ``spec_id``) under ``recipe``."""
        return cls(spec.spec_id, recipe.recipe_id, dataset_id, seed)

    @classmethod
    def from_dict(cls, data: Any, where: str = "record") -> RecordKey:
        if not isinstance(data, Mapping):
            raise StoreError(f"{where}: 'key' must be an object, got {data!r}")
        missing = [k for k in ("spec_id", "recipe_id", "dataset_id", "seed") if k not in data]
        if missing:
            raise StoreError(f"{where}: key lacks {', '.join(missing)}")
        try:
            return cls(data["spec_id"], data["recipe_id"], data["dataset_id"], data["seed"])
        except StoreError as exc:
            raise StoreError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec_id": self.spec_id,
            "recipe_id": self.recipe_id,
            "dataset_id": self.dataset_id,
            "seed": self.seed,
        }

    @property
    def filename(self) -> str:
        return f"{self.recipe_id}__{self.dataset_id}__s{self.seed}{RECORD_SUFFIX}"

    @property
    def relpath(self) -> Path:
        """Path below the records folder; one folder per spec keeps listings short."""
        return Path(self.spec_id) / self.filename

    @property
    def stem(self) -> str:
        """One flat, unique name for the key (lock files use it)."""
        return f"{self.spec_id}__{self.recipe_id}__{self.dataset_id}__s{self.seed}"

    def __str__(self) -> str:
        return f"{self.spec_id}/{self.recipe_id}/{self.dataset_id}/s{self.seed}"


def records_root(results_dir: Path | str) -> Path:
    """The folder holding ``<spec_id>/*.json``: ``results_dir/records`` if present, else itself.

    Accepting a bare records folder lets a committed fixture (or a copied subset) be read
    without the ``records/`` level.
    """
    root = Path(results_dir)
    sub = root / RECORDS_DIRNAME
    return sub if sub.is_dir() else root


def record_paths(results_dir: Path | str) -> list[Path]:
    """Every record file (sorted), without temp files or corrupt files moved aside."""
    root = records_root(results_dir)
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.glob(f"*/*{RECORD_SUFFIX}")
        if p.is_file() and not p.name.startswith(".") and not p.parent.name.startswith(".")
    )


def _number(value: Any, where: str, lo: float | None = None, hi: float | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StoreError(f"{where}={value!r}: expected a finite number or null")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise StoreError(f"{where}={value!r}: expected a value in [{lo}, {hi}]")


def check_record(data: Any, where: str = "record") -> RecordKey:
    """Validate a record's structure; return its key or raise StoreError naming ``where``.

    Only what the readers rely on is checked (schema, key, status, metric types); sections
    a run could not fill (a failed run has no metrics) may be missing or null.
    """
    if not isinstance(data, Mapping):
        raise StoreError(f"{where}: expected a JSON object")
    if data.get("schema") != SCHEMA:
        raise StoreError(f"{where}: schema={data.get('schema')!r}, expected {SCHEMA}")
    key = RecordKey.from_dict(data.get("key"), where)
    status = data.get("status")
    if status not in STATUSES:
        raise StoreError(f"{where}: status={status!r}, expected 'ok' or 'failed'")
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise StoreError(f"{where}: reason={reason!r}, expected a string or null")
    if status == "failed" and not reason:
        raise StoreError(f"{where}: a failed record needs a reason")
    for section in ("metrics", "train", "env", "timings", "dataset", "context"):
        value = data.get(section)
        if value is not None and not isinstance(value, Mapping):
            raise StoreError(f"{where}: {section} must be an object or null")
    metrics = data.get("metrics") or {}
    _number(metrics.get("miou"), f"{where}: metrics.miou", 0.0, 1.0)
    _number(metrics.get("pixel_acc"), f"{where}: metrics.pixel_acc", 0.0, 1.0)
    for name in ("params", "params_total", "macs"):
        _number(metrics.get(name), f"{where}: metrics.{name}", 0)
    latency = metrics.get("latency_ms")
    if latency is not None:
        if not isinstance(latency, Mapping):
            raise StoreError(f"{where}: metrics.latency_ms must be an object or null")
        _number(latency.get("median"), f"{where}: metrics.latency_ms.median", 0)
    return key


# the sections that hold measured numbers, where older files may spell NaN as "nan"
# (bare NaN/Infinity, or quoted "nan"/"inf" strings: what a record needs fixing for)
_MAY_HOLD_NAN = re.compile(r'NaN|Infinity|"[-+]?(?i:nan|inf|infinity)"')
_NUMBER_SECTIONS = ("metrics", "train", "timings")


def _numbers_as_written_now(record: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf (bare or as the strings older writers used) in the number sections -> None."""

    def fix(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return finite_or_none(value)

    return {k: fix(v) if k in _NUMBER_SECTIONS else v for k, v in record.items()}


def read_record(path: Path | str) -> dict[str, Any]:
    """A validated record whose key matches its file name; StoreError naming the file if not."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"record {path}: unreadable ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"record {path}: bad JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and _MAY_HOLD_NAN.search(text):
        data = _numbers_as_written_now(data)  # a full walk only when the text may need it
    key = check_record(data, f"record {path}")
    if path.name != key.filename or path.parent.name != key.spec_id:
        raise StoreError(
            f"record {path}: its key {key} does not match its file name (expected {key.relpath})"
        )
    return data


def iter_records(
    results_dir: Path | str, problems: list[str] | None = None
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Valid records of a folder; each corrupt file is skipped and appended to ``problems``
    (the caller reports them), or logged when no ``problems`` list is given."""
    for path in record_paths(results_dir):
        try:
            yield path, read_record(path)
        except StoreError as exc:
            message = f"{exc}; skipped"
            if problems is None:
                log.warning(message)
            else:
                problems.append(message)
