"""The SLURM launcher: job arrays through submitit, and SLURM's own commands.

What the scheduler already does (queueing, limits, requeue, cancel) is left to it: this
module only builds sbatch parameters from the launcher flags, submits a plan as job arrays
(one ``sbatch`` call per array, split at the cluster's ``MaxArraySize``), submits the
dependent report job, and reads ``squeue`` (never ``sacct``: many clusters run no
accounting daemon). SLURM's complaints come back as one line. Torch-free: ``--status``
and ``--cancel`` use it; ``submitit`` is imported only to submit.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from runners.launch import require_submitit
from searchspace.errors import UsageError

SIGNAL_DELAY_S = 120  # submitit's warning signal (USR2) this long before the time limit
COMMAND_TIMEOUT_S = 60
# squeue states of a job that still holds or will hold its work (not finished)
ALIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
     "SUSPENDED", "CONFIGURING", "COMPLETING", "STOPPED", "SIGNALING", "STAGE_OUT",
     "RESV_DEL_HOLD"}
)  # fmt: skip
# flags the launcher sets itself: --slurm-arg may not override them
OWN_KEYS = frozenset(
    {"array", "output", "error", "open-mode", "signal", "job-name", "dependency", "wrap"}
)


@dataclass(frozen=True)
class SlurmOptions:
    """The launcher flags, checked; what every task of a launch asks SLURM for."""

    partition: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int | None = None
    time_min: int | None = None  # None: the partition's default limit
    max_running: int | None = None  # array parallelism (``%N``) summed over the arrays
    args: Mapping[str, str | bool] = field(default_factory=dict)  # --slurm-arg, as given
    setup: tuple[str, ...] = ()  # shell lines run before each task


def parse_time(text: str) -> int:
    """SLURM's time formats to whole minutes (rounded up): ``M``, ``M:S``, ``H:M:S``,
    ``D-H``, ``D-H:M``, ``D-H:M:S``. Checked here so that a bad value stops the command
    before anything is staged or submitted."""
    value = text.strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not match:
        raise UsageError(
            f"--time {text!r}: not a SLURM time (minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S)"
        )
    days, first, second, third = match.groups()
    if days is not None:  # D-H[:M[:S]]
        parts = [int(days) * 24 + int(first), int(second or 0), int(third or 0)]
    elif third is not None:  # H:M:S
        parts = [int(first), int(second), int(third)]
    elif second is not None:  # M:S
        parts = [0, int(first), int(second)]
    else:  # M
        parts = [0, int(first), 0]
    seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    if seconds <= 0:
        raise UsageError(f"--time {text!r}: must be longer than zero")
    return -(-seconds // 60)


def format_minutes(minutes: float) -> str:
    """Minutes as SLURM's ``D-HH:MM:SS``/``HH:MM:SS``."""
    total = round(minutes * 60)
    days, rest = divmod(total, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def parse_slurm_args(items: Sequence[str]) -> dict[str, str | bool]:
    """``--slurm-arg KEY=VALUE`` (or a bare ``KEY`` for a flag) into sbatch options, keys
    as sbatch spells them (``mem-per-cpu``, ``qos``), values as given."""
    out: dict[str, str | bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key) or (sep and not value.strip()):
            raise UsageError(
                f"--slurm-arg {item!r}: expected KEY=VALUE (an sbatch option, e.g. qos=high or "
                "mem-per-cpu=4G) or a bare KEY for a flag"
            )
        key = key.replace("_", "-")
        if key in OWN_KEYS:
            raise UsageError(f"--slurm-arg {item!r}: the launcher sets --{key} itself")
        out[key] = value.strip() if sep else True
    return out


FLAGS = ("partition", "gpus_per_run", "cpus_per_run", "time", "slurm_arg", "slurm_setup")


def options_from_args(args: Any, max_running: int | None) -> SlurmOptions | None:
    """The ``--launcher slurm`` flags (``runners.cli.add_slurm_arguments``) checked, one
    line each; None for another launcher, which may not be given them. Whether SLURM
    accepts them is asked when submitting, before anything is staged."""
    given = [f"--{f.replace('_', '-')}" for f in FLAGS if getattr(args, f, None) is not None]
    if args.launcher != "slurm":
        if given:
            raise UsageError(f"{', '.join(given)}: needs --launcher slurm")
        return None
    if args.gpus_per_run is not None and args.gpus_per_run < 1:
        raise UsageError(
            f"--gpus-per-run {args.gpus_per_run}: must be >= 1 (leave it out for CPUs)"
        )
    if args.cpus_per_run is not None and args.cpus_per_run < 1:
        raise UsageError(f"--cpus-per-run {args.cpus_per_run}: must be >= 1")
    if args.device == "cuda" and not args.gpus_per_run:
        raise UsageError("--device cuda with --launcher slurm: ask for GPUs with --gpus-per-run N")
    return SlurmOptions(
        partition=args.partition,
        gpus_per_run=args.gpus_per_run or 0,
        cpus_per_run=args.cpus_per_run,
        time_min=parse_time(args.time) if args.time is not None else None,
        max_running=max_running,
        args=parse_slurm_args(args.slurm_arg or []),
        setup=tuple(args.slurm_setup or ()),
    )


def check_available() -> None:
    """The extra and SLURM's client commands are here, or one line saying what to install."""
    require_submitit("slurm")
    missing = [c for c in ("sbatch", "squeue", "scancel", "scontrol", "sinfo") if not which(c)]
    if missing:
        raise UsageError(
            f"--launcher slurm: {', '.join(missing)} not on PATH (run on a SLURM login node, "
            "or install SLURM's client: Debian's slurm-client)"
        )


def which(command: str) -> str | None:
    return shutil.which(command)


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{argv[0]}: {exc}") from None


def complaint(text: str) -> str:
    """SLURM's own message as one line: its last ``error:`` line, prefix dropped."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    picked = errors[0] if errors else (lines[-1] if lines else "no message")
    return re.sub(r"^\w+: error: ", "", picked)


@lru_cache(maxsize=1)
def cluster_config() -> dict[str, str]:
    """``scontrol show config`` as a dict (read once per process)."""
    proc = _run(["scontrol", "show", "config"])
    if proc.returncode != 0:
        raise UsageError(f"scontrol show config: {complaint(proc.stderr or proc.stdout)}")
    out = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def max_array_size() -> int:
    """Tasks one array may hold: array indices run from 0 to ``MaxArraySize - 1``."""
    text = cluster_config().get("MaxArraySize", "1001").split()[0]
    return max(1, int(text)) if text.isdigit() else 1001


def check_partition_and_gpus(options: SlurmOptions) -> None:
    """The partition exists, and has GPUs when runs ask for them (one line if not)."""
    argv = ["sinfo", "-h", "-o", "%P|%G"]
    if options.partition:
        argv += ["-p", options.partition]
    proc = _run(argv)
    if proc.returncode != 0:
        raise UsageError(f"sinfo: {complaint(proc.stderr or proc.stdout)}")
    rows = [ln.split("|", 1) for ln in proc.stdout.splitlines() if "|" in ln]
    if options.partition and not rows:
        known = _run(["sinfo", "-h", "-o", "%P"]).stdout.split()
        raise UsageError(
            f"--partition {options.partition!r}: SLURM has no such partition "
            f"(known: {', '.join(p.rstrip('*') for p in known) or 'none'})"
        )
    if options.gpus_per_run and not any("gpu" in gres for _, gres in rows):
        where = f"partition {options.partition}" if options.partition else "this cluster"
        raise UsageError(
            f"--gpus-per-run {options.gpus_per_run}: {where} has no GPUs (sinfo lists no gpu "
            "gres); drop --gpus-per-run to train on CPUs, or pick a GPU partition"
        )


def sbatch_parameters(
    options: SlurmOptions, name: str, *, time_min: int | None = None, dependency: str = ""
) -> dict[str, Any]:
    """submitit's ``SlurmExecutor`` parameters for one array or job of a launch."""
    additional: dict[str, Any] = dict(options.args)
    additional.setdefault("requeue", True)  # preemption and scontrol requeue put it back
    if dependency:
        additional["dependency"] = dependency
    limit = time_min if time_min is not None else options.time_min
    params: dict[str, Any] = {
        "job_name": name,
        # the warning must come well inside a short limit, or a task would stop at once
        "signal_delay_s": SIGNAL_DELAY_S if limit is None else min(SIGNAL_DELAY_S, limit * 12),
        "additional_parameters": additional,
        "setup": list(options.setup),
        "cpus_per_task": options.cpus_per_run,
        "partition": options.partition,
        "time": limit,
    }
    if options.gpus_per_run:
        params["gpus_per_node"] = options.gpus_per_run
    return {k: v for k, v in params.items() if v is not None}


def array_chunks(n: int, max_running: int | None, limit: int) -> list[tuple[int, int, int]]:
    """(start, stop, parallelism) of each array: at most ``limit`` tasks each, and the
    ``max_running`` budget shared between them (so the arrays together keep to it)."""
    chunks = [(s, min(n, s + limit)) for s in range(0, n, limit)]
    budget = max_running or n
    out = []
    for i, (start, stop) in enumerate(chunks):
        share = max(1, budget // len(chunks) + (1 if i < budget % len(chunks) else 0))
        out.append((start, stop, min(stop - start, share)))
    return out


def submit_arrays(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    folder: Path,
    options: SlurmOptions,
    name: str,
) -> list[tuple[str, str]]:
    """Submit ``fn(*args)`` for each call as job arrays; (``ARRAYID_INDEX``, log) of each.
    If SLURM refuses any array, those already submitted are cancelled and the complaint is
    raised as one line: a launch is all submitted or not at all."""
    jobs: list[tuple[str, str]] = []
    try:
        for start, stop, parallel in array_chunks(
            len(calls), options.max_running, max_array_size()
        ):
            params = sbatch_parameters(options, name)
            jobs += _submit(fn, calls[start:stop], folder, params, parallel)
    except UsageError:
        scancel(sorted({job.split("_")[0] for job, _ in jobs}))
        raise
    return jobs


def submit_after(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    folder: Path,
    options: SlurmOptions,
    name: str,
    after: Sequence[str],
    time_min: int | None = None,
) -> tuple[str, str]:
    """One job that starts once every job in ``after`` has ended, however it ended."""
    arrays = sorted({job.split("_")[0] for job in after})
    params = sbatch_parameters(
        options, name, time_min=time_min, dependency="afterany:" + ":".join(arrays)
    )
    params["additional_parameters"].pop("requeue", None)
    return _submit(fn, [args], folder, params, 1)[0]


def _submit(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    folder: Path,
    params: dict[str, Any],
    parallel: int,
) -> list[tuple[str, str]]:
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=1000)
    executor.update_parameters(**params, array_parallelism=max(1, parallel))
    try:  # submitit prints sbatch's stderr itself: it comes back once, as our one line
        with contextlib.redirect_stderr(io.StringIO()):
            submitted = _submit_quietly(executor, fn, calls)
    except (FailedJobError, FailedSubmissionError, subprocess.CalledProcessError) as exc:
        raise UsageError(f"sbatch refused the job: {complaint(str(exc))}") from None
    return [(str(job.job_id), str(job.paths.stdout)) for job in submitted]


def _submit_quietly(
    executor: Any, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]
) -> list[Any]:
    if len(calls) == 1:
        return [executor.submit(fn, *calls[0])]
    with executor.batch():
        pending = [executor.submit(fn, *args) for args in calls]
    return list(pending)


def sbatch_script(options: SlurmOptions, folder: Path, name: str, n_tasks: int) -> str:
    """The sbatch file submitit would write for one array (``--dry-run`` prints it)."""
    from submitit.slurm.slurm import _make_sbatch_string

    chunk = array_chunks(n_tasks, options.max_running, max_array_size())[0]
    params = sbatch_parameters(options, name)
    return _make_sbatch_string(
        command="python -u -m submitit.core._submit " + str(folder / "%j"),
        folder=folder / "%j",
        map_count=chunk[1] - chunk[0],
        array_parallelism=chunk[2],
        **params,
    )


# --- what SLURM says about jobs: squeue, scancel, requeue -------------------------------


@dataclass(frozen=True)
class QueuedJob:
    job: str  # ``ARRAYID_INDEX`` for an array task, else the job id
    state: str  # squeue's %T: PENDING, RUNNING, ...
    reason: str  # why it waits (%r): Priority, Resources, BeginTime (a requeue's hold), ...
    node: str  # where it runs (%N), empty while pending


def squeue(job_ids: Sequence[str]) -> dict[str, QueuedJob] | None:
    """The jobs among ``job_ids`` (array ids expand to their tasks) that squeue still
    lists as not finished; None when squeue cannot answer (controller down, not on PATH)."""
    arrays = sorted({j.split("_")[0] for j in job_ids if j})
    if not arrays:
        return {}
    if not which("squeue"):
        return None
    proc = subprocess.run(
        ["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T|%r|%N"],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:
            return {}  # every one of them finished and was purged
        return None
    return {job.job: job for job in _alive(proc.stdout)}


def jobs_named(name: str) -> list[QueuedJob] | None:
    """The unfinished jobs (array tasks expanded) with this job name; None: no answer."""
    if not which("squeue"):
        return None
    proc = subprocess.run(
        ["squeue", "-h", "-r", "-n", name, "-o", "%i|%T|%r|%N"],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
    )  # fmt: skip
    return _alive(proc.stdout) if proc.returncode == 0 else None


def _alive(text: str) -> list[QueuedJob]:
    """The unfinished jobs of squeue's ``%i|%T|%r|%N`` lines."""
    rows = [line.strip().split("|") for line in text.splitlines()]
    return [QueuedJob(*r) for r in rows if len(r) == 4 and r[1] in ALIVE_STATES]


def scancel(job_ids: Sequence[str]) -> None:
    arrays = sorted({j.split("_")[0] for j in job_ids if j})
    if arrays:
        proc = _run(["scancel", *arrays])
        if proc.returncode != 0:
            raise UsageError(f"scancel: {complaint(proc.stderr or proc.stdout)}")


def this_job() -> str | None:
    """The job this process runs in, as ``squeue`` names it, or None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def task_cpus() -> int:
    """CPUs this SLURM task may use: ``--cpus-per-task`` where set (never more than its
    affinity allows), else every usable CPU. One torch thread each."""
    from runners.cpus import usable_cpus

    given = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return max(1, min(int(given), usable_cpus()) if given.isdigit() else usable_cpus())


def requeue_this_job() -> bool:
    """Put this job back in the queue (it is ended by SLURM, and starts again later)."""
    job = this_job()
    if job is None or not which("scontrol"):
        return False
    return _run(["scontrol", "requeue", job]).returncode == 0
