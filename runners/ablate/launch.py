"""``--launcher``: an ablation's runs as tasks of a launcher, and ``--cancel``.

The launcher decides only where processes start; which key runs is the store's run-once
path inside each task (``runners.ablate.task``). Submitting skips what is stored, running
or queued already, so the same command again submits only what is missing. The ledger
(``runners.launch.ledger``) records each submission so that ``--status`` on any machine
can tell queued from missing, and ``--cancel`` can stop it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from runners.ablate.task import AblateTask, run_task
from runners.data.source import DataSource
from runners.launch.ledger import (
    Launch,
    launch_live,
    launches_dir,
    launches_for,
    new_launch_id,
    read_launches,
    write_launch,
)
from runners.launch.local import cancel_local, submit_local, tasks_of
from runners.runs import PlannedRun, ProfileSettings
from runners.store import Store
from runners.store.locks import Locks
from runners.store.run_once import decide
from runners.store.store import LOCKS_DIRNAME, STALE_AFTER_S
from searchspace.atomic import HOST
from searchspace.errors import StoreError


def to_submit(
    runs: list[PlannedRun], store: Store, max_attempts: int, force: bool
) -> list[PlannedRun]:
    """The runs no record, lock or live launch accounts for (``force``: all not running)."""
    holders = store.locks.live_holders()
    queued = {
        stem
        for launch in launches_for(store.root, [r.key.stem for r in runs])
        if launch_live(launch)
        for stem in launch.keys
    }
    out = []
    for run in runs:
        stem = run.key.stem
        if stem in holders or (stem in queued and not force):
            continue
        try:
            record = store.get(run.key)
        except StoreError:
            record = None  # corrupt: the task reports it (and --force moves it aside)
        if decide(record, max_attempts, force) == "run":
            out.append(run)
    return out


def default_running(device: str) -> int:
    """Runs at once when ``--max-running`` is not given: one per GPU, else one."""
    from runners.device import gpu_count

    return max(1, gpu_count()) if device.startswith("cuda") else 1


def launch(
    runs: list[PlannedRun], data: DataSource, args: Any, settings: ProfileSettings, argv: list[str]
) -> int:
    """Submit the runs still missing as ``--max-running`` tasks; print where they are."""
    from runners.device import task_devices

    store = Store(args.results_dir)
    todo = to_submit(runs, store, args.max_attempts, args.force)
    n_tasks = min(args.max_running or default_running(args.device), len(todo))
    print(
        f"{len(runs)} runs planned, {len(todo)} to submit "
        f"({len(runs) - len(todo)} stored, running, queued or left failed)"
    )
    if not todo:
        print("nothing to launch; --status shows where the runs stand")
        return 0
    resources = task_devices(n_tasks, args.device)
    if args.dry_run:
        print(f"dry run: would start {n_tasks} local process(es), nothing started")
        for i, (device, cpus) in enumerate(resources):
            print(f"  task {i}: device {device}, CPUs {cpus or 'all'}")
        for run in todo:
            print(f"  {run.label} seed {run.seed}: {run.spec.to_string()} ({run.key.stem})")
        return 0
    data.prepare(progress=not args.no_progress)  # staged once, not raced by the tasks
    launch_id = new_launch_id(args.launcher)
    folder = launches_dir(store.root) / launch_id
    calls = [
        (
            AblateTask(
                launch_id=launch_id,
                index=i,
                runs=tuple(todo),
                data=data,
                results_dir=str(store.root.resolve()),
                device=device,
                cpus=tuple(cpus),
                settings=settings,
                max_attempts=args.max_attempts,
                workers=args.workers,
            ),
        )
        for i, (device, cpus) in enumerate(resources)
    ]
    ledger = Launch(
        launch_id=launch_id, launcher=args.launcher, host=HOST, created=time.time(),
        command=list(argv), keys=[r.key.stem for r in todo],
    )  # fmt: skip
    write_launch(store.root, ledger)  # queued before any task can start
    ledger.tasks = tasks_of(submit_local(run_task, calls, folder), resources)
    write_launch(store.root, ledger)
    print(f"launched {launch_id}: {len(todo)} runs, {n_tasks} at once")
    for task in ledger.tasks:
        print(f"  task {task.index}: pid {task.job_id}, {task.device}, CPUs {task.cpus or 'all'}")
        print(f"    log: {task.log}")
    table_arg = " ".join(_flag_args(argv))
    print(f"watch: python -m runners.ablate {table_arg} --status")
    print(f"stop:  python -m runners.ablate {table_arg} --cancel")
    return 0


def _flag_args(argv: list[str]) -> list[str]:
    """The plan's flags of a command line (launcher flags dropped), for the hint lines."""
    keep, skip_next = [], False
    drop_with_value = {"--launcher", "--max-running", "--workers", "--max-attempts"}
    drop_alone = {"--dry-run", "--force", "--no-progress", "--no-latency"}
    for arg in argv[1:] if argv and not argv[0].startswith("-") else argv:
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in drop_with_value:
            skip_next = "=" not in arg
            continue
        if name in drop_alone:
            continue
        keep.append(arg)
    return keep


def cancel(runs: list[PlannedRun], results_dir: Path) -> int:
    """Stop the live launches that hold any run of the plan, release their locks, and mark
    them cancelled in the ledger; stored records are untouched."""
    root = Path(results_dir)
    stems = {r.key.stem for r in runs}
    live = [
        launch for launch in read_launches(root) if launch_live(launch) and stems & set(launch.keys)
    ]
    if not live:
        print(f"nothing to cancel in {root}")
        return 0
    locks = Locks(root / LOCKS_DIRNAME, STALE_AFTER_S, STALE_AFTER_S)
    for launch in live:
        if launch.launcher != "local" or launch.host != HOST:
            print(f"{launch.launch_id}: started on {launch.host}; cancel it there")
            continue
        holders = locks.live_holders()
        signalled = cancel_local(launch, holders)
        released = locks.remove_dead(launch_id=launch.launch_id)
        launch.cancelled = time.time()
        write_launch(root, launch)
        print(
            f"cancelled {launch.launch_id}: {len(signalled)} process(es) stopped, "
            f"{released} lock(s) released; stored records kept"
        )
    return 0
