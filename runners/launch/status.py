"""``--status``: where every planned run stands, from the results folder alone.

Per run: *stored* (its mIoU), *running* (who holds its lock: host, pid, scheduler job or
launcher task, the iteration reached, the heartbeat's age), *failed* (attempts and the
first line of the reason; *retry* when a later call will try again, *gave up* at the cap),
*queued* (in a live launch's ledger, not started; for SLURM, its array task as ``squeue``
lists it, with the reason it waits), or *missing*. SLURM is asked once, through
``squeue``, never ``sacct``. Then the compute spent on
the stored runs and an estimate of what is left, from those runs' own train times.

Never imports torch (answers in well under 2 s for 1,000 records; see
``benchmarks/status_bench.py``) and never writes: any machine that sees the folder can ask.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runners.launch.ledger import queued_keys, read_launches, slurm_queue
from runners.runs import PlannedRun
from runners.store.locks import Locks
from runners.store.run_once import attempts_of, decide
from runners.store.store import LOCKS_DIRNAME
from searchspace.errors import StoreError
from searchspace.records import RECORDS_DIRNAME, read_record

STATES = ("stored", "running", "failed", "queued", "missing")


@dataclass
class RunState:
    """One planned run's state, as printed and as JSON."""

    rows: list[str]
    seed: int
    spec: str
    key: str
    state: str
    miou: float | None = None
    attempts: int | None = None
    reason: str | None = None
    retry: bool | None = None  # a failed run a later call will retry
    host: str | None = None
    pid: int | None = None
    job: str | None = None
    iteration: int | None = None
    iterations: int | None = None
    heartbeat_age_s: float | None = None
    launch_id: str | None = None
    train_s: float | None = None  # stored runs: their training seconds


@dataclass
class StatusReport:
    results_dir: str
    runs: list[RunState] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    spent_s: float = 0.0  # training seconds of the stored runs
    left_s: float | None = None  # estimated training seconds still to do (all processes)
    left_wall_s: float | None = None  # left_s divided among the processes running now
    estimated_from: int = 0  # stored runs the estimate is made from
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_status(
    runs: Sequence[PlannedRun],
    results_dir: Path | str,
    max_attempts: int,
    stale_after_s: float,
) -> StatusReport:
    """The state of each planned run (see the module docstring); reads, never writes."""
    root = Path(results_dir)
    report = StatusReport(str(root))
    holders = Locks(root / LOCKS_DIRNAME, stale_after_s, stale_after_s).live_holders()
    launches = read_launches(root)
    queue = slurm_queue(launches)
    if queue is None:
        report.problems.append(
            "squeue did not answer: SLURM tasks are shown as queued until it does"
        )
    queued = queued_keys(launches, queue)
    now = time.time()
    names: dict[str, str] = {}  # spec_id -> compact string: seeds share a spec
    for run in runs:
        stem = run.key.stem
        if run.key.spec_id not in names:
            names[run.key.spec_id] = run.spec.to_string()
        state = RunState(
            rows=[r.key for r in run.rows], seed=run.seed, spec=names[run.key.spec_id],
            key=stem, state="missing",
        )  # fmt: skip
        record = _read(root / RECORDS_DIRNAME / run.key.relpath, report.problems)
        holder = holders.get(stem)
        if record is not None:
            state.attempts = attempts_of(record)
            state.train_s = _train_s(record)
        if holder is not None:
            state.state = "running"
            state.host, state.pid = holder.get("hostname"), holder.get("pid")
            state.job = _job(holder)
            state.launch_id = holder.get("launch_id")
            state.iteration = holder.get("iteration")
            beat = holder.get("heartbeat")
            state.heartbeat_age_s = round(now - beat, 1) if isinstance(beat, (int, float)) else None
            if run.recipe.budget_kind == "iterations":
                state.iterations = int(run.recipe.budget)
        elif record is not None and record.get("status") == "ok":
            state.state = "stored"
            state.miou = (record.get("metrics") or {}).get("miou")
        elif record is not None:
            state.state = "failed"
            state.reason = (record.get("reason") or "").strip().splitlines()[0][:200]
            state.retry = decide(record, max_attempts) == "run"
        elif stem in queued:
            state.state, (state.launch_id, job) = "queued", queued[stem]
            if job is not None and queue:
                entry = queue[job]
                state.job = f"slurm {job} {entry.state.lower()}" + (
                    f" ({entry.reason})" if entry.reason and entry.reason != "None" else ""
                )
        report.runs.append(state)
    report.counts = {s: sum(r.state == s for r in report.runs) for s in STATES}
    _estimate(report, runs)
    return report


def _read(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return read_record(path)
    except StoreError as exc:
        problems.append(str(exc))
        return None


def _train_s(record: dict[str, Any]) -> float | None:
    value = (record.get("train") or {}).get("seconds")
    if not isinstance(value, (int, float)):
        value = (record.get("timings") or {}).get("train_s")
    return float(value) if isinstance(value, (int, float)) else None


def _job(holder: dict[str, Any]) -> str | None:
    """How the holder was started: ``slurm 1234_5``, ``slurm 1234``, ``local-... task 1``."""
    if holder.get("array_job_id"):
        return f"slurm {holder['array_job_id']}_{holder.get('array_task', '?')}"
    if holder.get("job_id"):
        return f"slurm {holder['job_id']}"
    if holder.get("launch_id"):
        return f"{holder['launch_id']} task {holder.get('launch_task', '?')}"
    return None


def _estimate(report: StatusReport, runs: Sequence[PlannedRun]) -> None:
    """Spent: the stored runs' training seconds. Left: each unfinished run costs what its
    own spec and recipe took in the stored runs (other seeds), else the median stored run;
    a running one only what its iterations have not reached."""
    by_run: dict[tuple[str, str], list[float]] = {}
    stored = []
    for run, state in zip(runs, report.runs, strict=True):
        if state.state == "stored" and state.train_s is not None:
            by_run.setdefault((run.key.spec_id, run.key.recipe_id), []).append(state.train_s)
            stored.append(state.train_s)
    report.spent_s = round(sum(stored), 1)
    report.estimated_from = len(stored)
    if not stored:
        return
    median = statistics.median(stored)
    left = 0.0
    for run, state in zip(runs, report.runs, strict=True):
        if state.state == "stored" or (state.state == "failed" and not state.retry):
            continue
        own = by_run.get((run.key.spec_id, run.key.recipe_id))
        cost = statistics.fmean(own) if own else median
        if state.state == "running" and state.iteration and state.iterations:
            cost *= max(0.0, 1 - state.iteration / state.iterations)
        left += cost
    report.left_s = round(left, 1)
    processes = {(s.host, s.pid) for s in report.runs if s.state == "running"}
    report.left_wall_s = round(left / max(1, len(processes)), 1)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def format_status(report: StatusReport) -> str:
    """The report as lines for a terminal: one per run, then the totals."""
    if not report.runs:
        return f"nothing planned in {report.results_dir}"
    lines = []
    width = max(len(", ".join(r.rows)) for r in report.runs)
    width = max(width, 3)
    lines.append(f"{'row':{width}s}  seed  {'state':8s}  detail")
    for r in report.runs:
        lines.append(f"{', '.join(r.rows):{width}s}  {r.seed:4d}  {r.state:8s}  {_detail(r)}")
    c = report.counts
    lines.append("")
    lines.append(
        f"{len(report.runs)} runs: {c['stored']} stored, {c['running']} running, "
        f"{c['failed']} failed, {c['queued']} queued, {c['missing']} missing"
    )
    if report.estimated_from:
        line = f"compute spent: {_duration(report.spent_s)} of training in {report.estimated_from} stored runs"
        if report.left_s:
            line += (
                f"; left: about {_duration(report.left_s)} of training, estimated from their"
                " train times"
            )
            if c["running"]:
                line += f" ({_duration(report.left_wall_s)} at the current {_processes(report)})"
        lines.append(line)
    for problem in report.problems:
        lines.append(f"warning: {problem}")
    return "\n".join(lines)


def _processes(report: StatusReport) -> str:
    n = len({(s.host, s.pid) for s in report.runs if s.state == "running"})
    return f"{n} running process" + ("" if n == 1 else "es")


def _detail(r: RunState) -> str:
    if r.state == "stored":
        miou = f"mIoU {100 * r.miou:.2f}" if isinstance(r.miou, (int, float)) else "mIoU -"
        tries = f", {r.attempts} attempts" if r.attempts and r.attempts > 1 else ""
        return miou + tries
    if r.state == "running":
        where = f"{r.host} pid {r.pid}" + (f" ({r.job})" if r.job else "")
        it = ""
        if r.iteration is not None:
            it = f", iteration {r.iteration}" + (f"/{r.iterations}" if r.iterations else "")
        age = f", heartbeat {r.heartbeat_age_s:.0f} s ago" if r.heartbeat_age_s is not None else ""
        return where + it + age
    if r.state == "failed":
        what = "will retry" if r.retry else "gave up"
        return f"{r.attempts} attempt{'s' if r.attempts != 1 else ''}, {what}: {r.reason}"
    if r.state == "queued":
        return f"submitted by {r.launch_id}, not started" + (f": {r.job}" if r.job else "")
    return ""
