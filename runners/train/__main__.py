"""``python -m runners.train``: train one spec under one recipe, then score it on val.

    python -m runners.train --spec bisenetv2 --recipe smoke --data synth --seed 0 --out runs/a
    torchrun --nproc_per_node 2 -m runners.train ... (DDP; the recipe's batch is global)

Exit status: 0 ok, 1 the run failed (e.g. a non-finite loss; the reason is printed),
2 a user mistake (bad flag, spec, recipe, data or checkpoint), reported in one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from runners.cli import (
    ArgumentParser,
    add_workers_argument,
    check_output_dir,
    resolve_workers,
    run_cli,
)
from runners.data.source import parse_data_arg
from runners.pretrained import add_pretrained_arguments, resolve_pretrained
from searchspace.cli import work_begins
from searchspace.presets import backbone_of, parse_spec
from searchspace.recipes import Recipe, parse_recipe


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m runners.train", description=__doc__.split("\n")[0])
    p.add_argument("--spec", default="bisenetv2", help="preset, 'v2:k=v,...' or a .json file")
    p.add_argument("--recipe", default="smoke", help="smoke, paper, or NAME:field=value,...")
    p.add_argument(
        "--data", default="synth", help="synth, synth:PATH, cityscapes:PATH, folder:PATH"
    )
    p.add_argument("--seed", type=int, default=0)
    add_pretrained_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, results)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-iterations", type=int, metavar="N")
    budget.add_argument("--budget-seconds", type=int, metavar="S")
    budget.add_argument("--budget-images", type=int, metavar="N")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue a compatible checkpoint in --out (default: yes)",
    )
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="N", help="0: at the end")
    p.add_argument(
        "--decoded-cache",
        type=Path,
        default=None,
        help="a pre-decoded train split (python -m runners.data cache; its default place is"
        " used without this)",
    )
    add_workers_argument(p)
    p.add_argument(
        "--eval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score the trained model on val at recipe.eval_hw (default: yes)",
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p


def recipe_with_budget(recipe: Recipe, args: argparse.Namespace) -> Recipe:
    """A budget flag replaces the recipe's budget, so the run's recipe id says what ran."""
    for kind in ("iterations", "seconds", "images"):
        value = getattr(args, f"budget_{kind}")
        if value is not None:
            return recipe.replace(budget_kind=kind, budget=value)
    return recipe


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.workers = resolve_workers(args.workers, args.device)
    spec = parse_spec(args.spec)
    recipe = recipe_with_budget(parse_recipe(args.recipe), args)
    pretraining = resolve_pretrained(args.pretrained, [backbone_of(spec)], args.backbone_lr_mult)
    recipe, weights = pretraining.apply(spec, recipe)
    source = parse_data_arg(args.data)
    check_output_dir(args.out, "--out", create=False)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    is_main = int(os.environ.get("RANK", "0")) == 0

    # imported here so that --help and flag errors answer without loading torch
    from runners.device import resolve_device
    from runners.train.loop import train
    from searchspace.outputs import write_output_json

    # every flag checked before the run folder is made (a later refusal, say an
    # incompatible checkpoint, removes the folder again if this command made it)
    resolve_device(args.device, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    check_output_dir(args.out, "--out")

    result = train(
        spec,
        recipe,
        source,
        args.seed,
        args.out,
        device=args.device,
        progress=progress,
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        workers=args.workers,
        decoded_cache=args.decoded_cache,
        on_step=lambda _iteration: work_begins(),  # the notes held until now show
        pretrained=weights,
    )
    if not is_main:
        return 0 if result.status == "ok" else 1
    if result.status != "ok":
        sys.stderr.write(f"training failed: {result.reason}\n")
        return 1
    print(
        f"{spec.to_string()} [{spec.spec_id}] recipe {recipe.name} [{recipe.recipe_id}] "
        f"seed {args.seed} on {source.label}"
    )
    print(
        f"trained {result.iterations} iterations, {result.images} images in "
        f"{result.seconds:.1f} s ({result.images_per_s:.1f} images/s, world size "
        f"{result.world_size}); final loss {result.final_loss:.4f}"
    )
    print(f"checkpoint: {result.checkpoint}")
    if args.eval:
        from runners.evaluate.checkpoint import evaluate_checkpoint

        ev = evaluate_checkpoint(
            Path(result.checkpoint or ""), source, device=args.device, workers=args.workers
        )
        write_output_json(args.out / "eval_result.json", ev.to_dict())
        hw = f"{ev.input_hw[0]}x{ev.input_hw[1]}" if ev.input_hw else "native size"
        print(f"val: {ev.summary().splitlines()[0]}, network input {hw}")
    return 0


if __name__ == "__main__":
    run_cli(main)
