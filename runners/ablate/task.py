"""What one launcher task of an ablation does, wherever a launcher starts it.

A task is a plain callable (``run_task``) with a picklable argument: submitit runs it in a
local process or in a SLURM job, and a test can call it directly. It walks its runs
through the one run-once path (the store's locks split the keys between tasks) and trains
without timing: latency taken while other tasks train beside it would be worthless.

- Local tasks pin themselves to their share of the machine, walk the whole plan, and the
  last one to finish times every trained network in one pass, in turns, alone.
- A SLURM array task does one run (so ``--time`` is a per-run limit). SLURM's warning
  signals stop training at the next step with a checkpoint (``runners.train.interrupt``);
  the lock is released without a record; on submitit's time-limit signal (USR2) the task
  requeues itself, on SIGTERM (preemption, ``scontrol requeue``, ``scancel``) SLURM has
  already decided. A lock held by a node that died is waited out until its heartbeat is
  stale, then taken over. The dependent report job (``run_report``) times the networks.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runners.data.source import DataSource
from runners.launch.ledger import launches_dir
from runners.runs import PlannedRun, ProfileSettings
from runners.store.store import STALE_AFTER_S
from runners.train.interrupt import CHECKPOINT_EVERY_S

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
    workers: int | None = 0  # None: the default for the device, on the node that runs it
    scheduler: str = "local"  # "slurm": one run per task, signals, takeover; no latency
    checkpoint_every_s: float = CHECKPOINT_EVERY_S


def run_task(task: AblateTask) -> dict[str, Any]:
    """Run the task's share of the plan; the last local task out times the networks."""
    from runners.ablate.run import remeasure_latency, run_ablation
    from runners.store import Store
    from runners.train import interrupt

    os.environ[LAUNCH_ID_ENV] = task.launch_id  # read into every lock this task takes
    os.environ[LAUNCH_TASK_ENV] = str(task.index)
    slurm = task.scheduler == "slurm"
    if slurm:  # after submitit's own handlers, which would requeue mid-step
        interrupt.install((signal.SIGTERM, signal.SIGUSR2))
        everything, threads = _threads_from_slurm()
    else:
        everything, threads = _pin(task.cpus)
    from runners.cpus import default_workers

    workers = task.workers if task.workers is not None else default_workers(task.device)
    store = Store(task.results_dir)
    where = f"CPUs {list(task.cpus)}" if task.cpus else f"{threads} torch thread(s)"
    print(f"task {task.index} of {task.launch_id}: {task.device}, {where}", flush=True)

    def one_pass(wait_s: float) -> Any:
        return run_ablation(
            list(task.runs), task.data, store, device=task.device,
            settings=replace(task.settings, latency=False), progress=False,
            workers=workers, on_progress=lambda m: print(m, flush=True),
            max_attempts=task.max_attempts, wait_for_others_s=wait_s,
            checkpoint_every_s=task.checkpoint_every_s,
        )  # fmt: skip

    try:
        outcome = one_pass(0.0)
        if slurm and outcome.busy:
            # held by another process: wait for its record; if its holder died (a node
            # lost without a signal), its heartbeat goes stale and this task takes it over
            print(
                f"{len(outcome.busy)} run(s) held elsewhere: waiting (stale after {STALE_AFTER_S:.0f} s)"
            )
            outcome = one_pass(STALE_AFTER_S + 30)
    except interrupt.StopRequested as stop:
        return _stopped(stop)
    timed = 0
    if not slurm and task.settings.latency and _last_one_out(task, store):
        _pin(everything, threads)  # as a run in a single process times them
        print("last task out: timing every trained network of the plan, in turns")
        timed = remeasure_latency(list(task.runs), store, task.device, task.settings)
    return {"ran": len(outcome.ran), "failed": len(outcome.failed), "timed": timed}


def _stopped(stop: Any) -> dict[str, Any]:
    """After a stop request: the checkpoint is saved and the lock released. On submitit's
    time-limit warning (USR2) the task puts itself back in the queue; a SIGTERM means SLURM
    is already requeueing (preemption, ``scontrol requeue``) or cancelling it."""
    from runners.launch.slurm import requeue_this_job

    print(f"{stop}; lock released", flush=True)
    requeued = False
    if stop.signal_name == "SIGUSR2":
        requeued = requeue_this_job()
        print("requeued this job" if requeued else "could not requeue this job", flush=True)
    return {"stopped": stop.signal_name, "iteration": stop.iteration, "requeued": requeued}


def _threads_from_slurm() -> tuple[tuple[int, ...], int]:
    """One torch thread per CPU SLURM gave the task (its cgroup or ``--cpus-per-task``)."""
    import torch

    from runners.launch.slurm import task_cpus

    n = task_cpus()
    torch.set_num_threads(n)
    return (), n


def run_commands(commands: list[list[str]]) -> dict[str, Any]:
    """Run each command in turn, its output in this job's log; the first failure stops
    the rest. The report job: ``runners.ablate --remeasure-latency`` (every trained network
    of the plan timed in turns on this one node, so no table mixes nodes), then
    ``analysis.report``."""
    import subprocess
    import sys

    _threads_from_slurm()
    for argv in commands:
        print("$ " + " ".join(argv), flush=True)
        code = subprocess.call(argv, stdout=sys.stdout, stderr=sys.stderr)
        if code != 0:
            raise RuntimeError(f"{argv[1:3]} exited with {code}")
    return {"commands": len(commands)}


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
