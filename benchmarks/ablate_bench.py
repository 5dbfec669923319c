"""Wall time of the main job from nothing, and of re-running it.

    .venv/bin/python benchmarks/ablate_bench.py [--table 3a]

Runs ``python -m runners.ablate --table 3a`` (defaults: smoke recipe, built-in data, 1 seed)
with a fresh data cache and a fresh results folder, so dataset generation is included,
then runs it again, which must be a no-op. Targets (issue 5): under 10 minutes on 2 cores,
and under 15 s for the re-run. Prints the machine and its load, since a busy CPU makes
both numbers meaningless.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.env import cpu_model  # noqa: E402  (the toolkit's one environment probe)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="3a")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ablate-bench-"))
    # a fresh cache too: the data-check verdicts live there, "from nothing" includes them
    env = {
        **os.environ,
        "BISENET_DATA": str(work / "data"),
        "BISENET_LAB_CACHE": str(work / "cache"),
    }
    cmd = [sys.executable, "-m", "runners.ablate", "--table", args.table,
           "--results-dir", str(work / "results"), "--no-progress"]  # fmt: skip
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")  # fmt: skip
    print("$ " + " ".join(cmd[1:]) + f"   (BISENET_DATA={work / 'data'})", flush=True)
    timings = []
    for attempt in ("first run (data generation included)", "re-run (must reuse everything)"):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        timings.append(time.perf_counter() - t0)
        if out.returncode != 0:
            print(out.stdout[-3000:], out.stderr[-3000:])
            return 1
        print(f"{attempt}: {timings[-1]:.1f} s")
    print(out.stdout[-2500:])
    print(f"targets: first run < 600 s: {'met' if timings[0] < 600 else 'NOT met'}; "
          f"re-run < 15 s: {'met' if timings[1] < 15 else 'NOT met'}")  # fmt: skip
    print(f"load average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
