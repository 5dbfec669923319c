"""What keeping per-image statistics costs the evaluation (target: at most 10% slower).

    .venv/bin/python benchmarks/eval_bench.py [--rounds 5] [--spec bisenetv2] [--out FILE]

Scores one model on the built-in val split (60 images, at the smoke recipe's 128x256
network input, channels_last and the precision the recipe's amp gives on this CPU
(bf16 with native bf16 kernels, else fp32), as training evaluates) with and without the
per-image intersection/union counts, interleaved (A, B, B, A, ...) so drift hits both
sides alike; prints each round and the median ratio. Run it on a quiet machine: the
header records the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blocks.builder import build_model
from runners.data.source import parse_data_arg
from runners.device import precision_name
from runners.env import environment, format_environment
from runners.evaluate.predict import evaluate
from searchspace.atomic import write_text
from searchspace.presets import parse_spec
from searchspace.recipes import get_recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--spec", default="bisenetv2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    recipe = get_recipe("smoke")
    data = parse_data_arg("synth")
    data.prepare(progress=False)
    model = build_model(parse_spec(args.spec)).eval()
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)

    def run(per_image: bool) -> float:
        t0 = time.perf_counter()
        result = evaluate(model, data, "val", input_hw=recipe.eval_hw, amp=recipe.amp,
                          channels_last=recipe.channels_last, per_image=per_image)  # fmt: skip
        assert (result.per_image is not None) == per_image
        return time.perf_counter() - t0

    run(True)  # warm-up
    lines = [
        f"$ python benchmarks/eval_bench.py --rounds {args.rounds} --spec {args.spec}",
        format_environment(environment("cpu")),
        f"load average before: {os.getloadavg()[0]:.2f}",
        f"{len(data.dataset('val'))} val images at {recipe.eval_hw}, threads {args.threads},"
        f" {precision_name('cpu', recipe.amp)}",
        "round | without per-image s | with per-image s | ratio",
    ]
    ratios, plain_s, with_s = [], [], []
    for i in range(args.rounds):
        order = (False, True) if i % 2 == 0 else (True, False)
        times = {flag: run(flag) for flag in order}
        plain_s.append(times[False])
        with_s.append(times[True])
        ratios.append(times[True] / times[False])
        lines.append(f"{i:5d} | {times[False]:19.3f} | {times[True]:16.3f} | {ratios[-1]:.3f}")
    ratio = statistics.median(ratios)
    verdict = "met" if ratio <= 1.10 else "MISSED"
    lines += [
        f"median: {statistics.median(plain_s):.3f} s without, {statistics.median(with_s):.3f} s "
        f"with; ratio {ratio:.3f} (target <= 1.10: {verdict})",
        f"load average after: {os.getloadavg()[0]:.2f}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
