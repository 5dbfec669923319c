"""Re-running a paper table: plan the runs, profile + train + evaluate each, store records.

A run is keyed by (spec_id, recipe_id, dataset_id, seed); rows of different tables that
name the same spec and recipe share one run (Table 2's "bga" is Table 3a's "lambda_1_4").
The store's claim/lease makes the loop safe to resume after a kill and to share between
processes: each key is run once, and a finished key is never recomputed without --force.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from analysis.records import RecordKey
from runners.data.datasets import DataSource
from runners.evaluation.checkpoint import load_model
from runners.evaluation.predict import evaluate
from runners.profiling.core import profile_spec
from runners.profiling.latency import LatencyConfig
from runners.store import Store, build_record, environment, utc_now
from runners.training.loop import train
from searchspace.errors import SpecError, ToolkitError, UsageError, one_line
from searchspace.recipes import Recipe
from searchspace.tables import PaperRow, PaperTable, get_table

CHECKPOINTS = "checkpoints"  # under the results folder; never committed (see .gitignore)


@dataclass(frozen=True)
class ProfileSettings:
    """How each run's latency is measured (counts are always taken at the row's input)."""

    latency: bool = True
    warmup: int = 2
    repeats: int = 10
    threads: int | None = None
    input_hw: tuple[int, int] | None = None  # None: the paper's input for the row


@dataclass
class PlannedRun:
    key: RecordKey
    spec: Any
    recipe: Recipe
    seed: int
    rows: list[PaperRow] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ", ".join(r.key for r in self.rows)


def resolve_tables(names: Sequence[str]) -> list[PaperTable]:
    return [get_table(n) for n in names]


def select_rows(table: PaperTable, rows: Sequence[str] | None) -> list[PaperRow]:
    """The table's rows, or the named ones (unknown names are an error, not a no-op)."""
    if not rows:
        return list(table.rows)
    return [table.row(name) for name in rows]


def plan_runs(
    tables: Sequence[PaperTable],
    rows: Sequence[str] | None,
    recipe: Recipe,
    data: DataSource,
    seeds: int,
) -> tuple[list[PlannedRun], list[PaperRow]]:
    """(runs to do, in table order and deduplicated; rows the toolkit cannot run)."""
    if seeds < 1:
        raise UsageError(f"--seeds {seeds}: must be >= 1")
    planned: dict[RecordKey, PlannedRun] = {}
    unsupported: list[PaperRow] = []
    for table in tables:
        chosen = select_rows(table, rows if len(tables) == 1 else None)
        for row in chosen:
            if row.spec is None:
                unsupported.append(row)
                continue
            if getattr(row.spec, "num_classes", None) != data.num_classes:
                spec = row.spec.replace(num_classes=data.num_classes)
            else:
                spec = row.spec
            row_recipe = recipe.replace(**row.recipe_changes) if row.recipe_changes else recipe
            for seed in range(seeds):
                key = RecordKey.of(spec, row_recipe, data.data_id, seed)
                run = planned.setdefault(key, PlannedRun(key, spec, row_recipe, seed))
                run.rows.append(row)
    return list(planned.values()), unsupported


def profile_run(spec: Any, input_hw: tuple[int, int], settings: ProfileSettings, device: str):
    latency = None
    if settings.latency:
        latency = LatencyConfig(
            device=device,
            warmup=settings.warmup,
            repeats=settings.repeats,
            threads=settings.threads,
        )
    return profile_spec(spec, input_hw, counters=("flop_counter",), latency=latency)


def profile_metrics(result: Any) -> dict[str, Any]:
    lat = result.latency
    return {
        "params": int(result.params_inference),
        "params_total": int(result.params_total),
        "macs": int(result.macs),
        "macs_input_hw": list(result.input_hw),
        "latency_ms": None
        if lat is None
        else {
            "median": lat.median_ms,
            "p95": lat.p95_ms,
            "iqr": lat.iqr_ms,
            "repeats": lat.repeats,
            "input_hw": list(result.input_hw),
            "batch": lat.batch,
            "device": lat.device,
            "threads": lat.threads,
            "dtype": lat.dtype,
        },
    }


def execute_run(
    run: PlannedRun,
    data: DataSource,
    results_dir: Path,
    device: str,
    settings: ProfileSettings,
    progress: bool,
    keep_checkpoints: bool = True,
    workers: int = 0,
    on_eval: Callable[[int, float], None] | None = None,
    profiled: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Profile, train, evaluate one run and return its record (failed records included).

    ``on_eval`` receives intermediate val mIoU (Optuna pruning) and may raise to stop;
    ``profiled`` passes metrics already measured (a search checks constraints first).
    """
    started = utc_now()
    timings: dict[str, Any] = {"started_at": started}
    context = {"tables": [r.key for r in run.rows]}
    metrics: dict[str, Any] = {}
    input_hw = settings.input_hw or run.rows[0].input_hw

    def failed(reason: str, train_part: dict | None = None) -> dict[str, Any]:
        timings["finished_at"] = utc_now()
        return build_record(
            run.spec,
            run.recipe,
            data,
            run.seed,
            status="failed",
            reason=reason,
            metrics=metrics or None,
            train=train_part,
            timings=timings,
            env=environment(device),
            context=context,
        )

    t0 = time.perf_counter()
    try:
        if profiled is None:
            profiled = profile_metrics(profile_run(run.spec, input_hw, settings, device))
        metrics.update(profiled)
    except (ToolkitError, RuntimeError) as exc:
        return failed(f"profiling failed: {one_line(exc, 500)}")
    timings["profile_s"] = time.perf_counter() - t0

    run_dir = results_dir / CHECKPOINTS / run.key.stem
    t0 = time.perf_counter()
    try:
        result = train(
            run.spec, run.recipe, data, run.seed, run_dir, device=device, progress=progress,
            workers=workers, on_eval=on_eval,
        )  # fmt: skip
    except (SpecError, UsageError):
        raise  # a mistake of the whole invocation: no point going on with other rows
    except (ToolkitError, RuntimeError) as exc:
        return failed(f"training failed: {one_line(exc, 500)}")
    timings["train_s"] = time.perf_counter() - t0
    train_part = {
        "iterations": result.iterations,
        "images": result.images,
        "seconds": result.seconds,
        "images_per_s": result.images_per_s,
        "final_loss": result.final_loss,
    }
    if result.status != "ok":
        return failed(result.reason or "training failed", train_part)

    t0 = time.perf_counter()
    try:
        model, _, _ = load_model(run_dir, device)
        scores = evaluate(
            model, data, "val", input_hw=run.recipe.eval_hw, device=device,
            amp=run.recipe.amp, channels_last=run.recipe.channels_last,
        )  # fmt: skip
    except (ToolkitError, RuntimeError) as exc:
        return failed(f"evaluation failed: {one_line(exc, 500)}", train_part)
    timings["eval_s"] = time.perf_counter() - t0
    metrics.update(
        miou=scores.miou,
        pixel_acc=scores.pixel_acc,
        per_class_iou={k: (None if v != v else v) for k, v in scores.per_class_iou.items()},
        eval_images=scores.n_images,
        eval_input_hw=list(run.recipe.eval_hw) if run.recipe.eval_hw else None,
    )
    timings["finished_at"] = utc_now()
    record = build_record(
        run.spec,
        run.recipe,
        data,
        run.seed,
        metrics=metrics,
        train=train_part,
        timings=timings,
        env=environment(device),
        context=context,
    )
    if not keep_checkpoints:
        shutil.rmtree(run_dir, ignore_errors=True)
    return record


@dataclass
class AblationOutcome:
    runs: list[PlannedRun]
    unsupported: list[PaperRow]
    ran: list[RecordKey]
    skipped: list[RecordKey]
    busy: list[RecordKey]
    failed: list[RecordKey]
    seconds: float


def run_ablation(
    runs: list[PlannedRun],
    unsupported: list[PaperRow],
    data: DataSource,
    store: Store,
    device: str = "cpu",
    settings: ProfileSettings | None = None,
    force: bool = False,
    progress: bool = True,
    keep_checkpoints: bool = True,
    wait_for_others_s: float = 0.0,
    workers: int = 0,
    on_progress: Callable[[str], None] | None = None,
) -> AblationOutcome:
    """Do every planned run that has no finished record (or all, with ``force``)."""
    settings = settings or ProfileSettings()
    say = on_progress or (lambda _msg: None)
    t0 = time.perf_counter()
    todo = [r for r in runs if store.needs_run(r.key, force=force)]
    say(f"{len(runs)} runs planned: {len(runs) - len(todo)} already stored, {len(todo)} to do")
    if todo:
        data.prepare(progress=progress)
    by_key = {r.key: r for r in runs}
    done_count = 0
    started = time.perf_counter()

    def work(key: RecordKey) -> dict[str, Any]:
        nonlocal done_count
        run = by_key[key]
        elapsed = time.perf_counter() - started
        eta = ""
        if done_count:
            eta = f", ETA {elapsed / done_count * (len(todo) - done_count) / 60:.1f} min"
        say(
            f"[{done_count + 1}/{len(todo)}{eta}] {run.label} seed {run.seed}: {run.spec.to_string()}"
        )
        record = execute_run(
            run, data, store.root, device, settings, progress, keep_checkpoints, workers
        )
        done_count += 1
        if record["status"] != "ok":
            say(f"    failed: {record['reason']}")
        else:
            m = record["metrics"]
            say(
                f"    mIoU {100 * m['miou']:.2f}  ({record['timings'].get('train_s', 0):.0f} s training)"
            )
        return record

    summary = store.run_keys([r.key for r in todo], work, force=force)
    busy = list(summary.busy)
    deadline = time.perf_counter() + wait_for_others_s
    while busy and time.perf_counter() < deadline:
        time.sleep(2.0)
        busy = [k for k in busy if not store.exists(k)]
    failed = [r.key for r in runs if _status(store, r.key) == "failed"]
    return AblationOutcome(
        runs=runs,
        unsupported=unsupported,
        ran=list(summary.ran),
        skipped=[r.key for r in runs if r.key not in summary.ran and r.key not in busy],
        busy=busy,
        failed=failed,
        seconds=time.perf_counter() - t0,
    )


def remeasure_latency(
    runs: list[PlannedRun],
    store: Store,
    device: str,
    settings: ProfileSettings,
    say: Callable[[str], None] = print,
) -> int:
    """Re-time stored runs on this machine, keeping everything else of each record.

    Latency belongs to a machine and its load, accuracy does not: this re-measures the
    former (say, on a quiet machine, or on the GPU you will deploy on) without retraining.
    """
    done = 0
    for run in runs:
        with store.claim(run.key) as claim:
            if not claim:
                say(f"skipping {run.label} seed {run.seed}: another process holds it")
                continue
            record = store.get(run.key)
            if not record or record.get("status") != "ok":
                continue
            input_hw = settings.input_hw or run.rows[0].input_hw
            latency = profile_metrics(profile_run(run.spec, input_hw, settings, device))[
                "latency_ms"
            ]
            env = environment(device)
            latency.update(remeasured_at=utc_now(), load_avg_1m=env.get("load_avg_1m"))
            record["metrics"]["latency_ms"] = latency
            if not claim.lost:
                store.put(record, force=True)
                done += 1
                say(f"{run.label} seed {run.seed}: {latency['median']:.1f} ms")
    return done


def _status(store: Store, key: RecordKey) -> str | None:
    try:
        record = store.get(key)
    except ToolkitError:
        return "corrupt"
    return None if record is None else record.get("status")


def dry_run_rows(
    runs: list[PlannedRun], device: str, settings: ProfileSettings
) -> list[dict[str, Any]]:
    """Profile only (no training, nothing stored): one dict per table row.

    Each spec is profiled once; rows that share it (the same network under another
    recipe, or the same row in two tables) reuse its numbers.
    """
    out = []
    profiled: dict[str, dict[str, Any]] = {}
    listed: set[str] = set()
    for run in runs:
        if run.spec.spec_id not in profiled:
            input_hw = settings.input_hw or run.rows[0].input_hw
            profiled[run.spec.spec_id] = profile_metrics(
                profile_run(run.spec, input_hw, settings, device)
            )
        metrics = profiled[run.spec.spec_id]
        for row in run.rows:
            if row.key in listed:
                continue
            listed.add(row.key)
            out.append(
                {
                    "row": row.key,
                    "setting": row.setting,
                    "spec": run.spec.to_string(),
                    "params_m": metrics["params"] / 1e6,
                    "gmacs_paper": row.paper_gmacs,
                    "gmacs": metrics["macs"] / 1e9,
                    "latency_ms": (metrics["latency_ms"] or {}).get("median"),
                    "miou_paper": row.paper_miou,
                }
            )
    return out


def cuda_available() -> bool:
    return torch.cuda.is_available()
