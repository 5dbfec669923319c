"""``python -m runners.data``: generate the synthetic dataset, or check a dataset.

python -m runners.data synth --out DIR [--train N --val N --height H --width W --seed S --force]
python -m runners.data check synth | cityscapes:PATH | folder:PATH [--split NAME ...]
python -m runners.data cache --data cityscapes:PATH [--split train] [--out DIR]

``check`` reads every file now (ignoring remembered verdicts) and remembers the verdict, so
the next run on the same files does not check them again. The built-in dataset and the
verdicts live in the cache folder: $BISENET_LAB_CACHE, else ~/.cache/bisenet-lab
($XDG_CACHE_HOME); $BISENET_DATA or synth:PATH choose the built-in dataset's folder.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from runners.cli import ArgumentParser, run_cli
from runners.data.labels import CLASS_NAMES
from runners.data.source import parse_data_arg
from runners.data.synth import (
    SynthConfig,
    default_synth_root,
    ensure_synth,
    manifest_matches,
    read_manifest,
)
from searchspace.errors import DataError, UsageError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m runners.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    defaults = SynthConfig()
    gen = sub.add_parser("synth", help="generate the built-in synthetic street scenes")
    gen.add_argument(
        "--out", type=Path, default=None, help=f"folder (default {default_synth_root()})"
    )
    gen.add_argument("--train", type=int, default=defaults.train_count, help="training images")
    gen.add_argument("--val", type=int, default=defaults.val_count, help="validation images")
    gen.add_argument("--height", type=int, default=defaults.height, help="image height in pixels")
    gen.add_argument("--width", type=int, default=defaults.width, help="image width in pixels")
    gen.add_argument("--seed", type=int, default=defaults.seed)
    gen.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    gen.add_argument("--force", action="store_true", help="regenerate even if up to date")
    check = sub.add_parser("check", help="decode and check every image and label of a dataset")
    check.add_argument("source", help="synth, synth:PATH, cityscapes:PATH or folder:PATH")
    check.add_argument("--split", action="append", help="split to check (default: all present)")
    cache = sub.add_parser("cache", help="pre-decode a split for fast training (memory-mapped)")
    cache.add_argument(
        "--data", required=True, help="synth, synth:PATH, cityscapes:PATH, folder:PATH"
    )
    cache.add_argument("--split", default="train", help="split to decode (default train)")
    cache.add_argument("--out", type=Path, default=None, help="folder (default: the cache folder)")
    return parser


def _cache(args) -> int:
    from runners.data.decoded import build_cache

    source = parse_data_arg(args.data)
    source.prepare()
    dataset = source.dataset(args.split)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(dataset), desc=f"decode {args.split}", unit="img", leave=False)
    start = time.perf_counter()
    folder, built = build_cache(
        source,
        args.split,
        dataset,
        args.out,
        on_progress=(lambda i, n: bar.update(1)) if bar is not None else None,
    )
    if bar is not None:
        bar.close()
    state = f"built in {time.perf_counter() - start:.0f} s" if built else "up to date"
    print(
        f"decoded {args.split} split of {source.label} ({len(dataset)} images): {folder} ({state})"
    )
    if args.out is not None:
        print(f"train with: --decoded-cache {folder}")
    return 0


def _check_synth_flags(args) -> None:
    """A split of no images trains or scores nothing (every run needs both), so it is
    refused here, before any file; sizes and seed are checked by ``SynthConfig``."""
    for flag, value in (("--train", args.train), ("--val", args.val)):
        if value < 1:
            raise UsageError(f"{flag} {value}: must be >= 1 (images in the split)")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers {args.workers}: must be >= 0")


def _synth(args) -> int:
    _check_synth_flags(args)
    config = SynthConfig(
        train_count=args.train,
        val_count=args.val,
        height=args.height,
        width=args.width,
        seed=args.seed,
    )
    root = args.out if args.out is not None else default_synth_root()
    cached = not args.force and manifest_matches(read_manifest(root), config)
    start = time.perf_counter()
    ensure_synth(root, config, force=args.force, workers=args.workers, progress=sys.stderr.isatty())
    elapsed = time.perf_counter() - start
    manifest = read_manifest(root)
    if manifest is None:  # pragma: no cover - ensure_synth just wrote it
        raise DataError(f"synthetic dataset has no manifest after generation: {root}")
    counts = manifest["counts"]
    state = (
        "up to date, not regenerated (use --force)" if cached else f"generated in {elapsed:.1f} s"
    )
    print(f"synthetic dataset {config.data_id} at {root}: {state}")
    print(
        f"  images: train {counts['train']}, val {counts['val']} ({config.height}x{config.width})"
    )
    print("  class pixel frequency (train + val):")
    fractions = manifest["class_pixel_fraction"]
    for train_id, name in enumerate(CLASS_NAMES):
        print(f"    {train_id:2d} {name:<14} {100 * fractions.get(name, 0.0):6.2f} %")
    print(f"    {'':2} {'(ignored)':<14} {100 * manifest['ignore_pixel_fraction']:6.2f} %")
    return 0


def _check(args) -> int:
    progress = sys.stderr.isatty()
    source = parse_data_arg(args.source, check=())  # checked below, every file, every time
    if source.kind == "synth":  # generate it if needed (prepare() would check it too)
        ensure_synth(source.path, source.synth_config, progress=progress)
    splits = args.split or source.splits()
    if not splits:
        raise DataError(f"no split folders in {source.path}")
    print(f"{source.label} at {source.path} ({source.num_classes} classes, id {source.data_id})")
    for split in splits:
        n = source.check([split], force=True, progress=progress)[split]
        print(f"  {split}: {n} images OK")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"synth": _synth, "check": _check, "cache": _cache}[args.command](args)


if __name__ == "__main__":
    run_cli(main)
