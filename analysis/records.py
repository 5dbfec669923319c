"""Result records as a tidy DataFrame: one row per run, units in the column names.

The record itself (key, layout, validation, reading a file) is ``searchspace/records.py``,
shared with the store that writes it. A corrupt file is reported (logged, and listed in
``frame.attrs["problems"]``) and skipped, never guessed at.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from searchspace.errors import StoreError
from searchspace.records import check_record, iter_records, records_root

log = logging.getLogger(__name__)

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
    "dataset_kind",
    "num_classes",
    "miou",
    "miou_half",
    "curve",
    "per_image",
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
    "latency_others_busy",
    "latency_contended",
    "train_iterations",
    "train_images",
    "train_seconds",
    "train_images_per_s",
    "train_final_loss",
    "train_precision",
    "env_torch",
    "env_python",
    "env_device",
    "env_device_name",
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
    "miou_half",
    "pixel_acc",
    "gmacs",
    "latency_ms",
    "latency_p95_ms",
    "latency_iqr_ms",
    "latency_others_busy",
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
        "dataset_kind": dataset.get("kind"),  # absent in records before it was stored
        "num_classes": dataset.get("num_classes"),
        "miou": metrics.get("miou"),
        "miou_half": half_budget_miou(train.get("curve")),
        "curve": train.get("curve"),  # [{"iteration", "images", "miou"}], or None
        "per_image": metrics.get("per_image"),  # {"ids", "intersection", "union"}, or None
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
        # CPUs other processes kept busy while it was timed (None in records made before)
        "latency_others_busy": latency.get("others_busy_cpus"),
        "latency_contended": bool(latency.get("contended")),
        "train_iterations": train.get("iterations"),
        "train_images": train.get("images"),
        "train_seconds": train.get("seconds"),
        "train_images_per_s": train.get("images_per_s"),
        "train_final_loss": train.get("final_loss"),
        "train_precision": train_precision(record),
        "env_torch": env.get("torch"),
        "env_python": env.get("python"),
        "env_device": env.get("device"),
        # what trained it: the GPU's name, or the CPU model (env.device_name)
        "env_device_name": env.get("device_name") or env.get("cpu"),
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


def load_stored_records(results_dir: Path | str) -> pd.DataFrame:
    """``load_records`` for a command: a missing folder, or one without a usable record,
    is one StoreError line (saying how many files were corrupt)."""
    if not records_root(Path(results_dir)).is_dir():
        raise StoreError(f"results folder {results_dir} not found")
    records = load_records(results_dir)
    if records.empty:
        problems = records.attrs.get("problems", [])
        if problems:
            raise StoreError(
                f"no usable records in {results_dir}: {len(problems)} corrupt "
                f"(first: {problems[0]})"
            )
        raise StoreError(f"no records in {results_dir}")
    return records


def load_records(results_dir: Path | str) -> pd.DataFrame:
    """Every valid record below ``results_dir`` as a tidy frame; corrupt files are skipped.

    ``frame.attrs["problems"]`` lists each skipped file with the reason (also logged).
    """
    problems: list[str] = []
    records = [{**rec, "_path": str(path)} for path, rec in iter_records(results_dir, problems)]
    return records_to_frame(records, problems)
