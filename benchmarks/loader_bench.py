"""Images/s of the paper-recipe training pipeline on 2048x1024 images, before and after.

    .venv/bin/python benchmarks/loader_bench.py [--images 16] [--batches 6] [--out FILE]

Uses the built-in data generated at Cityscapes size (``runners.data synth --height 1024
--width 2048``, in the cache folder; about 25 s the first time) and the paper recipe
(1024x1024 crops, scales 0.75-2.0, flip). Three pipelines:

- before: PIL decoding and resize-first augmentation (what training did until now;
  recipe ``pipeline=resize_first`` with the PNG decoder forced back to PIL);
- after: OpenCV decoding and the crop-first sample (``pipeline=crop_first``, the paper
  recipe's default now);
- after + cache: the crop-first sample read from the pre-decoded cache
  (``python -m runners.data cache``).

Part 1 times each stage on one core (the per-core cost). Part 2 runs the real training
DataLoader (``runners.train.data.make_train_loader``) with 0, 1, 2 and 4 workers and
reports images/s. Run it on a quiet machine: the header shows the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import runners.data.datasets as datasets_module
from runners.cpus import usable_cpus
from runners.data.cache import cache_root
from runners.data.decoded import CachedDataset, build_cache, open_cache
from runners.data.source import parse_data_arg
from runners.data.synth import SynthConfig
from runners.env import environment, format_environment
from runners.train.data import KeyedAugmentedDataset, make_train_loader
from searchspace.atomic import write_text
from searchspace.recipes import get_recipe

PIL_ONLY: dict = {}  # datasets._CV2_FLAGS emptied: every PNG decoded by PIL, as before


def source_2k(n: int):
    config = SynthConfig(train_count=n, val_count=2, height=1024, width=2048)
    source = parse_data_arg(f"synth:{cache_root() / 'bench-synth-2048x1024'}", config)
    source.prepare()
    return source


class Decoder:
    """Switch the dataset's PNG decoder between OpenCV (now) and PIL (before)."""

    def __init__(self, pil: bool) -> None:
        self.pil, self.saved = pil, datasets_module._CV2_FLAGS

    def __enter__(self) -> None:
        if self.pil:
            datasets_module._CV2_FLAGS = PIL_ONLY

    def __exit__(self, *exc: object) -> None:
        datasets_module._CV2_FLAGS = self.saved


def per_core(source, cache, n: int, lines: list[str]) -> dict[str, float]:
    """Part 1: ms per image on one core, stage by stage."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    dataset = source.dataset("train")
    cached = CachedDataset(dataset, cache)
    out: dict[str, float] = {}

    def clock(name: str, fn) -> float:
        fn(0)  # warm
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        ms = (time.perf_counter() - t0) / n * 1000
        out[name] = ms
        lines.append(f"  {name:<44s} {ms:8.1f} ms/image")
        return ms

    with Decoder(pil=True):
        clock("read (decode + checks), PIL", dataset.read)
    clock("read (decode + checks), OpenCV", dataset.read)
    clock("read from the pre-decoded cache", cached.read)
    recipe = get_recipe("paper")
    pairs = [cached.read(i) for i in range(n)]
    for pipeline in ("resize_first", "crop_first"):
        aug = KeyedAugmentedDataset(dataset, recipe.replace(pipeline=pipeline), seed=0)

        def augment(i: int, aug: KeyedAugmentedDataset = aug) -> object:
            aug.generator.manual_seed(i)  # each image its own scale and crop, as in training
            return aug.transform(*pairs[i])

        clock(f"augment ({pipeline})", augment)
    before = out["read (decode + checks), PIL"] + out["augment (resize_first)"]
    after = out["read (decode + checks), OpenCV"] + out["augment (crop_first)"]
    after_cache = out["read from the pre-decoded cache"] + out["augment (crop_first)"]
    lines.append(
        f"  {'= before (PIL, resize-first)':<44s} {before:8.1f} ms/image  {1000 / before:6.2f} images/s/core"
    )
    lines.append(
        f"  {'= after (OpenCV, crop-first)':<44s} {after:8.1f} ms/image  {1000 / after:6.2f} images/s/core  x{before / after:.2f}"
    )
    lines.append(
        f"  {'= after, pre-decoded cache':<44s} {after_cache:8.1f} ms/image  {1000 / after_cache:6.2f} images/s/core  x{before / after_cache:.2f}"
    )
    return out


def loader_rate(dataset, recipe, workers: int, batches: int, batch: int) -> float:
    """Images/s of the training DataLoader from its creation to its last batch: worker
    start-up included, and no batch prefetched before the clock starts (timing after a
    first batch would credit the workers with the batches they queued meanwhile)."""
    recipe = recipe.replace(batch_size=batch)
    t0 = time.perf_counter()
    loader = make_train_loader(dataset, recipe, seed=0, start=0, stop=batches, workers=workers)
    n = sum(images.shape[0] for images, _ in loader)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--images", type=int, default=16, help="2048x1024 training images")
    p.add_argument("--batches", type=int, default=10, help="batches per loader setting")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--workers", default="0,1,2,4")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    source = source_2k(args.images)
    dataset = source.dataset("train")
    folder, _ = build_cache(source, "train", dataset)
    cache = open_cache(source, "train", dataset, folder)
    assert cache is not None
    lines = [format_environment(environment("cpu")), f"usable CPUs: {usable_cpus()}", ""]
    lines.append(f"built-in data at 2048x1024 ({len(dataset)} training images), paper recipe")
    lines.append("Part 1: one core, per image")
    per_core(source, cache, args.images, lines)
    torch.set_num_threads(usable_cpus())
    cv2.setNumThreads(usable_cpus())
    lines += ["", f"Part 2: the training DataLoader, batch {args.batch}, images/s (median of 3)"]
    recipe = get_recipe("paper")
    setups = {
        "before (PIL, resize-first)": (True, recipe.replace(pipeline="resize_first"), dataset),
        "after (OpenCV, crop-first)": (False, recipe, dataset),
        "after, pre-decoded cache": (False, recipe, CachedDataset(dataset, cache)),
    }
    workers = [int(w) for w in args.workers.split(",")]
    lines.append(f"  {'pipeline':<30s}" + "".join(f"{f'{w} workers':>12s}" for w in workers))
    table: dict[str, dict[int, float]] = {}
    for name, (pil, r, ds) in setups.items():
        table[name] = {}
        with Decoder(pil=pil):
            for w in workers:
                rates = [loader_rate(ds, r, w, args.batches, args.batch) for _ in range(3)]
                table[name][w] = statistics.median(rates)
        lines.append(f"  {name:<30s}" + "".join(f"{table[name][w]:12.2f}" for w in workers))
    if 1 in workers and 2 in workers:
        lines.append("")
        for name in setups:
            lines.append(f"  {name}: 2 workers / 1 worker = x{table[name][2] / table[name][1]:.2f}")
    lines.append(f"\nload after the run: {os.getloadavg()[0]:.2f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
