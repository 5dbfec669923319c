"""What ``--launcher slurm`` adds to the ablate command for a 200-run plan, and how many
``sbatch`` calls it makes.

Plans the V2 tables at 7 seeds (about 200 distinct runs: one array at the test
cluster's MaxArraySize of 1001) and submits them to the real one-node test cluster
(``scripts/slurm.sh up``) held (``--slurm-arg hold``), so nothing trains; then cancels them. ``sbatch`` is wrapped
by a counting shim first on PATH, which runs the real one. Timed in-process, from the
command's ``main`` to its return after a warm-up round (interpreter start and imports are
the same with or without a launcher), and as the whole command in a new process; medians
of several rounds, each on a fresh results folder. The
target (issue 26): under 5 s, one sbatch call per array (plus the report job).

    python benchmarks/slurm_submit_bench.py [--rounds 3] [--seeds 7]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.ablate.__main__ import main  # noqa: E402
from runners.launch.ledger import read_launches  # noqa: E402
from runners.launch.slurm import max_array_size, scancel  # noqa: E402

TABLES = "2,3a,3b,3c,4,5a,5b,6"

SHIM = """#!/bin/sh
echo x >> "{log}"
exec "{real}" "$@"
"""


def one_round(seeds: int, shim_dir: Path, log: Path) -> tuple[float, int, int, int]:
    """(seconds in main, runs submitted, arrays, sbatch calls) of one submission."""
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "res"
        argv = ["--table", TABLES, "--seeds", str(seeds), "--results-dir", str(res),
                "--launcher", "slurm", "--cpus-per-run", "1", "--time", "60",
                "--slurm-arg", "hold", "--no-progress"]  # fmt: skip
        log.write_text("")
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        seconds = time.perf_counter() - start
        assert code == 0
        (launch,) = read_launches(res)
        scancel(launch.job_ids())
        arrays = len({t.job_id.split("_")[0] for t in launch.tasks})
        return seconds, len(launch.keys), arrays, len(log.read_text().split())


def whole_command(seeds: int) -> float:
    """Wall seconds of the whole command as a user runs it (a new process: interpreter,
    imports, planning, staging, submitting)."""
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "res"
        argv = [sys.executable, "-m", "runners.ablate", "--table", TABLES, "--seeds", str(seeds),
                "--results-dir", str(res), "--launcher", "slurm", "--cpus-per-run", "1",
                "--time", "60", "--slurm-arg", "hold", "--no-progress"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        scancel(read_launches(res)[0].job_ids())
        return seconds


def main_bench() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=7)
    args = ap.parse_args()
    real = shutil.which("sbatch")
    if real is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        print("no SLURM answers here: start one with  bash scripts/slurm.sh up")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        shim_dir, log = Path(tmp), Path(tmp) / "calls"
        (shim_dir / "sbatch").write_text(SHIM.format(log=log, real=real))
        (shim_dir / "sbatch").chmod(0o755)
        os.environ["PATH"] = f"{shim_dir}{os.pathsep}{os.environ['PATH']}"
        rounds = [one_round(args.seeds, shim_dir, log) for _ in range(args.rounds + 1)][1:]
        whole = [whole_command(args.seeds) for _ in range(args.rounds)]
    seconds = [r[0] for r in rounds]
    _, runs, arrays, calls = rounds[-1]
    load = os.getloadavg()[0]
    print(f"plan: tables {TABLES}, {args.seeds} seeds: {runs} runs; MaxArraySize "
          f"{max_array_size()}: {arrays} array(s)")  # fmt: skip
    print(f"sbatch calls: {calls} ({arrays} array(s) + 1 report job)")
    print(f"planning and submitting, in the command: median {statistics.median(seconds):.2f} s "
          f"(min {min(seconds):.2f}, max {max(seconds):.2f}; {args.rounds} rounds after a warm-up; "
          f"load average {load:.2f})")  # fmt: skip
    print(f"the whole command as a new process (interpreter and torch import included): median "
          f"{statistics.median(whole):.2f} s (min {min(whole):.2f}, max {max(whole):.2f})")  # fmt: skip
    print("target: under 5 s added to the command, one sbatch call per array")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_bench())
