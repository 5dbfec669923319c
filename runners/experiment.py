"""Experiments: profile, train, evaluate and store runs. Ablation, search and every
launcher's task run them through ``run_planned``, the one path (``runners.store.run_once``
decides which key runs and what a failure means).

A run is keyed by (spec_id, recipe_id, dataset_id, seed) (``searchspace.records``). Its
record holds the profile (params, MACs, latency), the training summary, the val scores,
timings and the environment; a failure at any step is a *failed record* with its reason,
stored like a result and retried only up to the failure policy's cap of attempts. A
mistake of the whole invocation (a bad spec or flag) raises instead.

Latency belongs to the deployed network (``spec.deployed()``: booster heads and dropout
are training-only) at its input size, not to a run: ``time_networks`` times each distinct
deployed network once, all of them in turns, and every run that deploys it gets that
measurement, with the device and host it was taken on.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from blocks.builder import build_real
from runners.checkpoint import load_model
from runners.data.source import DataSource
from runners.env import device_name, environment, load_avg_1m
from runners.evaluate.predict import evaluate
from runners.profile.core import profile_spec
from runners.profile.latency import LatencyConfig, LatencyResult, measure_latency_interleaved
from runners.runs import PlannedRun, ProfileSettings
from runners.store import (
    DEFAULT_MAX_ATTEMPTS,
    RunOnceOutcome,
    Store,
    build_record,
    run_once,
    utc_now,
)
from runners.store.locks import RunLock
from runners.store.run_once import Progress
from runners.train.interrupt import CHECKPOINT_EVERY_S
from runners.train.loop import train
from searchspace.atomic import HOST
from searchspace.errors import SpecError, ToolkitError, UsageError, one_line
from searchspace.records import RecordKey

CHECKPOINTS = "checkpoints"  # under the results folder; never committed (see .gitignore)
# Learning-curve points: val mIoU after a quarter and half of the budget (the whole budget
# is the run's own evaluation). Outside the budget; the trained weights are unchanged.
CURVE_AT = (0.25, 0.5)


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
        "device_name": device_name(lat.device),  # which CPU model or GPU, and on which host
        "host": HOST,
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
    on_step: Callable[[int], None] | None = None,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> dict[str, Any]:
    """Profile, train, evaluate one run and return its record (failed records included).

    ``on_eval`` receives intermediate val mIoU (Optuna pruning) and may raise to stop;
    ``profiled`` passes metrics already measured (a search checks constraints first);
    ``latency`` a ``latency_ms`` measured beforehand (an ablation times its networks in
    turns first), so profiling only counts; ``on_step(iteration)`` hears each training step.
    """
    started = utc_now()
    timings: dict[str, Any] = {"started_at": started}
    context: dict[str, Any] = {"tables": [r.key for r in run.rows]}
    if run.base_recipe_id is not None:
        context["base_recipe_id"] = run.base_recipe_id
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
            workers=workers, on_eval=on_eval, curve_at=CURVE_AT, on_step=on_step,
            checkpoint_every_s=checkpoint_every_s, pretrained=run.pretrained,
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
    if result.pretrained is not None:
        train_part["pretrained"] = result.pretrained  # layout, sha256, what was loaded
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


# --- latency: one pass over the deployed networks, in turns ---------------------------

# Each network is timed in this many turns (runners.profile.latency.measure_latency_interleaved)
LATENCY_ROUNDS = 5
LatencyKey = tuple[str, tuple[int, int]]


def latency_key(run: PlannedRun, settings: ProfileSettings) -> LatencyKey:
    """What a latency belongs to: the deployed network (``spec.deployed()``: not the seed,
    not the training-only heads) at its input size."""
    return run.spec.deployed().spec_id, run.input_hw(settings)


def time_networks(
    runs: Sequence[PlannedRun],
    settings: ProfileSettings,
    device: str,
    say: Callable[[str], None] = print,
    rounds: int = LATENCY_ROUNDS,
) -> dict[LatencyKey, dict[str, Any]]:
    """Each distinct deployed network of ``runs`` timed once, all of them in turns (per
    input size), as a record's ``latency_ms``. Why in turns: a machine drifting over
    minutes then slows every network alike instead of the ones timed last; one after the
    other, one network measured 572 to 754 ms across a single pass."""
    specs: dict[LatencyKey, Any] = {}
    for run in runs:
        specs.setdefault(latency_key(run, settings), run.spec.deployed())
    by_size: dict[tuple[int, int], list[LatencyKey]] = {}
    for key in specs:
        by_size.setdefault(key[1], []).append(key)
    cfg = latency_config(settings, device)
    timed: dict[LatencyKey, dict[str, Any]] = {}
    for (h, w), keys in by_size.items():
        say(f"timing {len(keys)} networks at {h}x{w}, {cfg.repeats} calls each in {rounds} turns")
        models = {key: build_real(specs[key]) for key in keys}
        for key, lat in measure_latency_interleaved(models, (1, 3, h, w), cfg, rounds).items():
            timed[key] = {**latency_metrics(lat), "measured_at": utc_now(),
                          "load_avg_1m": load_avg_1m()}  # fmt: skip
    return timed


# --- the one path: a set of planned runs, each at most once ----------------------------


def run_planned(
    runs: Sequence[PlannedRun],
    data: DataSource,
    store: Store,
    device: str,
    settings: ProfileSettings,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    force: bool = False,
    wait_s: float = 0.0,
    progress: bool = False,
    keep_checkpoints: bool = True,
    workers: int = 0,
    on_eval: Callable[[int, float], None] | None = None,
    profiled: dict[str, Any] | None = None,
    on_start: Callable[[PlannedRun, Progress], None] | None = None,
    on_done: Callable[[PlannedRun, dict[str, Any], float], None] | None = None,
    say: Callable[[str], None] = lambda _msg: None,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> RunOnceOutcome:
    """Run every planned run that needs it, each at most once across processes
    (``runners.store.run_once``: lock, atomic record, the one failure policy).

    Before the first run this process will do, the data is prepared and, when latency is
    asked for and not given (``profiled``), the deployed networks of the runs still to do
    are timed in one pass, in turns; if that pass fails, each run times its own.
    ``on_start(run, progress)`` and ``on_done(run, record, seconds)`` frame each run done
    here; ``on_eval`` and ``profiled`` pass through to ``execute_run`` (a search's pruner
    and its constraint check's profile).
    """
    by_key = {run.key: run for run in runs}
    timed: dict[LatencyKey, dict[str, Any]] = {}

    def prepare(todo: list[RecordKey]) -> None:
        data.prepare(progress=progress)
        if settings.latency and profiled is None:
            try:
                timed.update(time_networks([by_key[k] for k in todo], settings, device, say))
            except (ToolkitError, RuntimeError) as exc:
                say(
                    f"timing the networks in turns failed ({one_line(exc, 200)}): each run times its own"
                )

    def work(key: RecordKey, lock: RunLock, where: Progress) -> dict[str, Any]:
        run = by_key[key]
        if on_start is not None:
            on_start(run, where)
        started = time.perf_counter()
        record = execute_run(
            run, data, store.root, device, settings, progress, keep_checkpoints, workers,
            on_eval=on_eval, profiled=profiled,
            latency=timed.get(latency_key(run, settings)) if timed else None,
            on_step=lambda iteration: lock.note(iteration=iteration),
            checkpoint_every_s=checkpoint_every_s,
        )  # fmt: skip
        if on_done is not None:
            on_done(run, record, time.perf_counter() - started)
        return record

    return run_once(
        store, list(by_key), work, max_attempts=max_attempts, force=force, wait_s=wait_s,
        before_first=prepare,
    )  # fmt: skip
