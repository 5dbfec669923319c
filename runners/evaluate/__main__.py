"""``python -m runners.evaluate``: mIoU of a checkpoint, of a folder of predictions, or of a
baseline.

    python -m runners.evaluate --checkpoint runs/a [--data synth] [--input-hw 512x1024]
        [--scales 0.75,1,1.25] [--flip] [--save-predictions DIR]
    python -m runners.evaluate --pred-dir DIR --gt-dir cityscapes/gtFine/val
    python -m runners.evaluate --baseline majority [--data synth]

``--save-predictions`` writes Cityscapes labelId PNGs named like the images, so the same
folder can be scored here with ``--pred-dir`` and by the official cityscapesscripts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from runners.cli import ArgumentParser, check_output_dir, check_output_path, run_cli


def hw_type(text: str) -> tuple[int, int]:
    """``512x1024`` -> (512, 1024): height first, as everywhere in the toolkit."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW, e.g. 512x1024") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"{text!r}: both sizes must be >= 32")
    return h, w


def scales_type(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected scales like 0.75,1,1.25") from None
    if not scales or min(scales) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: scales must be > 0")
    return scales


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 1")
    return value


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m runners.evaluate", description=__doc__.split("\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, help="checkpoint file or run folder")
    what.add_argument("--pred-dir", type=Path, help="folder of labelId prediction PNGs")
    what.add_argument("--baseline", choices=("majority",), help="score a trivial predictor")
    p.add_argument("--gt-dir", type=Path, help="gtFine/<split> folder (with --pred-dir)")
    p.add_argument(
        "--data", default="synth", help="synth, synth:PATH, cityscapes:PATH, folder:PATH"
    )
    p.add_argument("--split", default="val")
    p.add_argument("--input-hw", type=hw_type, help="network input HxW (default: recipe.eval_hw)")
    p.add_argument(
        "--scales", type=scales_type, default=(1.0,), help="multi-scale, e.g. 0.75,1,1.25"
    )
    p.add_argument("--flip", action="store_true", help="also average the mirrored prediction")
    p.add_argument("--max-images", type=positive_int)
    p.add_argument("--save-predictions", type=Path, metavar="DIR")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the full result here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pred_dir is not None and args.gt_dir is None:
        parser.error("--pred-dir needs --gt-dir")
    if args.gt_dir is not None and args.pred_dir is None:
        parser.error("--gt-dir goes with --pred-dir")

    if args.json is not None:
        check_output_path(args.json, "--json")
    if args.save_predictions is not None:
        check_output_dir(args.save_predictions, "--save-predictions")

    from runners.data.source import parse_data_arg
    from searchspace.outputs import write_output_json

    if args.pred_dir is not None:
        from runners.evaluate.folder import score_folder

        result = score_folder(args.pred_dir, args.gt_dir)
        what = f"predictions in {args.pred_dir} vs {args.gt_dir}"
    elif args.baseline is not None:
        from runners.evaluate.baseline import majority_class_baseline

        source = parse_data_arg(args.data, check=("train", args.split))
        result = majority_class_baseline(source, args.split, max_images=args.max_images)
        what = f"majority-class baseline on {source.label}, split {args.split}"
    else:
        from runners.evaluate.checkpoint import evaluate_checkpoint

        source = parse_data_arg(args.data, check=(args.split,))
        result = evaluate_checkpoint(
            args.checkpoint,
            source,
            args.split,
            input_hw=args.input_hw,
            device=args.device,
            scales=args.scales,
            flip=args.flip,
            max_images=args.max_images,
            save_predictions=args.save_predictions,
            workers=args.workers,
            progress=sys.stderr.isatty(),
        )
        hw = f"{result.input_hw[0]}x{result.input_hw[1]}" if result.input_hw else "native size"
        what = (
            f"{args.checkpoint} on {source.label}, split {args.split}, network input {hw}, "
            f"scales {','.join(f'{s:g}' for s in result.scales)}{', flip' if result.flip else ''}"
        )
    print(what)
    print(result.summary())
    if args.json is not None:
        write_output_json(args.json, result.to_dict(), f"--json {args.json}")
    if args.save_predictions is not None:
        print(f"predictions: {args.save_predictions}")
    return 0


if __name__ == "__main__":
    run_cli(main)
