"""Training-step time with channels_last against the default (contiguous) memory layout.

    .venv/bin/python benchmarks/layout_bench.py [--spec v2:bst=none] [--rounds 4]
        [--steps 6] [--threads 2,1] [--out FILE]

The recipes ask for channels_last (NHWC), which oneDNN prefers for bf16 and CUDA prefers
for fp16. Whether it also pays in fp32 on a CPU is a property of the CPU, so this
measures it: BiSeNetV2 training steps (forward, backward, SGD) at the smoke recipe's batch
(8 x 128x256), in the precision the recipes' amp runs in on this machine, for each layout,
interleaved (A, B, B, A, ...) so that drift hits both alike, each timed after two warm-up
steps. ``--threads 2,1``: with all threads (one job) and with one (each of the two copies
of ``JOBS=2 bash scripts/v2_results.sh``). Run it on a quiet machine: the header shows
the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# isort: off
import runners  # noqa: F401  (sets OMP_WAIT_POLICY=PASSIVE before torch loads)
import torch

# isort: on

from train_step import train_seconds

from runners.device import amp_dtype, precision_name
from runners.env import cpu_model
from searchspace.atomic import write_text

LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def step_seconds(spec: str, layout: str, steps: int) -> float:
    """Seconds per training step of a freshly built model in ``layout``."""
    return train_seconds(spec, steps, LAYOUTS[layout], amp_dtype("cpu")) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--spec", default="v2:bst=none")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", default="2,1")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    precision = precision_name("cpu", amp=True)
    lines = [
        f"$ python benchmarks/layout_bench.py --spec {args.spec} --rounds {args.rounds}"
        f" --steps {args.steps} --threads {args.threads}",
        f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__};"
        f" load average before: {os.getloadavg()[0]:.2f}",
        f"job: {args.spec} training steps, batch 8 x 128x256, {precision}"
        " (the recipes' amp on this CPU)",
        "",
        f"{'threads':>7s} {'round':>5s} {'channels_last s/step':>21s} {'contiguous s/step':>18s}",
    ]
    print("\n".join(lines), flush=True)
    summary = []
    for n in threads:
        torch.set_num_threads(n)
        times: dict[str, list[float]] = {k: [] for k in LAYOUTS}
        for r in range(args.rounds):
            order = list(LAYOUTS) if r % 2 == 0 else list(LAYOUTS)[::-1]
            for layout in order:
                times[layout].append(step_seconds(args.spec, layout, args.steps))
            line = (
                f"{n:>7d} {r:>5d} {times['channels_last'][-1]:>21.3f}"
                f" {times['contiguous'][-1]:>18.3f}"
            )
            lines.append(line)
            print(line, flush=True)
        cl, co = (statistics.median(times[k]) for k in LAYOUTS)
        summary.append(
            f"{n} thread(s): median {cl:.3f} s/step channels_last, {co:.3f} contiguous;"
            f" channels_last takes {cl / co:.2f}x as long"
        )
    lines += ["", *summary, f"load average after: {os.getloadavg()[0]:.2f}"]
    print("\n".join(["", *summary]))
    if args.out:
        write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
