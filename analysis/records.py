"""Result records as a tidy DataFrame: one row per run, units in the column names.

The record itself (key, layout, validation, reading a file) is ``searchspace/records.py``,
shared with the store that writes it. A corrupt file is reported (logged, and appended to
the ``problems`` list the caller passes in) and skipped, never guessed at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.columns import Column, frame_of, row_of
from searchspace.errors import StoreError
from searchspace.records import check_record, iter_records, records_root

log = logging.getLogger(__name__)


def _hw(value: Any) -> str | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    return None


def half_budget_miou(curve: Any) -> float | None:
    """val mIoU at half the run's training (the curve point at half the last one's
    iterations, within one iteration), or None when the record has no such point."""
    if not isinstance(curve, list) or len(curve) < 2:
        return None
    final = curve[-1].get("iteration") if isinstance(curve[-1], Mapping) else None
    if not final:
        return None
    for point in curve[:-1]:
        if isinstance(point, Mapping) and abs(point.get("iteration", -9) - final / 2) <= 1:
            return point.get("miou")
    return None


def train_precision(record: Mapping[str, Any]) -> str | None:
    """ "fp16", "bf16" or "fp32": what the run trained in. Records made before it was
    stored are read from the recipe's ``amp`` and the device: until then amp always meant
    fp16 on CUDA and bf16 on a CPU (``runners.device.amp_dtype`` now runs fp32 on a CPU
    without native bf16 kernels)."""
    train = record.get("train") or {}
    if train.get("precision"):
        return str(train["precision"])
    amp = ((record.get("recipe") or {}).get("fields") or {}).get("amp")
    device = str((record.get("env") or {}).get("device") or "")
    if amp is None or not device or not train:
        return None
    if not amp:
        return "fp32"
    return "fp16" if device.startswith("cuda") else "bf16"


# --- the tidy frame ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """A record's sections ({} when absent) and its file: what the column getters read."""

    record: Mapping[str, Any]
    path: str | None
    key: Mapping[str, Any]
    metrics: Mapping[str, Any]
    latency: Mapping[str, Any]
    train: Mapping[str, Any]
    env: Mapping[str, Any]
    timings: Mapping[str, Any]
    dataset: Mapping[str, Any]
    context: Mapping[str, Any]

    @classmethod
    def of(cls, record: Mapping[str, Any], path: Path | str | None) -> _Source:
        metrics = record.get("metrics") or {}
        return cls(
            record=record,
            path=str(path) if path is not None else None,
            key=record.get("key") or {},
            metrics=metrics,
            latency=metrics.get("latency_ms") or {},
            train=record.get("train") or {},
            env=record.get("env") or {},
            timings=record.get("timings") or {},
            dataset=record.get("dataset") or {},
            context=record.get("context") or {},
        )


def _at(section: str, field: str) -> Callable[[_Source], Any]:
    """The getter of ``field`` in one section of the record (None when absent)."""
    return lambda s: getattr(s, section).get(field)


def _pretrained(found: Mapping[str, Any] | None) -> str | None:
    """``layout@sha256[:12]`` of the weights a run started from; None: from scratch."""
    if not found:
        return None
    return f"{found.get('layout')}@{str(found.get('sha256'))[:12]}"


def _gmacs(s: _Source) -> float | None:
    macs = s.metrics.get("macs")
    return macs / 1e9 if macs is not None else None


# Every column of the tidy frame, in order: its name, where a record keeps its value, and
# its dtype (nullable Int64 for counts, float64 for measurements, None: as read).
RECORD_COLUMNS: tuple[Column[_Source], ...] = (
    Column("spec_id", _at("key", "spec_id")),
    Column("recipe_id", _at("key", "recipe_id")),
    # a pretrained run's recipe before its weights file was applied (the table row's)
    Column("base_recipe_id", lambda s: s.context.get("base_recipe_id") or s.key.get("recipe_id")),
    Column("pretrained", lambda s: _pretrained(s.train.get("pretrained"))),
    Column("dataset_id", _at("key", "dataset_id")),
    Column("seed", _at("key", "seed"), "Int64"),
    Column("status", _at("record", "status")),
    Column("reason", _at("record", "reason")),
    Column("spec_string", _at("record", "spec_string")),
    Column("recipe_name", _at("record", "recipe_name")),
    Column("dataset_label", _at("dataset", "label")),
    Column("is_builtin", _at("dataset", "is_builtin"), "boolean"),
    Column("dataset_kind", _at("dataset", "kind")),  # absent in records before it was stored
    Column("num_classes", _at("dataset", "num_classes"), "Int64"),
    Column("miou", _at("metrics", "miou"), "float64"),
    Column("miou_half", lambda s: half_budget_miou(s.train.get("curve")), "float64"),
    Column("curve", _at("train", "curve")),  # [{"iteration", "images", "miou"}], or None
    Column("per_image", _at("metrics", "per_image")),  # {"ids", "intersection", "union"}, or None
    Column("pixel_acc", _at("metrics", "pixel_acc"), "float64"),
    Column("params", _at("metrics", "params"), "Int64"),
    Column("params_total", _at("metrics", "params_total"), "Int64"),
    Column("macs", _at("metrics", "macs"), "Int64"),
    Column("gmacs", _gmacs, "float64"),
    Column("macs_input_hw", lambda s: _hw(s.metrics.get("macs_input_hw"))),
    Column("latency_ms", _at("latency", "median"), "float64"),
    Column("latency_p95_ms", _at("latency", "p95"), "float64"),
    Column("latency_iqr_ms", _at("latency", "iqr"), "float64"),
    Column("latency_repeats", _at("latency", "repeats"), "Int64"),
    Column("latency_input_hw", lambda s: _hw(s.latency.get("input_hw"))),
    Column("latency_batch", _at("latency", "batch"), "Int64"),
    Column("latency_device", _at("latency", "device")),
    Column("latency_threads", _at("latency", "threads"), "Int64"),
    Column("latency_dtype", _at("latency", "dtype")),
    # CPUs other processes kept busy while it was timed (None in records made before)
    Column("latency_others_busy", _at("latency", "others_busy_cpus"), "float64"),
    Column("latency_contended", lambda s: bool(s.latency.get("contended"))),
    Column("train_iterations", _at("train", "iterations"), "Int64"),
    Column("train_images", _at("train", "images"), "Int64"),
    Column("train_seconds", _at("train", "seconds"), "float64"),
    Column("train_images_per_s", _at("train", "images_per_s"), "float64"),
    Column("train_final_loss", _at("train", "final_loss"), "float64"),
    Column("train_precision", lambda s: train_precision(s.record)),
    Column("env_torch", _at("env", "torch")),
    Column("env_python", _at("env", "python")),
    Column("env_device", _at("env", "device")),
    # what trained it: the GPU's name, or the CPU model (env.device_name)
    Column("env_device_name", lambda s: s.env.get("device_name") or s.env.get("cpu")),
    Column("env_cpu", _at("env", "cpu")),
    Column("env_hostname", _at("env", "hostname")),
    Column("started_at", _at("timings", "started_at")),
    Column("finished_at", _at("timings", "finished_at")),
    Column("profile_s", _at("timings", "profile_s"), "float64"),
    Column("train_s", _at("timings", "train_s"), "float64"),
    Column("eval_s", _at("timings", "eval_s"), "float64"),
    Column("tables", lambda s: ";".join(s.context.get("tables") or ())),
    Column("path", lambda s: s.path),
)
COLUMNS = tuple(c.name for c in RECORD_COLUMNS)


def flatten_record(record: Mapping[str, Any], path: Path | str | None = None) -> dict[str, Any]:
    """One flat row of a record: units in column names, MACs also as GMACs (MACs / 1e9)."""
    return row_of(_Source.of(record, path), RECORD_COLUMNS)


def records_to_frame(
    records: Iterable[Mapping[str, Any]], problems: list[str] | None = None
) -> pd.DataFrame:
    """A tidy frame (one row per record, the columns of ``RECORD_COLUMNS``) from record dicts.

    Dicts that fail validation are logged, appended to ``problems`` and skipped.
    """
    problems = [] if problems is None else problems
    sources = []
    for i, record in enumerate(records):
        try:
            check_record(record, f"record #{i}")
        except StoreError as exc:
            log.warning("%s; skipped", exc)
            problems.append(f"{exc}; skipped")
            continue
        sources.append(_Source.of(record, record.get("_path")))
    return frame_of(sources, RECORD_COLUMNS)


def load_stored_records(results_dir: Path | str, problems: list[str] | None = None) -> pd.DataFrame:
    """``load_records`` for a command: a missing folder, or one without a usable record,
    is one StoreError line (saying how many files were corrupt)."""
    if not records_root(Path(results_dir)).is_dir():
        raise StoreError(f"results folder {results_dir} not found")
    problems = [] if problems is None else problems
    records = load_records(results_dir, problems)
    if records.empty:
        if problems:
            raise StoreError(
                f"no usable records in {results_dir}: {len(problems)} corrupt "
                f"(first: {problems[0]})"
            )
        raise StoreError(f"no records in {results_dir}")
    return records


def load_records(results_dir: Path | str, problems: list[str] | None = None) -> pd.DataFrame:
    """Every valid record below ``results_dir`` as a tidy frame; corrupt files are skipped.

    Each skipped file is logged and, with the reason, appended to ``problems`` (the list
    the caller passes, as ``searchspace.records.iter_records`` takes it): a frame carries
    no side channel (no ``attrs``), so the report asks for the list it prints.
    """
    problems = [] if problems is None else problems
    records = [{**rec, "_path": str(path)} for path, rec in iter_records(results_dir, problems)]
    return records_to_frame(records, problems)
