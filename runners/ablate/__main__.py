"""``python -m runners.ablate --table 3a``: re-run a paper table on your data and hardware.

For each row and seed: profile (params, GMACs, latency), train under the recipe's fixed
budget, evaluate, store one record. Re-running resumes; two processes on one results
folder split the work. At the end the table is printed beside the paper's numbers.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# Only torch-free modules at the top: ``--status`` and ``--cancel`` must answer without
# loading torch (the training path imports what it needs inside ``main``).
from runners.ablate.plan import keep_table_files, plan_runs, resolve_tables, select_rows
from runners.cli import (
    ArgumentParser,
    add_max_attempts_argument,
    add_slurm_arguments,
    add_workers_argument,
    resolve_workers,
    run_cli,
)
from runners.data.source import RUN_SPLITS, parse_data_arg
from runners.pretrained import add_pretrained_arguments, resolve_pretrained
from runners.runs import ProfileSettings
from runners.store.run_once import check_max_attempts
from searchspace.cli import work_begins
from searchspace.errors import UsageError
from searchspace.presets import backbone_of
from searchspace.recipes import parse_recipe
from searchspace.tables import PRESET_TABLE, get_table, table_names

LAUNCHERS = ("local", "slurm")
DEFAULT_RESULTS = Path("runs") / "results"
ALIASES = {"pair": "6", "v2": "6"}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="runners.ablate", description=__doc__.splitlines()[0])
    p.add_argument(
        "--table",
        help="paper table id or a .toml table file (README, 'Table files'), or several joined "
        "by commas (rows they share run once): " + ", ".join(_all_tables()),
    )
    p.add_argument(
        "--list", action="store_true", help="list tables (or those of --table) and rows, then exit"
    )
    p.add_argument("--rows", help="comma-separated row names of the table (default: all)")
    p.add_argument("--recipe", default="smoke", help="smoke (default), paper, or NAME:k=v,...")
    p.add_argument("--seeds", type=int, default=1, help="seeds per row (0..K-1)")
    add_pretrained_arguments(p)
    p.add_argument("--data", default="synth", help="synth (built-in), cityscapes:PATH, folder:PATH")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--force", action="store_true", help="re-run rows that already have records")
    p.add_argument("--dry-run", action="store_true", help="profile only: no training, no records")
    p.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    p.add_argument(
        "--remeasure-latency", action="store_true",
        help="re-time the stored runs of the table on this machine (no training)",
    )  # fmt: skip
    p.add_argument("--latency-repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for latency")
    add_workers_argument(p)
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (one line per run is still printed)",
    )
    p.add_argument(
        "--wait", type=float, default=3600.0,
        help="seconds to wait for rows another process is running (default 3600)",
    )  # fmt: skip
    add_max_attempts_argument(p)
    p.add_argument(
        "--launcher", default=None,
        help="start the runs and return: local (N processes here) or slurm (job arrays)",
    )  # fmt: skip
    p.add_argument(
        "--max-running", type=int, default=None,
        help="runs at once under --launcher (local default: one per GPU, else one; "
        "slurm default: no limit of ours)",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint-minutes", type=float, default=10.0, metavar="M",
        help="checkpoint at least every M minutes besides every 100 iterations (0: off): "
        "what a kill can lose",
    )  # fmt: skip
    p.add_argument(
        "--status", action="store_true",
        help="where each run of the tables stands (stored, running, failed, queued, missing)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="with --status: print JSON")
    p.add_argument(
        "--cancel", action="store_true",
        help="stop what a launcher started for these tables; stored records stay",
    )  # fmt: skip
    p.add_argument(
        "--settle", default=None, metavar="CLAIM[,CLAIM...]",
        help="add seeds to these claims' rows in rounds until the sequential rule settles "
        "them or a cap is reached (claims of the --table given)",
    )  # fmt: skip
    p.add_argument(
        "--max-seeds", type=int, default=None,
        help="with --settle: seeds per row in total, at most (default 30)",
    )  # fmt: skip
    p.add_argument(
        "--max-hours", type=float, default=None,
        help="with --settle: no round starts whose hours, estimated from the rows' stored "
        "train times, would take the training spent past H",
    )  # fmt: skip
    add_slurm_arguments(p)
    return p


def _all_tables() -> list[str]:
    """The paper tables, and the table of every named preset (listed last)."""
    return [*table_names("all"), PRESET_TABLE]


def _table_id(text: str) -> str:
    return ALIASES.get(text, text)


def print_list(out=sys.stdout, names: Sequence[str] | None = None) -> None:
    for name in names or _all_tables():
        table = get_table(name)
        out.write(f"table {name}: {table.title}\n")
        for row in table.rows:
            what = (
                row.spec.to_string() if row.spec is not None else f"unsupported: {row.unsupported}"
            )
            extra = f" + recipe {dict(row.recipe_changes)}" if row.recipe_changes else ""
            out.write(f"  {row.row:22s} {what}{extra}\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    tables = resolve_tables([_table_id(t.strip()) for t in (args.table or "").split(",")])
    table_ids = [t.table for t in tables]  # a table file's own id
    if args.list:
        print_list(names=table_ids)
        return 0
    rows = [r.strip() for r in args.rows.split(",")] if args.rows else None
    if rows and len(tables) > 1:
        raise UsageError(f"--rows needs a single --table, not {args.table!r}")
    recipe = parse_recipe(args.recipe)
    quick = args.status or args.cancel  # read the folder only: no data checks, no torch
    data = parse_data_arg(args.data, check=() if quick else RUN_SPLITS)
    chosen = [r for t in tables for r in select_rows(t, rows if len(tables) == 1 else None)]
    pretraining = resolve_pretrained(
        args.pretrained, (backbone_of(r.spec) for r in chosen if r.spec), args.backbone_lr_mult
    )
    runs, unsupported = plan_runs(tables, rows, recipe, data, args.seeds, pretraining)
    args.init = "pretrained" if pretraining.files else "scratch"
    if args.status:
        return _print_status(runs, args)
    if args.cancel:
        return _cancel(runs, args.results_dir)
    if args.slurm is not None:  # devices and CPUs are the nodes': resolved in each task
        args.device = "cuda" if args.slurm.gpus_per_run else "cpu"
        if args.workers is not None and args.workers < 0:
            raise UsageError(f"--workers {args.workers}: must be >= 0")
    else:
        from runners.device import resolve_device

        resolve_device(args.device)
        args.workers = resolve_workers(args.workers, args.device)
    settings = ProfileSettings(
        latency=not args.no_latency, repeats=args.latency_repeats, threads=args.threads
    )
    for row in unsupported:
        print(f"skipping {row.key}: {row.unsupported}")
    if args.settle:
        return _settle(args, tables, table_ids, recipe, data, settings, pretraining,
                       sys.argv if argv is None else list(argv))  # fmt: skip
    # a user's table file is kept beside the records, so the report can rebuild it
    kept = {} if args.dry_run else keep_table_files(tables, args.results_dir)
    if args.launcher:
        from runners.ablate.launch import launch

        args.table_ids = [str(kept[t].resolve()) if t in kept else t for t in table_ids]
        return launch(runs, data, args, settings, sys.argv if argv is None else list(argv))
    if args.dry_run:
        from runners.ablate.run import dry_run_rows

        return _print_dry_run(dry_run_rows(runs, args.device, settings), ",".join(table_ids))
    from runners.ablate.run import remeasure_latency, run_ablation
    from runners.store import Store

    store = Store(args.results_dir)
    for problem in store.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.remeasure_latency:
        n = remeasure_latency(runs, store, args.device, settings)
        print(f"re-timed {n} stored runs")
        return 0
    for table_id, table in zip(table_ids, tables):
        print(f"table {table_id}: {table.title}")
    print(f"data: {data.label}; recipe: {recipe.name}; seeds: {args.seeds}; results: {store.root}")
    work_begins()  # every check is done: the notes held until now show, later ones at once
    outcome = run_ablation(
        runs, data, store, device=args.device, settings=settings,
        force=args.force, progress=not args.no_progress, wait_for_others_s=args.wait,
        workers=args.workers, on_progress=lambda m: print(m, flush=True),
        max_attempts=args.max_attempts,
    )  # fmt: skip
    print_tables(store.root, table_ids, tables, recipe, data.data_id, args.init)
    gave_up = (
        f" ({len(outcome.exhausted)} of them left failed after --max-attempts)"
        if outcome.exhausted
        else ""
    )
    corrupt = (
        f", {len(outcome.corrupt)} with a corrupt record (not run; --force moves it aside)"
        if outcome.corrupt
        else ""
    )
    print(
        f"\n{len(outcome.ran)} runs done now, {len(outcome.reused)} reused{corrupt}, "
        f"{len(outcome.busy)} still running elsewhere, {len(outcome.failed)} failed{gave_up}; "
        f"{outcome.seconds:.0f} s"
    )
    return 0


def check_args(args) -> None:
    """Every flag checked before anything is planned, started or stored."""
    if args.list:
        return
    if args.settle and not args.table:
        args.table = _tables_of_claims(args.settle)
    if not args.table:
        raise UsageError("--table is required (or --list to see the tables)")
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: must be >= 1")
    if args.latency_repeats < 1:
        raise UsageError(f"--latency-repeats {args.latency_repeats}: must be >= 1")
    check_max_attempts(args.max_attempts)
    if args.max_running is not None and args.max_running < 1:
        raise UsageError(f"--max-running {args.max_running}: must be >= 1")
    if args.launcher is not None and args.launcher not in LAUNCHERS:
        raise UsageError(f"--launcher {args.launcher!r}: unknown (known: {', '.join(LAUNCHERS)})")
    if args.max_running is not None and not args.launcher:
        raise UsageError("--max-running needs --launcher (e.g. --launcher local)")
    if (args.max_seeds is not None or args.max_hours is not None) and not args.settle:
        raise UsageError("--max-seeds and --max-hours go with --settle")
    if args.max_seeds is not None and args.max_seeds < 2:
        raise UsageError(f"--max-seeds {args.max_seeds}: must be >= 2")
    if args.max_hours is not None and not args.max_hours > 0:
        raise UsageError(f"--max-hours {args.max_hours}: must be a positive number of hours")
    if args.settle and (args.status or args.cancel or args.remeasure_latency):
        raise UsageError("--settle runs seeds: drop --status, --cancel and --remeasure-latency")
    if args.checkpoint_minutes < 0:
        raise UsageError(f"--checkpoint-minutes {args.checkpoint_minutes}: must be >= 0 (0: off)")
    from runners.launch.slurm import options_from_args

    args.slurm = options_from_args(args, args.max_running)
    if args.status and args.cancel:
        raise UsageError("--status and --cancel: give one of them")
    if args.json and not args.status:
        raise UsageError("--json goes with --status")
    if args.remeasure_latency and args.no_latency:
        raise UsageError("--remeasure-latency and --no-latency contradict each other")
    if args.launcher and args.remeasure_latency:
        raise UsageError(
            "--launcher with --remeasure-latency: latency is re-timed in one process, in turns;"
            " run --remeasure-latency without a launcher"
        )
    if (args.status or args.cancel) and (args.launcher or args.dry_run or args.remeasure_latency):
        raise UsageError("--status and --cancel only read the folder: drop the other actions")


def print_tables(
    results_dir: Path, table_ids, tables, recipe, data_id: str, init: str = "scratch"
) -> None:
    """Each table from the stored records, beside the paper's numbers, with its notes, then
    what its claims say (and what would settle the open ones)."""
    from analysis.records import load_records
    from analysis.settle import claim_lines
    from analysis.tables import build_table, table_notes, to_markdown

    records = load_records(results_dir)
    for table_id, table in zip(table_ids, tables):
        frame = build_table(table_id, records, recipe, data_id, init)
        print(f"\ntable {table_id}: {table.title}\n")
        print(to_markdown(frame))
        for note in table_notes(frame):
            print(f"note: {note}")
    for line in claim_lines(records, table_ids, recipe, data_id, init=init):
        print(line)


def _tables_of_claims(text: str) -> str:
    """``--settle`` without ``--table``: the catalogue's tables of the named claims."""
    from analysis.catalogue import CLAIMS

    table_of = {c.id: c.table for c in CLAIMS}
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in table_of]
    if unknown:
        raise UsageError(
            f"--settle {','.join(unknown)}: no such claim in the catalogue (give the --table "
            "that states it, or see a table's claims with python -m analysis.report)"
        )
    return ",".join(dict.fromkeys(table_of[n] for n in names))


def _settle(args, tables, table_ids, recipe, data, settings, pretraining, argv: list[str]) -> int:
    """``--settle``: rounds of seeds for the named claims (``runners.ablate.settle``), judged
    here from the records by the sequential rule (``analysis``, which only the command line
    imports). With ``--pretrained`` the rows with a file are judged and grown on their
    pretrained runs, the others on their scratch runs, as the printed tables show them."""
    from analysis.catalogue import all_claims
    from analysis.claims import evaluate_claims
    from analysis.records import load_records
    from analysis.settle import claim_rows, settle_costs
    from runners.ablate.settle import DEFAULT_MAX_SEEDS, ClaimState, check_claims, settle
    from runners.store import Store
    from runners.store.run_once import decide

    claims = [c for c in all_claims() if c.table in set(table_ids)]
    ids = list(dict.fromkeys(c.strip() for c in args.settle.split(",") if c.strip()))
    check_claims(ids, {c.id: c.table for c in claims}, ",".join(table_ids))
    chosen = [c for c in claims if c.id in ids]
    store = Store(args.results_dir)
    max_seeds = args.max_seeds or DEFAULT_MAX_SEEDS

    def judge() -> dict[str, ClaimState]:
        records = load_records(store.root)
        verdicts = evaluate_claims(records, recipe, data.data_id, chosen, args.init)
        costs = {
            c.claim_id: c
            for c in settle_costs(verdicts, records, recipe, data.data_id, init=args.init)
        }
        cache: dict = {}
        out = {}
        for v in verdicts:
            rows = claim_rows(v.claim, records, recipe, data.data_id, cache, args.init)
            cost = costs.get(v.claim.id)
            hours = {r.row: (r.gpu_s if args.device == "cuda" else r.cpu_s) for r in rows}
            out[v.claim.id] = ClaimState(
                v.claim.id, v.claim.table, tuple(v.claim.rows), v.sequential_outcome or v.outcome,
                {r.row: r.seeds for r in rows},
                None if cost is None or cost.pairing else cost.seeds_per_row,
                {k: (h / 3600 if h is not None else None) for k, h in hours.items()},
                v.sequential_detail.split("; ")[0],
            )  # fmt: skip
        return out

    def stored(run) -> bool:
        return decide(store.record(run.key), args.max_attempts) != "run"

    def run_round(runs) -> float:
        if args.launcher:
            from runners.ablate.launch import launch

            args.table_ids = table_ids
            launch(runs, data, args, settings, argv)
            if args.launcher == "local":
                _wait_for(runs, args)
            return 0.0
        from runners.ablate.run import run_ablation

        outcome = run_ablation(
            runs, data, store, device=args.device, settings=settings,
            progress=not args.no_progress, workers=args.workers,
            on_progress=lambda m: print(m, flush=True), max_attempts=args.max_attempts,
        )  # fmt: skip
        return outcome.seconds

    by_id = dict(zip(table_ids, tables))
    work_begins()
    settle(ids, by_id, recipe, data, judge, run_round, stored, max_seeds=max_seeds,
           max_hours=args.max_hours, dry_run=args.dry_run,
           one_round=args.launcher == "slurm", pretraining=pretraining)  # fmt: skip
    return 0


def _wait_for(runs, args) -> None:
    """Until a local launch's runs are neither queued nor running."""
    import time

    from runners.launch.status import collect_status
    from runners.store.store import STALE_AFTER_S

    while True:
        counts = collect_status(runs, args.results_dir, args.max_attempts, STALE_AFTER_S).counts
        if not counts["queued"] and not counts["running"]:
            return
        time.sleep(5)


def _print_status(runs, args) -> int:
    from runners.launch.status import collect_status, format_status
    from runners.store.store import STALE_AFTER_S

    report = collect_status(runs, args.results_dir, args.max_attempts, STALE_AFTER_S)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_status(report))
    return 0


def _cancel(runs, results_dir: Path) -> int:
    from runners.ablate.launch import cancel

    return cancel(runs, results_dir)


def _print_dry_run(rows: list[dict], table_id: str) -> int:
    print(f"dry run of table {table_id}: profile only, nothing trained or stored")
    head = f"{'row':26s} {'params M':>9s} {'GMACs paper':>12s} {'GMACs':>8s} {'latency ms':>11s}"
    print(head)
    for r in rows:
        lat = f"{r['latency_ms']:.1f}" if r["latency_ms"] is not None else "-"
        lat += " !" if r.get("contended") else ""
        paper = f"{r['gmacs_paper']:.2f}" if r["gmacs_paper"] is not None else "-"
        print(f"{r['row']:26s} {r['params_m']:9.3f} {paper:>12s} {r['gmacs']:8.2f} {lat:>11s}")
    if any(r.get("contended") for r in rows):
        print(
            "! timed while other processes kept CPUs busy: unreliable; re-time on a quiet machine"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_cli(main)
