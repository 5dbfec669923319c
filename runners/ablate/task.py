"""What one launcher task of an ablation does, wherever a launcher starts it.

A task is a plain callable (``run_task``) with a picklable argument: submitit runs it in a
local process today and in a SLURM job tomorrow, and a test can call it directly. It pins
itself to its share of the machine, walks the plan through the one run-once path (the
store's locks split the keys between tasks), and trains without timing: latency taken
while other tasks train beside it would be worthless. The last task to finish times every
trained network of the plan in one pass, in turns, alone on the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runners.data.source import DataSource
from runners.launch.ledger import launches_dir
from runners.runs import PlannedRun, ProfileSettings

LAUNCH_ID_ENV = "BISENET_LAUNCH_ID"
LAUNCH_TASK_ENV = "BISENET_LAUNCH_TASK"


@dataclass(frozen=True)
class AblateTask:
    """Everything a task needs, pickled by the launcher."""

    launch_id: str
    index: int
    runs: tuple[PlannedRun, ...]
    data: DataSource
    results_dir: str
    device: str
    cpus: tuple[int, ...]  # () : every CPU this process may use
    settings: ProfileSettings
    max_attempts: int
    workers: int = 0


def run_task(task: AblateTask) -> dict[str, Any]:
    """Run the task's share of the plan; the last task out times the networks."""
    from runners.ablate.run import remeasure_latency, run_ablation
    from runners.store import Store

    os.environ[LAUNCH_ID_ENV] = task.launch_id  # read into every lock this task takes
    os.environ[LAUNCH_TASK_ENV] = str(task.index)
    everything, threads = _pin(task.cpus)
    store = Store(task.results_dir)
    print(f"task {task.index} of {task.launch_id}: {task.device}, CPUs {list(task.cpus) or 'all'}")
    outcome = run_ablation(
        list(task.runs), task.data, store, device=task.device,
        settings=replace(task.settings, latency=False), progress=False,
        workers=task.workers, on_progress=lambda m: print(m, flush=True),
        max_attempts=task.max_attempts,
    )  # fmt: skip
    timed = 0
    if task.settings.latency and _last_one_out(task, store):
        _pin(everything, threads)  # as a run in a single process times them
        print("last task out: timing every trained network of the plan, in turns")
        timed = remeasure_latency(list(task.runs), store, task.device, task.settings)
    return {"ran": len(outcome.ran), "failed": len(outcome.failed), "timed": timed}


def _pin(
    cpus: tuple[int, ...] | list[int], threads: int | None = None
) -> tuple[tuple[int, ...], int]:
    """Run on ``cpus`` with ``threads`` torch threads (default: one per CPU); returns the
    CPUs and thread count from before, to give the machine back for the latency pass."""
    import torch

    before_threads = torch.get_num_threads()
    try:
        before = tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return (), before_threads
    if cpus:
        os.sched_setaffinity(0, set(cpus))
        torch.set_num_threads(threads or len(cpus))
    return before, before_threads


def _last_one_out(task: AblateTask, store: Any) -> bool:
    """True for exactly one task: the first to find every run of the plan finished (with
    a record, ok or failed) and no lock of the plan held. Each task
    asks after releasing its last lock, so the last one to finish always sees all done;
    the marker file's exclusive create settles a tie."""
    holders = store.locks.live_holders()
    for run in task.runs:
        if run.key.stem in holders:
            return False
        if store.record(run.key) is None:
            return False
    marker = launches_dir(task.results_dir) / f"{task.launch_id}.latency"
    try:
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True
