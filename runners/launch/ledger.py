"""The launch ledger: which keys a launcher was asked to run, and where its tasks are.

One JSON file per launch in ``<results>/launches/<launch_id>.json``, written atomically
and rewritten only by the launcher itself (when it submits, and when ``--cancel`` marks it
cancelled). It is what lets any machine that sees the results folder tell a *queued* run
(submitted, not started: no lock yet) from a *missing* one, and what ``--cancel`` stops.
Torch-free: ``--status`` reads it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runners.launch.slurm import QueuedJob, squeue
from runners.store.files import pid_alive
from searchspace.atomic import HOST, write_json
from searchspace.errors import StoreError

LAUNCHES_DIRNAME = "launches"
LEDGER_VERSION = 1


@dataclass
class Task:
    """One process (or scheduler job) a launcher started."""

    index: int
    job_id: str  # SLURM: ``ARRAYID_INDEX``; the local launcher: its controller's pid
    log: str  # where the task writes its output
    device: str = "cpu"
    cpus: list[int] = field(default_factory=list)  # the CPUs it is pinned to ([]: any)


@dataclass
class Launch:
    """What one ``--launcher`` call submitted."""

    launch_id: str
    launcher: str  # "local" or "slurm"
    host: str  # where it was submitted (local tasks run there)
    created: float
    command: list[str]  # the command line, to say how it was started
    keys: list[str]  # the record key stems submitted (SLURM: keys[i] is tasks[i]'s run)
    tasks: list[Task] = field(default_factory=list)
    cancelled: float | None = None
    version: int = LEDGER_VERSION
    report: Task | None = None  # SLURM: the dependent latency-and-report job

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Launch:
        tasks = [Task(**t) for t in data.get("tasks", [])]
        report = Task(**data["report"]) if data.get("report") else None
        skip = {"tasks", "report"}
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k not in skip}
        return cls(**known, tasks=tasks, report=report)

    def job_ids(self) -> list[str]:
        """Every scheduler job of the launch (its tasks, then the report job)."""
        return [t.job_id for t in self.tasks] + ([self.report.job_id] if self.report else [])


def launches_dir(results_dir: Path | str) -> Path:
    return Path(results_dir) / LAUNCHES_DIRNAME


def new_launch_id(launcher: str) -> str:
    """Sortable by time, unique across machines: ``local-20261207-1204-3f9a``."""
    return f"{launcher}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def write_launch(results_dir: Path | str, launch: Launch) -> Path:
    folder = launches_dir(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{launch.launch_id}.json"
    try:
        write_json(path, launch.to_dict())
    except OSError as exc:
        raise StoreError(f"cannot write launch ledger {path}: {exc.strerror or exc}") from None
    return path


def read_launches(results_dir: Path | str) -> list[Launch]:
    """Every readable launch, oldest first; an unreadable file is skipped (it names no key
    that a record or lock would not show anyway)."""
    folder = launches_dir(results_dir)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            out.append(Launch.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return sorted(out, key=lambda launch: launch.created)


def launches_for(results_dir: Path | str, stems: Iterable[str]) -> list[Launch]:
    """The launches that submitted any of these keys."""
    wanted = set(stems)
    return [launch for launch in read_launches(results_dir) if wanted & set(launch.keys)]


def task_alive(launch: Launch, task: Task) -> bool | None:
    """Whether a local task's controller still runs; None where this machine cannot tell
    (another host, or another launcher's job, which its own scheduler knows about)."""
    if launch.launcher != "local" or launch.host != HOST:
        return None
    return task.job_id.isdigit() and pid_alive(int(task.job_id))


Queue = dict[str, QueuedJob] | None  # squeue's answer for SLURM launches; None: no answer


def slurm_queue(launches: Iterable[Launch]) -> Queue:
    """One ``squeue`` call for the jobs of every SLURM launch not cancelled."""
    jobs = [j for launch in launches if launch.launcher == "slurm" and launch.cancelled is None
            for j in launch.job_ids()]  # fmt: skip
    return squeue(jobs) if jobs else {}


def launch_live(launch: Launch, queue: Queue = None) -> bool:
    """Not cancelled and, where this machine can tell, some task still running or waiting
    (SLURM: listed by ``squeue``; when squeue does not answer, assumed live)."""
    if launch.cancelled is not None:
        return False
    if launch.launcher == "slurm":
        return queue is None or any(job in queue for job in launch.job_ids())
    states = [task_alive(launch, task) for task in launch.tasks]
    return any(state is None or state for state in states)


def queued_keys(launches: Iterable[Launch], queue: Queue) -> dict[str, tuple[str, str | None]]:
    """Key stem -> (launch id, its task's job, or None) for every key a live launch may
    still run: all keys of a live local launch; for SLURM, each key whose array task
    squeue still lists (all of them when squeue does not answer)."""
    out: dict[str, tuple[str, str | None]] = {}
    for launch in launches:
        if not launch_live(launch, queue):
            continue
        if launch.launcher == "slurm" and queue is not None:
            for stem, task in zip(launch.keys, launch.tasks):
                if task.job_id in queue:
                    out[stem] = (launch.launch_id, task.job_id)
        else:
            out.update(dict.fromkeys(launch.keys, (launch.launch_id, None)))
    return out
