"""Running an ablation: every planned run once (through ``runners.experiment.run_planned``,
the one path), re-timing stored runs, and the profile-only dry run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from runners.ablate.eta import Eta, format_eta, share_done_here
from runners.data.source import DataSource
from runners.experiment import (
    LATENCY_ROUNDS,
    LatencyKey,
    latency_key,
    profile_metrics,
    profile_run,
    run_planned,
    time_networks,
)
from runners.runs import PlannedRun, ProfileSettings
from runners.store import DEFAULT_MAX_ATTEMPTS, Store
from runners.store.run_once import Progress, decide
from runners.train.interrupt import CHECKPOINT_EVERY_S
from searchspace.errors import StoreError
from searchspace.records import RecordKey


@dataclass
class AblationOutcome:
    """Keys by what happened to them in this invocation."""

    ran: list[RecordKey]
    reused: list[RecordKey]  # an ok record stored before (or by another process meanwhile)
    corrupt: list[RecordKey]  # a record file that cannot be read: reported, not run
    busy: list[RecordKey]  # another process still runs them
    failed: list[RecordKey]  # their record is failed (run now, or left at the cap)
    exhausted: list[RecordKey]  # failed max_attempts times: not retried
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
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> AblationOutcome:
    """Do every planned run that has no finished record (or all, with ``force``)."""
    settings = settings or ProfileSettings()
    say = on_progress or (lambda _msg: None)
    t0 = time.perf_counter()
    eta: Eta | None = None  # costs counted after the first run, so one-run commands skip it
    say_planned(runs, store, force, max_attempts, say)

    def start(run: PlannedRun, where: Progress) -> None:
        left, copies = None, 1
        if eta is not None:
            pending = [run.key, *where.pending]
            copies = max(1, len(running_copies(store, pending)))
            left = eta.seconds_left(pending, copies)
        say(
            f"[{where.position}/{where.total}{format_eta(left, copies)}]"
            f" {run.label} seed {run.seed}: {run.spec.to_string()}"
        )

    def done(run: PlannedRun, record: dict[str, Any], seconds: float) -> None:
        nonlocal eta
        if eta is None and len(runs) > 1:
            eta = Eta.of(runs)
        if eta is not None:
            eta.finished(run.key, seconds, share_done_here(record))
        if record["status"] != "ok":
            say(f"    failed: {record['reason']}")
        else:
            m = record["metrics"]
            train_s = record["timings"].get("train_s", 0)
            say(f"    mIoU {100 * m['miou']:.2f}  ({train_s:.0f} s training)")

    out = run_planned(
        runs, data, store, device, settings, max_attempts=max_attempts, force=force,
        wait_s=wait_for_others_s, progress=progress, keep_checkpoints=keep_checkpoints,
        workers=workers, on_start=start, on_done=done, say=say,
        checkpoint_every_s=checkpoint_every_s,
    )  # fmt: skip
    return AblationOutcome(
        ran=list(out.ran),
        reused=list(out.reused),
        corrupt=list(out.corrupt),
        busy=list(out.busy),
        failed=out.failed,
        exhausted=list(out.exhausted),
        seconds=time.perf_counter() - t0,
    )


def say_planned(
    runs: list[PlannedRun],
    store: Store,
    force: bool,
    max_attempts: int,
    say: Callable[[str], None],
) -> None:
    """One line: how many of the plan are stored, failed for good, corrupt, left to do."""
    counts = {"done": 0, "run": 0, "exhausted": 0, "corrupt": 0}
    for run in runs:
        try:
            record = store.get(run.key)
        except StoreError:  # a corrupt file: the pass reports it by name
            counts["run" if force else "corrupt"] += 1
            continue
        counts[decide(record, max_attempts, force)] += 1
    parts = [f"{counts['done']} already stored"]
    if counts["exhausted"]:
        parts.append(
            f"{counts['exhausted']} failed {max_attempts} times (left failed; "
            "--max-attempts N or --force to try again)"
        )
    if counts["corrupt"]:
        parts.append(
            f"{counts['corrupt']} with a corrupt record (skipped; --force moves it aside and re-runs)"
        )
    say(f"{len(runs)} runs planned: {', '.join(parts)}, {counts['run']} to do")


def running_copies(store: Store, keys: list[RecordKey]) -> set[tuple[str, int]]:
    """(host, pid) of the live processes holding a lock of ``keys``: one listing of the
    lock folder, not one read per key."""
    wanted = {k.stem for k in keys}
    return {
        (holder.get("hostname", ""), holder.get("pid", 0))
        for stem, holder in store.locks.live_holders().items()
        if stem in wanted
    }


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
