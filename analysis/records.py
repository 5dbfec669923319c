"""Result records as data: the key, the on-disk layout, validation, and a tidy DataFrame.

One JSON file per run, keyed by (spec_id, recipe_id, dataset_id, seed), at
``<results>/records/<spec_id>/<recipe_id>__<dataset_id>__s<seed>.json``. This module is the
read side and needs no torch, so tables, plots and claim checks run anywhere;
``runners/store.py`` (the write side: atomic writes, claims) reuses the layout and the
validation defined here, so that a file the store accepts is a file the loader reads.

A file that is not valid JSON, has another schema, or whose key does not match its file
name is *corrupt*: it is reported (logged, and listed in ``frame.attrs["problems"]``) and
skipped, never guessed at.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from searchspace.errors import StoreError

if TYPE_CHECKING:  # pandas is imported lazily: the store imports this module too
    import pandas as pd

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
    key = check_record(data, f"record {path}")
    if path.name != key.filename or path.parent.name != key.spec_id:
        raise StoreError(
            f"record {path}: its key {key} does not match its file name (expected {key.relpath})"
        )
    return data


def iter_records(
    results_dir: Path | str, problems: list[str] | None = None
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Valid records of a folder; each corrupt file is logged, appended to ``problems``, skipped."""
    for path in record_paths(results_dir):
        try:
            yield path, read_record(path)
        except StoreError as exc:
            message = f"{exc}; skipped"
            log.warning(message)
            if problems is not None:
                problems.append(message)


# --- the tidy frame ---------------------------------------------------------------------

COLUMNS = (
    "spec_id",
    "recipe_id",
    "dataset_id",
    "seed",
    "status",
    "reason",
    "spec_string",
    "recipe_name",
    "dataset_label",
    "is_builtin",
    "num_classes",
    "miou",
    "pixel_acc",
    "params",
    "params_total",
    "macs",
    "gmacs",
    "macs_input_hw",
    "latency_ms",
    "latency_p95_ms",
    "latency_iqr_ms",
    "latency_repeats",
    "latency_input_hw",
    "latency_batch",
    "latency_device",
    "latency_threads",
    "latency_dtype",
    "train_iterations",
    "train_images",
    "train_seconds",
    "train_images_per_s",
    "train_final_loss",
    "env_torch",
    "env_python",
    "env_device",
    "env_cpu",
    "env_hostname",
    "started_at",
    "finished_at",
    "profile_s",
    "train_s",
    "eval_s",
    "tables",
    "path",
)
_INT_COLUMNS = (
    "seed",
    "num_classes",
    "params",
    "params_total",
    "macs",
    "latency_repeats",
    "latency_batch",
    "latency_threads",
    "train_iterations",
    "train_images",
)
_FLOAT_COLUMNS = (
    "miou",
    "pixel_acc",
    "gmacs",
    "latency_ms",
    "latency_p95_ms",
    "latency_iqr_ms",
    "train_seconds",
    "train_images_per_s",
    "train_final_loss",
    "profile_s",
    "train_s",
    "eval_s",
)


def _hw(value: Any) -> str | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    return None


def flatten_record(record: Mapping[str, Any], path: Path | str | None = None) -> dict[str, Any]:
    """One flat row of a record: units in column names, MACs also as GMACs (MACs / 1e9)."""
    key = record.get("key") or {}
    metrics = record.get("metrics") or {}
    latency = metrics.get("latency_ms") or {}
    train = record.get("train") or {}
    env = record.get("env") or {}
    timings = record.get("timings") or {}
    dataset = record.get("dataset") or {}
    context = record.get("context") or {}
    macs = metrics.get("macs")
    return {
        "spec_id": key.get("spec_id"),
        "recipe_id": key.get("recipe_id"),
        "dataset_id": key.get("dataset_id"),
        "seed": key.get("seed"),
        "status": record.get("status"),
        "reason": record.get("reason"),
        "spec_string": record.get("spec_string"),
        "recipe_name": record.get("recipe_name"),
        "dataset_label": dataset.get("label"),
        "is_builtin": dataset.get("is_builtin"),
        "num_classes": dataset.get("num_classes"),
        "miou": metrics.get("miou"),
        "pixel_acc": metrics.get("pixel_acc"),
        "params": metrics.get("params"),
        "params_total": metrics.get("params_total"),
        "macs": macs,
        "gmacs": macs / 1e9 if macs is not None else None,
        "macs_input_hw": _hw(metrics.get("macs_input_hw")),
        "latency_ms": latency.get("median"),
        "latency_p95_ms": latency.get("p95"),
        "latency_iqr_ms": latency.get("iqr"),
        "latency_repeats": latency.get("repeats"),
        "latency_input_hw": _hw(latency.get("input_hw")),
        "latency_batch": latency.get("batch"),
        "latency_device": latency.get("device"),
        "latency_threads": latency.get("threads"),
        "latency_dtype": latency.get("dtype"),
        "train_iterations": train.get("iterations"),
        "train_images": train.get("images"),
        "train_seconds": train.get("seconds"),
        "train_images_per_s": train.get("images_per_s"),
        "train_final_loss": train.get("final_loss"),
        "env_torch": env.get("torch"),
        "env_python": env.get("python"),
        "env_device": env.get("device"),
        "env_cpu": env.get("cpu"),
        "env_hostname": env.get("hostname"),
        "started_at": timings.get("started_at"),
        "finished_at": timings.get("finished_at"),
        "profile_s": timings.get("profile_s"),
        "train_s": timings.get("train_s"),
        "eval_s": timings.get("eval_s"),
        "tables": ";".join(context.get("tables") or ()),
        "path": str(path) if path is not None else None,
    }


def records_to_frame(
    records: Iterable[Mapping[str, Any]], problems: list[str] | None = None
) -> pd.DataFrame:
    """A tidy frame (one row per record, the columns of ``COLUMNS``) from record dicts.

    Dicts that fail validation are reported in ``frame.attrs["problems"]`` and skipped.
    """
    import pandas as pd

    problems = [] if problems is None else problems
    rows = []
    for i, record in enumerate(records):
        try:
            check_record(record, f"record #{i}")
        except StoreError as exc:
            log.warning("%s; skipped", exc)
            problems.append(f"{exc}; skipped")
            continue
        rows.append(flatten_record(record, record.get("_path")))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for name in _INT_COLUMNS:
        frame[name] = frame[name].astype("Int64")
    for name in _FLOAT_COLUMNS:
        frame[name] = frame[name].astype("float64")
    frame["is_builtin"] = frame["is_builtin"].astype("boolean")
    frame.attrs["problems"] = list(problems)
    return frame


def load_records(results_dir: Path | str) -> pd.DataFrame:
    """Every valid record below ``results_dir`` as a tidy frame; corrupt files are skipped.

    ``frame.attrs["problems"]`` lists each skipped file with the reason (also logged).
    """
    problems: list[str] = []
    records = [{**rec, "_path": str(path)} for path, rec in iter_records(results_dir, problems)]
    return records_to_frame(records, problems)


def per_class_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Long frame of per-class IoU: key columns, ``class_name``, ``iou`` (0..1 or NaN)."""
    import pandas as pd

    rows = []
    for record in records:
        key = record.get("key") or {}
        per_class = (record.get("metrics") or {}).get("per_class_iou") or {}
        for name, iou in per_class.items():
            rows.append({**key, "class_name": name, "iou": iou})
    columns = ["spec_id", "recipe_id", "dataset_id", "seed", "class_name", "iou"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["iou"] = frame["iou"].astype("float64")
    return frame
