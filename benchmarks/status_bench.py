"""How long ``python -m runners.ablate --status`` takes on a big results folder.

Builds a folder with 1,050 records of the V2 tables (every row, 35 seeds: real-sized
records, copied from ``results/v2-synth`` and re-keyed) and 50 live locks (held in this
benchmark's name, with fresh heartbeats, progress notes and launcher fields), then runs the
status command as a user would, as a new process, several times. The target (issue 25):
under 2 s. Also checks that the command never loads torch.

    python benchmarks/status_bench.py [--repeats 5] [--seeds 35]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.ablate.plan import plan_runs, resolve_tables  # noqa: E402
from runners.data.source import parse_data_arg  # noqa: E402
from searchspace.atomic import HOST, write_json  # noqa: E402
from searchspace.recipes import parse_recipe  # noqa: E402
from searchspace.records import read_record, record_paths  # noqa: E402

TABLES = "2,3a,3b,3c,4,5a,5b,6"
LOCKS = 50


def build(folder: Path, seeds: int) -> int:
    """Records for every planned run but the last ``LOCKS``, which get live locks."""
    template = read_record(record_paths(ROOT / "results" / "v2-synth")[0])
    data = parse_data_arg("synth", check=())
    runs, _ = plan_runs(resolve_tables(TABLES.split(",")), None, parse_recipe("synth"), data, seeds)
    (folder / "locks").mkdir(parents=True)
    now = time.time()
    for i, run in enumerate(runs):
        if i >= len(runs) - LOCKS:
            holder = {"pid": os.getpid(), "hostname": HOST, "token": f"t{i}", "created": now,
                      "heartbeat": now, "launch_id": "local-bench", "launch_task": str(i % 4),
                      "iteration": 100}  # fmt: skip
            (folder / "locks" / f"{run.key.stem}.lock").write_text(json.dumps(holder))
            continue
        record = {**template, "key": run.key.to_dict(), "spec_string": run.spec.to_string()}
        path = folder / "records" / run.key.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
    return len(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seeds", type=int, default=35)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="status-bench-") as tmp:
        folder = Path(tmp) / "results"
        planned = build(folder, args.seeds)
        records = len(record_paths(folder))
        size_mb = sum(p.stat().st_size for p in record_paths(folder)) / 2**20
        cmd = [sys.executable, "-m", "runners.ablate", "--table", TABLES, "--recipe", "synth",
               "--seeds", str(args.seeds), "--results-dir", str(folder), "--status"]  # fmt: skip
        probe = (
            "import runpy, sys; sys.argv = ['runners.ablate', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('runners.ablate', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('torch loaded:', 'torch' in sys.modules, file=sys.stderr)\n"
        )
        check = subprocess.run(
            [sys.executable, "-c", probe, *cmd[3:]], cwd=ROOT, capture_output=True, text=True
        )
        load_before = os.getloadavg()[0]
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - t0)
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "?")
        print(f"machine: {model}, {os.cpu_count()} CPUs, load average {load_before:.2f} before")
        print(
            f"folder: {planned} planned runs, {records} records ({size_mb:.1f} MB), "
            f"{LOCKS} live locks"
        )
        print(f"command: python -m runners.ablate --table {TABLES} --seeds {args.seeds} --status")
        print(out.stdout.strip().splitlines()[-2])
        print(check.stderr.strip().splitlines()[-1])
        print(
            f"wall time over {args.repeats} runs: median {statistics.median(times):.2f} s, "
            f"min {min(times):.2f} s, max {max(times):.2f} s (target: < 2 s)"
        )


if __name__ == "__main__":
    main()
