"""Two training jobs on one machine: how much each slows down, before and after.

    .venv/bin/python benchmarks/sharing_bench.py [--steps 12] [--out FILE]

A job is what an ablation row spends its time on: BiSeNetV2 training steps (forward,
backward, SGD) at the smoke recipe's batch (8 x 128x256, channels_last, in the precision
the recipe's amp runs in here: bf16 on a CPU with native bf16 kernels, else fp32),
timed after two warm-up steps. Each setting runs one job alone, then two at once, and
reports the slowdown (pair time / alone time; 2.0 is a fair share of the CPUs).

- before: the OpenMP runtime's default wait policy (idle threads spin before they
  sleep) and torch's default pool; what every command did until now;
- after: what ``runners`` does now: ``OMP_WAIT_POLICY=PASSIVE`` set before torch loads,
  the pool sized to the usable CPUs (``runners.cpus``);
- active: as after, with ``OMP_WAIT_POLICY=ACTIVE`` (idle threads keep spinning), which
  a user may set for a machine nobody else uses;
- split: as after, with one thread per job (``OMP_NUM_THREADS=1``), as
  ``JOBS=2 bash scripts/v2_results.sh`` runs its copies. Its last column compares the
  pair's throughput with one job of the "after" setting alone: above 1.0, two one-thread
  jobs get more done than one job with every thread.

The last line compares the split pair's throughput with the fastest single job of any
setting: the question "one copy or two?" for a machine given over to one plan.

Run it on a quiet machine (nothing else running): the header shows the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

JOB = r"""
import json, os, sys, time
if os.environ.get("BENCH_SETTING") != "before":
    import runners  # sets OMP_WAIT_POLICY=PASSIVE before torch loads
import torch
sys.path.insert(0, {root!r})
if os.environ.get("BENCH_SETTING") != "before":
    from runners.device import size_torch_threads
    size_torch_threads()
sys.path.insert(0, {bench!r})
from train_step import train_seconds
seconds = train_seconds("bisenetv2", {steps}, dtype=torch.bfloat16 if {bf16} else None)
print(json.dumps({{"seconds": seconds, "threads": torch.get_num_threads(),
                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}}))
"""


def run_jobs(setting: str, n: int, steps: int, bf16: bool) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["BENCH_SETTING"] = setting
    env["PYTHONPATH"] = str(ROOT)
    if setting == "split":
        env["OMP_NUM_THREADS"] = "1"
    if setting == "active":
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    code = JOB.format(root=str(ROOT), bench=str(ROOT / "benchmarks"), steps=steps, bf16=bf16)
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"benchmark job failed ({setting}, {n} at once)")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from runners.cpus import usable_cpus
    from runners.device import precision_name
    from searchspace.atomic import write_text

    precision = precision_name("cpu", amp=True)  # what the recipes' amp means here
    bf16 = precision == "bf16"

    lines = [
        f"machine: {os.cpu_count()} logical CPUs, {usable_cpus()} usable; load average before:"
        f" {os.getloadavg()[0]:.2f}",
        f"job: {args.steps} BiSeNetV2 training steps, batch 8 x 128x256, {precision},"
        " channels_last",
        "",
        f"{'setting':<8s} {'threads':>7s} {'OMP_WAIT_POLICY':>16s} {'alone s':>8s}"
        f" {'2 at once s':>12s} {'slowdown':>9s} {'pair throughput vs after alone':>31s}",
    ]
    after_alone = None
    alone_s: dict[str, float] = {}
    split_pair_s = 0.0
    for setting in ("before", "after", "active", "split"):
        alone = run_jobs(setting, 1, args.steps, bf16)[0]
        time.sleep(2)
        pair = run_jobs(setting, 2, args.steps, bf16)
        time.sleep(2)
        pair_s = max(j["seconds"] for j in pair)
        if setting == "after":
            after_alone = alone["seconds"]
        if setting == "split":
            split_pair_s = pair_s
        else:
            alone_s[setting] = alone["seconds"]
        gain = f"{2 * after_alone / pair_s:.2f}x" if after_alone else "-"
        lines.append(
            f"{setting:<8s} {alone['threads']:>7d} {alone['omp_wait_policy'] or '(unset)':>16s}"
            f" {alone['seconds']:8.1f} {pair_s:12.1f} {pair_s / alone['seconds']:8.2f}x"
            f" {gain:>31s}"
        )
    best = min(alone_s, key=alone_s.__getitem__)
    lines += [
        "",
        f"fastest single job: {best} ({alone_s[best]:.1f} s); two split jobs do"
        f" {2 * alone_s[best] / split_pair_s:.2f}x its work in the same time",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
