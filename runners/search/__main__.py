"""``python -m runners.search``: an Optuna study over a search space, from 1 process to many
machines.

Each trial samples a spec, checks the hard constraints before any training (MACs on the
meta device, then latency), and trains through the result store, so a spec already
trained with the same recipe, data and seed is reused. The study lives in SQLite in the
results folder by default, on a database server (``--storage postgresql://...``) or in a
journal file on a shared filesystem (``--storage journal:PATH``), shared by workers on
many machines. The package: ``config`` (what to do), ``study``
(storage, sampler, counts), ``objective`` (one trial), ``costs`` (constraints),
``workers`` (the process pool), ``stale`` (dead workers without heartbeats), ``results``
(front, export, reference points).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runners.cli import (
    ArgumentParser,
    add_max_attempts_argument,
    add_slurm_arguments,
    check_output_dir,
    run_cli,
)
from runners.pretrained import add_pretrained_arguments
from runners.search.config import DEFAULT_RESULTS, OBJECTIVES, SearchConfig
from runners.search.results import export_best, pareto_specs, reference_points, trials_frame
from runners.search.study import finished_trials, rejected_trials
from runners.search.workers import run_search
from searchspace.cli import work_begins
from searchspace.errors import SpecError, UsageError, one_line
from searchspace.optuna_spaces import SPACES, get_space

# --- command line ----------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="runners.search", description="Optuna search over BiSeNet design knobs")
    p.add_argument("--space", default="multipliers", help="search space: " + ", ".join(SPACES))
    p.add_argument("--study", required=True, help="study name (resumed if it exists)")
    p.add_argument("--trials", type=int, default=20, help="finished trials the study should reach")
    p.add_argument(
        "--objectives", default="miou,latency_ms", help="comma list of " + ", ".join(OBJECTIVES)
    )
    p.add_argument("--sampler", default=None, help="tpe (default), nsga2, random, grid")
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.add_argument("--max-gmacs", type=float, default=None)
    p.add_argument("--max-latency-ms", type=float, default=None)
    p.add_argument("--pruner", default="none", help="none, median, hyperband (single objective)")
    p.add_argument(
        "--storage", default=None,
        help="where the study lives (default: SQLite in --results-dir, one machine): "
        "postgresql://USER@HOST/DB (a database server, workers on many machines), or "
        "journal:PATH (a bare PATH ending in .journal too): an Optuna journal file on a "
        "shared filesystem, for many machines without a database server",
    )  # fmt: skip
    p.add_argument(
        "--workers", type=int, default=1,
        help="worker processes (here, or SLURM array tasks with --launcher slurm)",
    )  # fmt: skip
    p.add_argument(
        "--launcher", default=None, choices=("local", "slurm"),
        help="local (default): the workers run here and the command waits; slurm: the "
        "workers are submitted as a job array on the study's storage and the command returns",
    )  # fmt: skip
    p.add_argument("--recipe", default="smoke")
    add_pretrained_arguments(p)
    p.add_argument("--data", default="synth")
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--latency-hw", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    p.add_argument("--latency-repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--export-best", type=Path, default=None, help="write the front's specs here")
    p.add_argument("--plots", type=Path, default=None, help="write study plots here")
    p.add_argument(
        "--enqueue", type=Path, default=None, metavar="FILE",
        help="JSON file of points to try first: one {knob: value} object or a list of them "
        "(knobs that do not apply to a point are left out)",
    )  # fmt: skip
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    add_max_attempts_argument(p)
    p.add_argument(
        "--grace-s", type=int, default=60,
        help="seconds without a heartbeat (its storage's, or its trial lock's with a journal) "
        "before a worker counts as dead and its trial is retried (default 60)",
    )  # fmt: skip
    add_slurm_arguments(p)
    return p


def read_points(path: Path, space_name: str) -> list[dict[str, Any]]:
    """The points of a ``--enqueue`` file, each checked against the space before any
    study is touched (a knob the space lacks, or one given where it does not apply, is
    one line naming it)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"--enqueue {path}: cannot be read ({one_line(exc)})") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--enqueue {path}: malformed JSON ({exc.msg})") from None
    items = data if isinstance(data, list) else [data]
    space = get_space(space_name)
    points = []
    for i, item in enumerate(items):
        try:
            points.append(space.check_params(item))
        except SpecError as exc:
            where = f" point {i}" if isinstance(data, list) else ""
            raise UsageError(f"--enqueue {path}{where}: {exc}") from None
    return points


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.latency_hw) < 32:
        raise UsageError(
            f"--latency-hw {args.latency_hw[0]} {args.latency_hw[1]}: sizes must be >= 32"
        )
    from runners.launch.slurm import options_from_args
    from runners.search.config import check_storage_for_launcher

    slurm = options_from_args(args, max_running=None)
    check_storage_for_launcher(args.storage, args.launcher)
    cfg = SearchConfig(
        space=args.space, study=args.study, trials=args.trials,
        objectives=tuple(o.strip() for o in args.objectives.split(",") if o.strip()),
        sampler=args.sampler, seed=args.seed, max_gmacs=args.max_gmacs,
        max_latency_ms=args.max_latency_ms, storage=args.storage, workers=args.workers,
        recipe=args.recipe, data=args.data, results_dir=args.results_dir,
        device="cpu" if slurm else args.device,  # a SLURM worker's device: --gpus-per-run
        pruner=args.pruner, latency_hw=tuple(args.latency_hw),
        latency_repeats=args.latency_repeats, threads=args.threads, progress=args.progress,
        grace_s=args.grace_s,
        max_attempts=args.max_attempts,
        pretrained=tuple(args.pretrained or ()), backbone_lr_mult=args.backbone_lr_mult,
    )  # fmt: skip
    # validate recipe and data names before the study is created
    from runners.data.source import parse_data_arg
    from searchspace.recipes import parse_recipe

    cfg.check()
    parse_recipe(cfg.recipe)
    parse_data_arg(cfg.data)
    if cfg.pretrained or cfg.backbone_lr_mult is not None:
        from runners.search.setup import pretraining_of

        pretraining_of(cfg)  # each file read and matched to the space's backbones now
    points = read_points(args.enqueue, cfg.space) if args.enqueue else []
    outputs = [
        (option, folder)
        for option, folder in (
            ("--results-dir", Path(cfg.results_dir)),
            ("--export-best", args.export_best),
            ("--plots", args.plots),
        )
        if folder is not None
    ]
    for create in (False, True):  # all checked before any is made
        for option, folder in outputs:
            check_output_dir(folder, option, create=create)
    if slurm is not None:
        from runners.search.launch import submit_workers

        return submit_workers(cfg, slurm, enqueue=points)
    work_begins()  # every check is done: the notes held until now show, later ones at once
    t0 = time.perf_counter()
    study = run_search(cfg, enqueue=points)
    frame = trials_frame(study)
    print(
        f"study {cfg.study}: {finished_trials(study)} finished trials, "
        f"{rejected_trials(study)} proposals rejected by the constraints before training "
        f"({time.perf_counter() - t0:.0f} s now)"
    )
    print(frame.groupby("state").size().to_string())
    print("best trials:")
    for spec, values in pareto_specs(study):
        vals = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        print(f"  {spec.to_string():40s} {vals}")
    if args.export_best:
        for path in export_best(study, args.export_best):
            print(f"wrote {path}")
    if args.plots:
        from analysis.study_plots import plot_study

        paths = plot_study(study, frame, args.plots, reference_points(cfg))
        for path in paths:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
