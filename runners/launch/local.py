"""The local launcher: N tasks as separate processes on this machine, through submitit.

submitit's ``LocalExecutor`` starts each task as a controller process that outlives this
one (so ``--launcher local`` returns at once, like a cluster submission) and runs the
pickled callable in a child, logging to ``<folder>/<job id>_0_log.out|err``. The callable
knows nothing of where it runs, so the SLURM launcher submits the same callable. Tasks
decide nothing about which key runs: each walks the same plan through the store's
run-once path, whose locks split the work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from runners.launch.ledger import Launch, Task, task_alive
from runners.store.files import pid_alive

# a local task has no wall-clock limit of its own (submitit's default is 2 minutes)
LOCAL_TIMEOUT_MIN = 60 * 24 * 365
CANCEL_GRACE_S = 10.0  # how long a cancelled task may take to stop before it is killed


def submit_local(
    fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], folder: Path
) -> list[tuple[str, str]]:
    """Start ``fn(*args)`` for each ``args`` in ``calls``; (job id, log path) of each."""
    import submitit

    executor = submitit.LocalExecutor(folder=folder / "%j")
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
    folder.mkdir(parents=True, exist_ok=True)
    with _output_to(folder / "controllers.log"):
        jobs = [executor.submit(fn, *args) for args in calls]
    return [(str(job.job_id), str(job.paths.stdout)) for job in jobs]


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr at ``path`` while controllers are started:
    they inherit them and outlive us, and their own messages (a cancel's traceback among
    them) belong in the launch's folder, not in whatever terminal started the launch."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def is_submitit_controller(pid: int) -> bool:
    """The pid still names a submitit controller (not a recycled pid of another program)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid_alive(pid)  # no /proc: trust the ledger
    return b"submitit" in cmdline


def cancel_local(launch: Launch, holders: dict[str, dict[str, Any]]) -> list[int]:
    """Stop a local launch's tasks: SIGINT to each live controller (submitit's own cancel:
    it interrupts its task, whose lock is released on the way out, then kills it), and
    SIGKILL after ``CANCEL_GRACE_S`` to any of the launch's lock holders still alive.
    Returns the pids signalled."""
    signalled = []
    for task in launch.tasks:
        if task_alive(launch, task) and is_submitit_controller(int(task.job_id)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(task.job_id), signal.SIGINT)
                signalled.append(int(task.job_id))
    workers = [
        int(h["pid"])
        for h in holders.values()
        if h.get("launch_id") == launch.launch_id and isinstance(h.get("pid"), int)
    ]
    _wait_gone([*signalled, *workers], CANCEL_GRACE_S)
    for pid in [*workers, *signalled]:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                signalled.append(pid)
    _wait_gone([*signalled, *workers], CANCEL_GRACE_S)  # a lock is released only once
    return sorted(set(signalled))  # its holder is gone


def _wait_gone(pids: Sequence[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)


def tasks_of(
    jobs: Sequence[tuple[str, str]], resources: Sequence[tuple[str, list[int]]]
) -> list[Task]:
    return [
        Task(index=i, job_id=job_id, log=log, device=device, cpus=list(cpus))
        for i, ((job_id, log), (device, cpus)) in enumerate(zip(jobs, resources, strict=True))
    ]
