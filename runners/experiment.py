"""One experiment: profile, train, evaluate and store one run. Ablation and search share it.

A run is keyed by (spec_id, recipe_id, dataset_id, seed) (``searchspace.records``). Its
record holds the profile (params, MACs, latency), the training summary, the val scores,
timings and the environment; a failure at any step is a *failed record* with its reason,
so it is stored like a result and not retried by accident. A mistake of the whole
invocation (a bad spec or flag) raises instead.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runners.checkpoint import load_model
from runners.data.datasets import DataSource
from runners.env import environment
from runners.evaluate.predict import evaluate
from runners.profile.core import profile_spec
from runners.profile.latency import LatencyConfig, LatencyResult
from runners.store import Store, build_record, utc_now
from runners.train.loop import train
from searchspace.errors import SpecError, StoreError, ToolkitError, UsageError, one_line
from searchspace.recipes import Recipe
from searchspace.records import RecordKey
from searchspace.tables import PaperRow

CHECKPOINTS = "checkpoints"  # under the results folder; never committed (see .gitignore)
# Learning-curve points: val mIoU after a quarter and half of the budget (the whole budget
# is the run's own evaluation). Outside the budget; the trained weights are unchanged.
CURVE_AT = (0.25, 0.5)


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
    """A run to do: its key, what it trains, and the paper rows it stands for (if any)."""

    key: RecordKey
    spec: Any
    recipe: Recipe
    seed: int
    rows: list[PaperRow] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ", ".join(r.key for r in self.rows)

    def input_hw(self, settings: ProfileSettings) -> tuple[int, int]:
        """Where it is profiled: the settings' input, else its paper row's."""
        h, w = settings.input_hw or self.rows[0].input_hw
        return int(h), int(w)

    @classmethod
    def of(cls, spec: Any, recipe: Recipe, data: DataSource, seed: int) -> PlannedRun:
        return cls(RecordKey.of(spec, recipe, data.data_id, seed), spec, recipe, seed)


def profile_run(spec: Any, input_hw: tuple[int, int], settings: ProfileSettings, device: str):
    """Params and MACs (the primary counter only) and, if asked, latency of one spec."""
    latency = latency_config(settings, device) if settings.latency else None
    return profile_spec(spec, input_hw, counters=("flop_counter",), latency=latency)


def latency_config(settings: ProfileSettings, device: str) -> LatencyConfig:
    return LatencyConfig(
        device=device, warmup=settings.warmup, repeats=settings.repeats, threads=settings.threads
    )


def profile_metrics(result: Any) -> dict[str, Any]:
    """The record's share of a ``ProfileResult``: raw counts, latency with its spread."""
    lat = result.latency
    return {
        "params": int(result.params_inference),
        "params_total": int(result.params_total),
        "macs": int(result.macs),
        "macs_input_hw": list(result.input_hw),
        "latency_ms": None if lat is None else latency_metrics(lat),
    }


def latency_metrics(lat: LatencyResult) -> dict[str, Any]:
    """A record's ``latency_ms``: the median with its spread and how it was taken."""
    return {
        "median": lat.median_ms,
        "p95": lat.p95_ms,
        "iqr": lat.iqr_ms,
        "repeats": lat.repeats,
        "rounds": lat.options.get("rounds", 1),
        "input_hw": list(lat.input_shape[2:]),
        "batch": lat.batch,
        "device": lat.device,
        "threads": lat.threads,
        "dtype": lat.dtype,
        "others_busy_cpus": lat.others_busy_cpus,
        "contended": lat.contended,
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
    latency: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Profile, train, evaluate one run and return its record (failed records included).

    ``on_eval`` receives intermediate val mIoU (Optuna pruning) and may raise to stop;
    ``profiled`` passes metrics already measured (a search checks constraints first);
    ``latency`` a ``latency_ms`` measured beforehand (an ablation times its networks in
    turns first), so profiling only counts.
    """
    started = utc_now()
    timings: dict[str, Any] = {"started_at": started}
    context = {"tables": [r.key for r in run.rows]}
    metrics: dict[str, Any] = {}
    input_hw = run.input_hw(settings)

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
            counting = settings if latency is None else replace(settings, latency=False)
            profiled = profile_metrics(profile_run(run.spec, input_hw, counting, device))
            if latency is not None:
                profiled["latency_ms"] = dict(latency)
        metrics.update(profiled)
    except (ToolkitError, RuntimeError) as exc:
        return failed(f"profiling failed: {one_line(exc, 500)}")
    timings["profile_s"] = time.perf_counter() - t0

    run_dir = results_dir / CHECKPOINTS / run.key.stem
    t0 = time.perf_counter()
    try:
        result = train(
            run.spec, run.recipe, data, run.seed, run_dir, device=device, progress=progress,
            workers=workers, on_eval=on_eval, curve_at=CURVE_AT,
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
        "precision": result.precision,
    }
    if result.status != "ok":
        return failed(result.reason or "training failed", train_part)

    t0 = time.perf_counter()
    try:
        model, _, _ = load_model(run_dir, device)
        scores = evaluate(
            model, data, "val", input_hw=run.recipe.eval_hw, device=device,
            amp=run.recipe.amp, channels_last=run.recipe.channels_last,
            normalize=(run.recipe.input_mean, run.recipe.input_std),
        )  # fmt: skip
    except (ToolkitError, RuntimeError) as exc:
        return failed(f"evaluation failed: {one_line(exc, 500)}", train_part)
    timings["eval_s"] = time.perf_counter() - t0
    metrics.update(
        miou=scores.miou,
        pixel_acc=scores.pixel_acc,
        per_class_iou=scores.per_class_iou,  # NaN (class absent) is stored as null
        eval_images=scores.n_images,
        eval_input_hw=list(run.recipe.eval_hw) if run.recipe.eval_hw else None,
        # per val image and class: intersection and union pixel counts (exact subsets)
        per_image=scores.per_image.to_dict() if scores.per_image else None,
    )
    # val mIoU against training seen: the points during training, then the final one
    train_part["curve"] = [
        {"iteration": e["iteration"], "images": e.get("images"), "miou": e["miou"]}
        for e in result.evals
    ] + [{"iteration": result.iterations, "images": result.images, "miou": scores.miou}]
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


def stored_record(store: Store, key: RecordKey) -> dict[str, Any] | None:
    """The stored record (ok or failed: a failure is a result too), or None.

    A corrupt file counts as no record; the store reports it.
    """
    try:
        return store.get(key)
    except ToolkitError:
        return None


def run_stored(
    run: PlannedRun,
    data: DataSource,
    store: Store,
    device: str,
    settings: ProfileSettings,
    *,
    progress: bool = False,
    keep_checkpoints: bool = False,
    on_eval: Callable[[int, float], None] | None = None,
    profiled: dict[str, Any] | None = None,
    wait_s: float = 7200.0,
) -> tuple[dict[str, Any], bool]:
    """(the run's record, whether it came from the store) -- run at most once anywhere.

    Reused when stored; waited for when another process holds the key's lock (up to
    ``wait_s``, then StoreError); otherwise run now (``execute_run``) and stored.
    """
    record = stored_record(store, run.key)
    if record is not None:
        return record, True
    data.prepare()
    with store.lock(run.key) as lock:
        if not lock:
            return _wait_for(store, run.key, wait_s), True
        record = stored_record(store, run.key)  # finished while we took the lock
        if record is not None:
            return record, True
        record = execute_run(
            run, data, store.root, device, settings, progress, keep_checkpoints,
            on_eval=on_eval, profiled=profiled,
        )  # fmt: skip
        if not lock.lost:
            store.put(record, force=True)
    return record, False


def _wait_for(store: Store, key: RecordKey, timeout_s: float) -> dict[str, Any]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        record = stored_record(store, key)
        if record is not None:
            return record
        time.sleep(2)
    raise StoreError(f"timed out waiting for {key.stem} run by another process")
