"""Search benchmark: hypervolume reached per training second, study vs random vs full grid.

    .venv/bin/python benchmarks/search_bench.py [--out results/benchmarks/search_bench_cpu.txt]

1. Trains every point of the discretised ``multipliers`` grid (15 specs) once under a tiny
   recipe on the built-in data, through the result store: that is the full grid's cost.
2. Runs an Optuna study (the default multi-objective sampler, TPE) and random search
   over the same space for as many trials as the grid has points, 20 seeds each (one
   seed's curve is luck: the target is judged on the median seed).
   Their trials reuse the stored runs, and each is charged the training seconds of the
   specs it visits for the first time, so the comparison costs minutes, not hours.
   Every spec's mIoU and latency are those of its stored run, so the three strategies
   are scored on identical numbers.
3. Prints the hypervolume (mIoU up, latency down) against training time spent, and the
   time each strategy needs to reach 90% of the full grid's hypervolume. The reference
   point is the grid's nadir (its worst mIoU and worst latency, each pushed out by 10% of
   its range): with mIoU 0 as the reference, any single fast model already scores ~80%
   of the grid's hypervolume and the 90% target says nothing.
4. Times the same 4 fresh trials with 1 worker and with 2 workers (cores split, one
   torch thread each) to show --workers does not oversubscribe.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.study_plots import nadir  # noqa: E402
from runners.cpus import usable_cpus  # noqa: E402
from runners.env import cpu_model  # noqa: E402
from runners.search.config import SearchConfig  # noqa: E402
from runners.search.results import hypervolume  # noqa: E402
from runners.search.study import open_study  # noqa: E402
from runners.search.workers import run_search  # noqa: E402
from searchspace.atomic import write_text  # noqa: E402
from searchspace.optuna_spaces import get_space  # noqa: E402

TINY = "smoke:budget=150,crop_hw=128+128,batch_size=8,warmup_iters=10,eval_hw=128+256"
LATENCY_HW = (256, 512)


def trial_points(study) -> list[tuple[str, float, float, float]]:
    """(spec_id, miou, latency_ms, train_s) of each complete trial, in trial order."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.COMPLETE:
            a = t.user_attrs
            out.append(
                (
                    a["spec_id"],
                    float(t.values[0]),
                    float(a["latency_ms"]),
                    float(a.get("train_s") or 0),
                )
            )
    return out


def curve(
    points, grid: dict[str, tuple[float, float, float]], ref
) -> list[tuple[int, float, float]]:
    """(trials, training seconds charged, hypervolume) after each trial."""
    seen: dict[str, tuple[float, float]] = {}
    spent = 0.0
    out = []
    for i, (sid, _miou, _lat, _t) in enumerate(points, 1):
        miou, lat, train_s = grid[sid]
        if sid not in seen:
            spent += train_s
            seen[sid] = (miou, lat)
        out.append((i, spent, hypervolume(list(seen.values()), ref)))
    return out


def time_to(curve_, target: float) -> float | None:
    for _, spent, hv in curve_:
        if hv >= target:
            return spent
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="also write the report here")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "runs" / "search_bench")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--skip-workers", action="store_true")
    args = ap.parse_args()
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    space = get_space("multipliers")
    n = space.size
    say("# search benchmark (benchmarks/search_bench.py)")
    say(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    say(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}")
    say(f"space: multipliers ({n} grid points), recipe: {TINY}, data: built-in synthetic")
    say(f"latency: CPU, input {LATENCY_HW[0]}x{LATENCY_HW[1]}, batch 1")
    from searchspace.recipes import parse_recipe

    tag = parse_recipe(TINY).recipe_id  # study names per recipe: never resume a stale one
    base = SearchConfig(
        space="multipliers", study=f"grid-{tag}", trials=n, sampler="grid", recipe=TINY,
        results_dir=str(args.results_dir), latency_hw=LATENCY_HW, latency_repeats=5,
    )  # fmt: skip
    t0 = time.perf_counter()
    grid_study = run_search(base)
    say(f"\nfull grid trained in {time.perf_counter() - t0:.0f} s wall (cached runs reused)")
    grid = {sid: (m, lat, ts) for sid, m, lat, ts in trial_points(grid_study)}
    mious, lats = [v[0] for v in grid.values()], [v[1] for v in grid.values()]
    ref = (nadir(mious, maximize=True), nadir(lats, maximize=False))
    grid_hv = hypervolume([(m, lat) for m, lat, _ in grid.values()], ref)
    grid_s = sum(v[2] for v in grid.values())
    say(f"grid: {len(grid)} specs, {grid_s:.0f} s of training, hypervolume {grid_hv:.4f} "
        f"(reference: mIoU {100 * ref[0]:.2f} %, latency {ref[1]:.1f} ms)")  # fmt: skip
    say("\nspec                  mIoU %   latency ms   train s")
    for params in space.grid():
        spec = space.to_spec(params)
        m, lat, ts = grid[spec.spec_id]
        say(f"{spec.to_string():20s} {100 * m:7.2f} {lat:12.1f} {ts:9.1f}")

    target = 0.9 * grid_hv
    summary: dict[str, list[tuple[float | None, float]]] = {"study (TPE)": [], "random": []}
    for label, sampler in (("study (TPE)", None), ("random", "random")):
        for seed in range(args.seeds):
            name = f"{'tpe' if sampler is None else 'random'}-s{seed}-{tag}"
            # random gets other seeds: TPE starts with random trials from the same seed
            seed_ = seed if sampler is None else 1000 + seed
            cfg = replace(base, study=name, sampler=sampler, seed=seed_, trials=n)
            study = run_search(cfg)
            c = curve(trial_points(study), grid, ref)
            summary[label].append((time_to(c, target), c[-1][2] / grid_hv))
            if seed == 0:
                say(f"\n{label}, seed 0: trials, training s charged, hypervolume % of grid")
                for i, spent, hv in c:
                    say(f"  {i:3d} {spent:8.0f} {100 * hv / grid_hv:7.1f}")
    say(
        f"\nto reach 90% of the grid's hypervolume ({args.seeds} seeds each; grid: {grid_s:.0f} s):"
    )
    for label, runs in summary.items():
        times = [t for t, _ in runs]
        reached = [t for t in times if t is not None]
        med = statistics.median(reached) if reached else float("nan")
        say(f"  {label:12s} reached in {len(reached)}/{len(runs)} seeds; median of those "
            f"{med:.0f} s = {100 * med / grid_s:.0f}% of the grid's time; final HV "
            f"{100 * statistics.mean(h for _, h in runs):.1f}% of the grid's")  # fmt: skip
    # a seed that never reaches 90% counts as infinitely slow in the median
    tpe = [t if t is not None else float("inf") for t, _ in summary["study (TPE)"]]
    within = sum(t <= 0.5 * grid_s for t in tpe)
    med = statistics.median(tpe)
    med_text = f"{100 * med / grid_s:.0f}% of the grid's time" if med < float("inf") else "never"
    say(f"target (the study reaches 90% of the grid's hypervolume within 50% of the grid's "
        f"training time): median seed {med_text}: "
        f"{'met' if med <= 0.5 * grid_s else 'NOT met'}; met by {within}/{len(tpe)} seeds")  # fmt: skip

    if not args.skip_workers:
        say("\n--workers: the same 4 fresh trials (enqueued points), 1 worker vs 2 workers")
        points = [
            {"width_mult": a, "depth_mult": d}
            for a, d in ((0.5, 1.0), (0.75, 0.5), (0.5, 2.0), (0.75, 1.0))
        ]
        for workers in (1, 2):
            tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
            cfg = replace(base, study="workers", trials=len(points), sampler="random",
                          results_dir=str(tmp), workers=workers)  # fmt: skip
            study = open_study(cfg)
            for p in points:
                study.enqueue_trial(p)
            t0 = time.perf_counter()
            run_search(cfg)
            wall = time.perf_counter() - t0
            threads = max(1, usable_cpus() // workers)  # what run_search gives each worker
            say(f"  {workers} worker(s) x {threads} thread(s): {wall:.0f} s wall")
            shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
