"""Sharing a machine: usable CPUs, the OpenMP wait policy, and contended timings flagged."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners import cpus
from runners.cpus import OthersBusy, cgroup_cpu_limit, default_workers, workers_warning


def test_cgroup_quota_is_read_from_v2_and_v1_files(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(v1) == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert cgroup_cpu_limit(v1) is None
    assert cgroup_cpu_limit(tmp_path / "nothing") is None


def test_usable_cpus_is_capped_by_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "_affinity_cpus", lambda: 16)
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 2.5)
    assert cpus.usable_cpus() == 3
    assert default_workers("cuda") == 2 and default_workers("cpu") == 0
    assert "more than the 3 CPUs" in (workers_warning(4) or "")
    assert workers_warning(3) is None
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
    assert cpus.usable_cpus() == 16 and default_workers("cuda:0") == 8


def test_commands_let_idle_openmp_threads_sleep() -> None:
    """``import runners`` sets OMP_WAIT_POLICY before torch loads, unless the user chose."""
    code = "import os, runners, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE"


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc/stat")
def test_a_busy_neighbour_is_seen_and_our_own_work_is_not() -> None:
    spin = "import time\nt = time.time()\nwhile time.time() - t < 3: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.5)  # let it start
        with OthersBusy() as busy:
            time.sleep(1.5)
    finally:
        child.wait()
    assert busy.cpus is not None and busy.cpus >= 0.7 and busy.contended
    with OthersBusy() as mine:  # our own CPU time is not "others"
        t = time.process_time()
        while time.process_time() - t < 1.0:
            pass
    # whatever else runs on the machine, our own second of CPU is subtracted
    assert mine.cpus is not None and mine.cpus <= busy.cpus + 1.0


def test_a_contended_timing_is_flagged_where_it_is_printed() -> None:
    from runners.profile.latency import summarize
    from runners.profile.report import _latency_line

    fields = dict(
        backend="torch", scope="forward", device="cpu", dtype="fp32", input_shape=(1, 3, 64, 64),
        warmup=1, repeats=3, threads=2, timer="perf_counter",
    )  # fmt: skip
    quiet = summarize([10.0, 11.0, 12.0], batch=1, others_busy_cpus=0.1, **fields)
    busy = summarize([30.0, 31.0, 32.0], batch=1, others_busy_cpus=1.8, **fields)
    assert not quiet.contended and busy.contended
    assert "CONTENDED" not in _latency_line(quiet)
    assert "other processes kept 1.8 CPUs busy" in _latency_line(busy)
    gpu = summarize([1.0], batch=1, others_busy_cpus=1.8, **{**fields, "device": "cuda"})
    assert not gpu.contended  # a GPU timing is not a CPU timing
