"""Running an ablation: every planned run once (resumable, shared between processes),
re-timing stored runs, and the profile-only dry run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runners.ablate.eta import Eta, format_eta, share_done_here
from runners.data.datasets import DataSource
from runners.env import load_avg_1m
from runners.experiment import (
    PlannedRun,
    ProfileSettings,
    execute_run,
    profile_metrics,
    profile_run,
    stored_record,
)
from runners.store import Store, utc_now
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
            run, data, store.root, device, settings, progress, keep_checkpoints, workers
        )
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
    Latency belongs to the network, not the seed: each spec is timed once per input size
    and its seeds' records get the same measurement (a table's plan has 3-6 seeds a row,
    so this pass takes a fraction of the time it would).
    """
    done = 0
    timed: dict[tuple[str, tuple[int, int]], tuple[dict[str, Any], str]] = {}
    for run in runs:
        with store.lock(run.key) as lock:
            if not lock:
                say(f"skipping {run.label} seed {run.seed}: another process holds it")
                continue
            record = store.get(run.key)
            if not record or record.get("status") != "ok":
                continue
            input_hw = tuple(settings.input_hw or run.rows[0].input_hw)
            cache_key = (run.spec.spec_id, input_hw)
            if cache_key in timed:
                latency, first = timed[cache_key]
                reused = f" (the same network as {first}: reused)"
            else:
                latency = profile_metrics(profile_run(run.spec, input_hw, settings, device))[
                    "latency_ms"
                ]
                latency.update(remeasured_at=utc_now(), load_avg_1m=load_avg_1m())
                timed[cache_key] = (latency, f"{run.label} seed {run.seed}")
                reused = ""
            record["metrics"]["latency_ms"] = dict(latency)
            if not lock.lost:
                store.put(record, force=True)
                done += 1
                say(f"{run.label} seed {run.seed}: {latency['median']:.1f} ms{reused}")
    return done


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
                    "contended": (metrics["latency_ms"] or {}).get("contended"),
                    "miou_paper": row.paper_miou,
                }
            )
    return out
