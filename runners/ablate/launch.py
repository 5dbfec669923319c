"""``--launcher``: an ablation's runs as tasks of a launcher, and ``--cancel``.

The launcher decides only where processes start; which key runs is the store's run-once
path inside each task (``runners.ablate.task``). Submitting skips what is stored, running
or queued already, so the same command again submits only what is missing. The ledger
(``runners.launch.ledger``) records each submission so that ``--status`` on any machine
can tell queued from missing, and ``--cancel`` can stop it.

``--launcher local`` starts ``--max-running`` processes here that share the plan.
``--launcher slurm`` submits one array task per run (``--time`` is a per-run limit),
``--max-running`` of them at once, and one job after the arrays that re-times every
trained network on one node and writes the report.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from runners.ablate.task import AblateTask, run_commands, run_task
from runners.data.source import DataSource
from runners.launch import require_submitit, slurm
from runners.launch.ledger import (
    Launch,
    Task,
    launch_live,
    launches_dir,
    launches_for,
    new_launch_id,
    queued_keys,
    read_launches,
    slurm_queue,
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

CANCEL_WAIT_S = 120.0  # how long --cancel waits for cancelled SLURM jobs to end
RATE_SAMPLE = 8  # stored runs the time estimate's seconds per multiply-add comes from


def to_submit(
    runs: list[PlannedRun], store: Store, max_attempts: int, force: bool
) -> list[PlannedRun]:
    """The runs no record, lock or live launch accounts for (``force``: all not running)."""
    holders = store.locks.live_holders()
    launches = launches_for(store.root, [r.key.stem for r in runs])
    queued = set(queued_keys(launches, slurm_queue(launches)))
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
    """Submit the runs still missing; print where they are and how to follow them."""
    require_submitit(args.launcher)
    options = args.slurm  # checked with the other flags (runners.launch.slurm.options_from_args)
    if options is not None:  # every SLURM check before anything is read, staged or written
        slurm.check_available()
        slurm.check_partition_and_gpus(options)
    store = Store(args.results_dir)
    todo = to_submit(runs, store, args.max_attempts, args.force)
    print(
        f"{len(runs)} runs planned, {len(todo)} to submit "
        f"({len(runs) - len(todo)} stored, running, queued or left failed)"
    )
    if not todo:
        print("nothing to launch; --status shows where the runs stand")
        return 0
    if options is not None:
        return _launch_slurm(runs, todo, data, args, settings, argv, store, options)
    return _launch_local(todo, data, args, settings, argv, store)


def _launch_local(
    todo: list[PlannedRun], data: DataSource, args: Any, settings: ProfileSettings,
    argv: list[str], store: Store,
) -> int:  # fmt: skip
    from runners.device import task_devices

    n_tasks = min(args.max_running or default_running(args.device), len(todo))
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
                checkpoint_every_s=args.checkpoint_minutes * 60,
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
    _print_hints(argv)
    return 0


def _print_hints(argv: list[str]) -> None:
    table_arg = " ".join(_flag_args(argv))
    print(f"watch: python -m runners.ablate {table_arg} --status")
    print(f"stop:  python -m runners.ablate {table_arg} --cancel")


# --- SLURM --------------------------------------------------------------------------------


def _launch_slurm(
    runs: list[PlannedRun], todo: list[PlannedRun], data: DataSource, args: Any,
    settings: ProfileSettings, argv: list[str], store: Store, options: slurm.SlurmOptions,
) -> int:  # fmt: skip
    """One array task per run (split at MaxArraySize), then the report job (afterany)."""
    device = "cuda" if options.gpus_per_run else "cpu"
    launch_id = new_launch_id("slurm")
    folder = launches_dir(store.root) / launch_id
    calls = [
        (
            AblateTask(
                launch_id=launch_id, index=i, runs=(run,), data=data,
                results_dir=str(store.root.resolve()), device=device, cpus=(),
                settings=settings, max_attempts=args.max_attempts, workers=args.workers,
                scheduler="slurm", checkpoint_every_s=args.checkpoint_minutes * 60,
            ),
        )
        for i, run in enumerate(todo)
    ]  # fmt: skip
    report = report_commands(args, argv, data, store.root, folder, device, settings)
    for line in time_warnings(todo, runs, store, options):
        print(line)
    if args.dry_run:
        _print_slurm_dry_run(todo, options, folder, report)
        return 0
    data.prepare(progress=not args.no_progress)  # staged once, not raced by the tasks
    ledger = Launch(
        launch_id=launch_id, launcher="slurm", host=HOST, created=time.time(),
        command=list(argv), keys=[r.key.stem for r in todo],
    )  # fmt: skip
    write_launch(store.root, ledger)  # queued before any task can start
    try:
        jobs = slurm.submit_arrays(run_task, calls, folder, options, f"ablate-{launch_id[-4:]}")
        after = slurm.submit_after(
            run_commands, (report,), folder, options, f"report-{launch_id[-4:]}",
            after=[job for job, _ in jobs],
        )  # fmt: skip
    except Exception:
        ledger.cancelled = time.time()  # nothing of it is queued
        write_launch(store.root, ledger)
        if "jobs" in locals():
            slurm.scancel([job for job, _ in jobs])
        raise
    ledger.tasks = [
        Task(index=i, job_id=job, log=log, device=device) for i, (job, log) in enumerate(jobs)
    ]
    ledger.report = Task(index=len(jobs), job_id=after[0], log=after[1], device=device)
    write_launch(store.root, ledger)
    arrays = sorted({job.split("_")[0] for job, _ in jobs}, key=int)
    print(
        f"submitted {launch_id}: {len(todo)} runs as array job(s) {', '.join(arrays)} "
        f"({options.max_running or len(todo)} at once), report job {after[0]} after them"
    )
    print(f"  task logs: {folder}/<JOB>/<JOB>_0_log.out (<JOB>: ARRAYID_INDEX)")
    print(f"  report (latency in turns, then the tables): {after[1]}")
    print(f"  queue: squeue -j {','.join([*arrays, after[0]])}")
    _print_hints(argv)
    return 0


def report_commands(
    args: Any, argv: list[str], data: DataSource, results_dir: Path, folder: Path,
    device: str, settings: ProfileSettings,
) -> list[list[str]]:  # fmt: skip
    """What the job after the arrays runs: every trained network of the plan re-timed on
    its one node, in turns, then the Markdown report of the tables."""
    commands = []
    if settings.latency:
        plan = _without(_flag_args(argv), {"--device"})
        commands.append(
            [sys.executable, "-m", "runners.ablate", *plan, "--device", device,
             "--remeasure-latency", "--no-progress"]
        )  # fmt: skip
    commands.append(
        [sys.executable, "-m", "analysis.report", "--results-dir", str(Path(results_dir).resolve()),
         "--recipe", args.recipe, "--dataset", data.data_id, "--tables", ",".join(args.table_ids),
         "--out", str(folder / "report.md")]
    )  # fmt: skip
    return commands


def _without(flags: list[str], names: set[str]) -> list[str]:
    out, skip = [], False
    for arg in flags:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if arg.split("=", 1)[0] not in names:
            out.append(arg)
    return out


def time_warnings(
    todo: list[PlannedRun], runs: list[PlannedRun], store: Store, options: slurm.SlurmOptions
) -> list[str]:
    """Which runs will likely outlast ``--time``, from the plan's stored train times per
    cost unit (training multiply-adds, ``runners.ablate.eta``). Such a run is not lost: on
    SLURM's warning it checkpoints and requeues, and goes on where it stopped."""
    if options.time_min is None:
        return []
    from runners.ablate.eta import run_cost

    costs: dict[tuple[str, str], float] = {}  # counted once per network and recipe

    def cost(run: PlannedRun) -> float:
        memo = (run.key.spec_id, run.key.recipe_id)
        if memo not in costs:
            costs[memo] = run_cost(run)
        return costs[memo]

    rates, devices = [], set()
    for run in runs:  # the rate from a few stored runs: each costs a count of its network
        if len(rates) >= RATE_SAMPLE:
            break
        record = store.record(run.key)
        seconds = ((record or {}).get("train") or {}).get("seconds")
        if record and record.get("status") == "ok" and isinstance(seconds, (int, float)):
            rates.append(seconds / cost(run))
            devices.add(str((record.get("env") or {}).get("device_name") or "?"))
    if not rates:  # nothing counted: a fresh plan costs no time here
        return [
            "time per run: no stored run of this plan to estimate from; a run that outlasts "
            f"--time {slurm.format_minutes(options.time_min)} checkpoints, requeues and goes on"
        ]
    rate = statistics.median(rates)
    over = [(run, cost(run) * rate / 60) for run in todo]
    over = [(run, m) for run, m in over if m > options.time_min]
    head = (
        f"time per run, from {len(rates)} stored runs (trained on {', '.join(sorted(devices))}): "
    )
    if not over:
        longest = max(cost(r) for r in todo) * rate / 60
        return [head + f"the longest needs about {slurm.format_minutes(longest)}, within --time"]
    lines = [head + f"{len(over)} run(s) will likely outlast --time "
             f"{slurm.format_minutes(options.time_min)} (each then checkpoints, requeues and "
             "goes on; a longer --time saves the queue waits):"]  # fmt: skip
    lines += [
        f"  {run.label} seed {run.seed}: about {slurm.format_minutes(m)}" for run, m in over[:10]
    ]
    if len(over) > 10:
        lines.append(f"  ... and {len(over) - 10} more")
    return lines


def _print_slurm_dry_run(
    todo: list[PlannedRun], options: slurm.SlurmOptions, folder: Path, report: list[list[str]]
) -> None:
    chunks = slurm.array_chunks(len(todo), options.max_running, slurm.max_array_size())
    print(
        f"dry run: would submit {len(todo)} runs as {len(chunks)} array job(s) "
        f"(MaxArraySize {slurm.max_array_size()}), nothing submitted"
    )
    print("sbatch parameters (first array):")
    script = slurm.sbatch_script(options, folder, "ablate", len(todo))
    for line in script.splitlines():
        if line.startswith("#SBATCH") or (line and not line.startswith("#") and "srun" not in line):
            print(f"  {line}")
    for i, run in enumerate(todo):
        print(f"  task {i}: {run.label} seed {run.seed}: {run.spec.to_string()} ({run.key.stem})")
    print("then, after every task (afterany), one job on one node:")
    for argv in report:
        print("  $ " + " ".join(["python", *argv[1:]]))


def _flag_args(argv: list[str]) -> list[str]:
    """The plan's flags of a command line (launcher flags dropped), for the hint lines."""
    keep, skip_next = [], False
    drop_with_value = {
        "--launcher", "--max-running", "--workers", "--max-attempts", "--partition",
        "--gpus-per-run", "--cpus-per-run", "--time", "--slurm-arg", "--slurm-setup",
        "--checkpoint-minutes",
    }  # fmt: skip
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
    launches = [launch for launch in read_launches(root) if stems & set(launch.keys)]
    queue = slurm_queue(launches)
    live = [launch for launch in launches if launch_live(launch, queue)]
    if not live:
        print(f"nothing to cancel in {root}")
        return 0
    locks = Locks(root / LOCKS_DIRNAME, STALE_AFTER_S, STALE_AFTER_S)
    for launch in live:
        if launch.launcher == "slurm":
            _cancel_slurm(launch, root, locks)
            continue
        if launch.host != HOST:
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


def _cancel_slurm(launch: Launch, root: Path, locks: Locks) -> None:
    """``scancel`` the launch's arrays and report job; once squeue no longer lists them
    (their tasks got SIGTERM: each saved its checkpoint and released its lock, or was
    killed after KillWait), remove the locks they left, on any node."""
    slurm.check_available()
    jobs = launch.job_ids()
    slurm.scancel(jobs)
    deadline = time.monotonic() + CANCEL_WAIT_S
    left = slurm.squeue(jobs)
    while left and time.monotonic() < deadline:
        time.sleep(1.0)
        left = slurm.squeue(jobs)
    released = locks.remove_dead(launch_id=launch.launch_id, ended=not left)
    launch.cancelled = time.time()
    write_launch(root, launch)
    still = f"; {len(left)} job(s) still ending in squeue" if left else ""
    print(
        f"cancelled {launch.launch_id}: scancel {' '.join(sorted({j.split('_')[0] for j in jobs}))}, "
        f"{released} lock(s) released; stored records and checkpoints kept{still}"
    )
