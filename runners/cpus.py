"""The CPUs this process may use, and how its idle threads wait: sharing a machine.

Torch sizes its thread pool from the CPUs it sees, not from the container's CPU quota,
and its OpenMP threads (GNU libgomp in the CPU wheels) spin while they wait for work.
Two such processes on one 2-core machine each keep 2 threads spinning on the same cores:
each mostly waits for the other's spinning threads to be descheduled, and a training run
that takes 60 s alone took 564 s beside another (issue 14; benchmarks/sharing_bench.py
measures it). Two fixes, both here:

- ``usable_cpus()``: the CPUs in this process's affinity mask, capped by the cgroup CPU
  quota (``cpu.max`` in cgroup v2, ``cfs_quota_us / cfs_period_us`` in v1), which torch
  ignores; ``runners.device`` sizes torch's pool to it, ``default_workers`` the loader's.
- ``configure_openmp()``: ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy, so
  idle threads sleep instead of spinning. libgomp reads it once, when torch loads, so this
  runs from ``runners/__init__.py``, before any command imports torch. It is torch-free.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


def configure_openmp() -> None:
    """Let idle OpenMP threads sleep (PASSIVE) unless the user chose a policy already."""
    os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when unlimited."""
    try:
        text = (root / "cpu.max").read_text().split()  # cgroup v2: "max 100000" or "150000 100000"
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may actually run on: affinity, capped by the cgroup quota."""
    cpus = _affinity_cpus()
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def cpu_shares(tasks: int) -> list[list[int]]:
    """An even share of the usable CPUs for each of ``tasks`` processes run side by side
    (a launcher pins each to its share): contiguous CPU ids, the first ones one larger
    when they do not divide; CPUs shared round-robin when there are more tasks than CPUs."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    cpus = allowed[: usable_cpus()]
    if tasks >= len(cpus):
        return [[cpus[i % len(cpus)]] for i in range(tasks)]
    base, extra = divmod(len(cpus), tasks)
    shares, start = [], 0
    for i in range(tasks):
        size = base + (1 if i < extra else 0)
        shares.append(cpus[start : start + size])
        start += size
    return shares


def default_workers(device: str) -> int:
    """Data-loader worker processes when the user does not say: none on a CPU run (the
    cores are busy training), and on a GPU all usable CPUs but one (for the process that
    feeds the GPU), at most 8."""
    if not str(device).startswith("cuda"):
        return 0
    return max(1, min(usable_cpus() - 1, 8))


def workers_warning(workers: int) -> str | None:
    """A one-line warning when more workers are asked for than there are CPUs to run them."""
    cpus = usable_cpus()
    if workers > cpus:
        return (
            f"warning: --workers {workers} is more than the {cpus} CPUs this process may use;"
            " they will take turns, which costs more than it gives"
        )
    return None


def _busy_jiffies() -> int | None:
    """All CPUs' busy time since boot in clock ticks (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle


class OthersBusy:
    """How many CPUs other processes kept busy while a block ran (a context manager).

    The machine's busy time (/proc/stat) minus this process's own CPU time, over the
    block's wall time. Unlike the load average it does not count this process, and it
    covers exactly the timed block. ``cpus`` is None where /proc/stat is unavailable.
    """

    CONTENDED = 0.5  # CPUs used by others at which a CPU timing is flagged

    def __init__(self) -> None:
        self.cpus: float | None = None

    def __enter__(self) -> OthersBusy:
        self._busy0, self._self0 = _busy_jiffies(), _own_cpu_s()
        self._t0 = _monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        busy1, wall = _busy_jiffies(), _monotonic() - self._t0
        if self._busy0 is None or busy1 is None or wall <= 0:
            return
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        machine_s = (busy1 - self._busy0) / ticks
        own_s = _own_cpu_s() - self._self0
        self.cpus = round(max(0.0, (machine_s - own_s) / wall), 2)

    @property
    def contended(self) -> bool:
        return self.cpus is not None and self.cpus >= self.CONTENDED


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _monotonic() -> float:
    import time

    return time.monotonic()
