"""Running an ablation: every planned run once (resumable, shared between processes),
re-timing stored runs, and the profile-only dry run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from blocks.builder import build_real
from runners.ablate.eta import Eta, format_eta, share_done_here
from runners.data.datasets import DataSource
from runners.env import load_avg_1m
from runners.experiment import (
    PlannedRun,
    ProfileSettings,
    execute_run,
    latency_config,
    latency_metrics,
    profile_metrics,
    profile_run,
    stored_record,
)
from runners.profile.latency import measure_latency_interleaved
from runners.store import Store, utc_now
from searchspace.errors import ToolkitError, one_line
from searchspace.records import RecordKey


@dataclass
class AblationOutcome:
    """Keys by what happened to them in this invocation."""

    ran: list[RecordKey]
    skipped: list[RecordKey]
    busy: list[RecordKey]
    failed: list[RecordKey]
    seconds: float


def run_ablation(
    runs: list[PlannedRun],
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
    corrupt = [] if force else [r for r in runs if store.state(r.key) == "corrupt"]
    stored = len(runs) - len(todo) - len(corrupt)
    bad = (
        f", {len(corrupt)} with a corrupt record (skipped; --force moves it aside and re-runs)"
        if corrupt
        else ""
    )
    say(f"{len(runs)} runs planned: {stored} already stored{bad}, {len(todo)} to do")
    if todo:
        data.prepare(progress=progress)
    timed: dict[LatencyKey, dict[str, Any]] = {}
    if todo and settings.latency:
        try:
            timed = time_networks(todo, settings, device, say)
        except (ToolkitError, RuntimeError) as exc:
            say(
                f"timing the networks in turns failed ({one_line(exc, 200)}): each run times its own"
            )
    by_key = {r.key: r for r in runs}
    eta: Eta | None = None  # costs counted after the first run, so one-run commands skip it

    def work(key: RecordKey) -> dict[str, Any]:
        nonlocal eta
        run = by_key[key]
        pending = [r.key for r in todo if not store.exists(r.key)]
        left, copies = None, 1
        if eta is not None:
            copies = max(1, sum(store.held(k) for k in pending))
            left = eta.seconds_left(pending, copies)
        say(
            f"[{len(todo) - len(pending) + 1}/{len(todo)}{format_eta(left, copies)}]"
            f" {run.label} seed {run.seed}: {run.spec.to_string()}"
        )
        started = time.perf_counter()
        record = execute_run(
            run, data, store.root, device, settings, progress, keep_checkpoints, workers,
            latency=timed.get(latency_key(run, settings)) if timed else None,
        )  # fmt: skip
        if eta is None and len(pending) > 1:
            eta = Eta.of(todo)
        if eta is not None:
            eta.finished(key, time.perf_counter() - started, share_done_here(record))
        if record["status"] != "ok":
            say(f"    failed: {record['reason']}")
        else:
            m = record["metrics"]
            say(
                f"    mIoU {100 * m['miou']:.2f}  ({record['timings'].get('train_s', 0):.0f} s training)"
            )
        return record

    summary = store.run_keys([r.key for r in todo], work, force=force)
    # runs another process held when this one reached them may have finished since
    busy, deadline = list(summary.busy), time.perf_counter() + wait_for_others_s
    while busy := [k for k in busy if not store.exists(k)]:
        if time.perf_counter() >= deadline:
            break
        time.sleep(2.0)
    failed = [r.key for r in runs if (stored_record(store, r.key) or {}).get("status") == "failed"]
    return AblationOutcome(
        ran=list(summary.ran),
        skipped=[r.key for r in runs if r.key not in summary.ran and r.key not in busy],
        busy=busy,
        failed=failed,
        seconds=time.perf_counter() - t0,
    )


# Each network is timed in this many turns (runners.profile.latency.measure_latency_interleaved)
LATENCY_ROUNDS = 5
LatencyKey = tuple[str, tuple[int, int]]


def latency_key(run: PlannedRun, settings: ProfileSettings) -> LatencyKey:
    """What a latency belongs to: the deployed network (``spec.deployed()``: not the seed,
    not the training-only heads) at its input size."""
    return run.spec.deployed().spec_id, run.input_hw(settings)


def time_networks(
    runs: list[PlannedRun],
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


def remeasure_latency(
    runs: list[PlannedRun],
    store: Store,
    device: str,
    settings: ProfileSettings,
    say: Callable[[str], None] = print,
    rounds: int = LATENCY_ROUNDS,
) -> int:
    """Re-time stored runs on this machine, keeping everything else of each record.

    Latency belongs to a machine and its load, accuracy does not: this re-measures the
    former (say, on a quiet machine, or on the GPU you will deploy on) without retraining,
    each deployed network once (``time_networks``), and gives every run that deploys it
    that measurement.
    """
    groups: dict[LatencyKey, list[PlannedRun]] = {}
    for run in runs:
        record = store.get(run.key)
        if record and record.get("status") == "ok":
            groups.setdefault(latency_key(run, settings), []).append(run)
    if not groups:
        return 0
    timed = time_networks(
        [members[0] for members in groups.values()], settings, device, say, rounds
    )
    done = 0
    for key, members in groups.items():
        latency, stored = timed[key], 0
        for run in members:
            with store.lock(run.key) as lock:
                if not lock:
                    say(f"skipping {run.label} seed {run.seed}: another process holds it")
                    continue
                record = store.get(run.key)
                if not record or record.get("status") != "ok":
                    continue
                record["metrics"]["latency_ms"] = dict(latency)
                if not lock.lost:
                    store.put(record, force=True)
                    stored += 1
        labels = ", ".join(dict.fromkeys(run.label or run.spec.to_string() for run in members))
        runs_word = "run" if stored == 1 else "runs"
        say(f"{latency['median']:7.1f} ms  {labels} ({stored} stored {runs_word})")
        done += stored
    return done


def dry_run_rows(
    runs: list[PlannedRun], device: str, settings: ProfileSettings
) -> list[dict[str, Any]]:
    """Profile only (no training, nothing stored): one dict per table row.

    Each spec is counted once; rows that share it (the same network under another
    recipe, or the same row in two tables) reuse its numbers; latency comes from one
    pass over the deployed networks in turns (``time_networks``), as in a real run.
    """
    out = []
    timed = time_networks(runs, settings, device, say=lambda _: None) if settings.latency else {}
    counting = replace(settings, latency=False)
    profiled: dict[str, dict[str, Any]] = {}
    listed: set[str] = set()
    for run in runs:
        if run.spec.spec_id not in profiled:
            metrics = profile_metrics(
                profile_run(run.spec, run.input_hw(counting), counting, device)
            )
            metrics["latency_ms"] = timed.get(latency_key(run, settings))
            profiled[run.spec.spec_id] = metrics
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
                    "contended": (metrics["latency_ms"] or {}).get("contended"),
                    "miou_paper": row.paper_miou,
                }
            )
    return out
