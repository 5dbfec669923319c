"""Compare two sets of stored runs: did a change help? A calibrated answer in one command.

    python -m analysis.compare --results-dir DIR --a SPEC [--a-recipe R]
                               [--b SPEC] [--b-recipe R] [--b-results-dir DIR]
                               [--dataset ID] [--seeds 0,1,2] [--table T]
                               [--no-worse MARGIN | --equivalent MARGIN] [--sequential]

Each side is a spec (a preset, a compact string or a JSON file) under a recipe (default
smoke; ``--b`` and ``--b-recipe`` default to side a's), read from a results folder.
The per-seed mIoU of the two sides goes through ``analysis.stats``, the rule the report's
claims use: paired by seed when both sides have the same seeds (a seed fixes the data
order), a 95% interval, a verdict only when it excludes zero, the seeds per side that
would settle an open question, and, when the records hold per-image counts, a bootstrap
over val images and seeds beside it. ``--no-worse M`` asks the equivalence question
instead (a no worse than b by more than M points), ``--equivalent M`` its two-sided form
(a and b within M points of each other). Both sides may be one spec under two recipes
(``--a-recipe synth --b-recipe synth:amp=false --equivalent 1`` asks whether bf16 training
changes mIoU by a point or more). With ``--table T`` (a table id or a .toml table file)
``--a`` and ``--b`` name rows of T, each as the ablation ran it. ``--sequential`` judges by
the anytime-valid rule (sides with the same seeds), right when seeds were added after
looking; an open question says what settling it costs (runs, and hours from the sides'
own train times). Read-only, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.claims import RowStats
from analysis.cli import ArgumentParser, run_cli
from analysis.records import load_stored_records
from analysis.settle import RowCost, row_cost, settle_cost
from analysis.stats import (
    MAX_SEEDS,
    Comparison,
    RunCounts,
    StatsError,
    compare,
    equivalent,
    image_bootstrap,
    no_worse,
    points,
)
from analysis.tables import as_recipe, dataset_classes, pick_dataset
from searchspace.errors import SpecError, StoreError, UsageError
from searchspace.presets import parse_spec
from searchspace.table_files import table_from_arg, use_stored_table_files

PROG = "analysis.compare"


@dataclass(frozen=True)
class Side:
    """One side's ok runs: per seed, mIoU in points, precision and per-image counts."""

    label: str
    spec: str
    spec_id: str
    recipe: str
    recipe_id: str
    seeds: tuple[int, ...]
    miou: tuple[float, ...]
    precisions: tuple[str, ...]
    counts: tuple[RunCounts, ...]  # empty unless every seed's record has them
    cost: RowCost | None = None  # its runs' train times, to say what more seeds cost

    def describe(self) -> str:
        values = ", ".join(f"s{s} {v:.2f}" for s, v in zip(self.seeds, self.miou, strict=True))
        kinds = "/".join(sorted(set(self.precisions))) or "?"
        return (
            f"{self.label}: {self.spec} ({self.spec_id}), recipe {self.recipe} "
            f"({self.recipe_id}), trained in {kinds}\n"
            f"   mIoU {sum(self.miou) / len(self.miou):.2f} over {len(self.miou)} seed(s): "
            f"{values}"
        )


def load_side(
    label: str,
    results_dir: Path,
    spec_text: str,
    recipe_text: str,
    dataset_id: str | None,
    seeds: Sequence[int] | None,
) -> Side:
    """The ok runs of ``spec_text`` under ``recipe_text`` in ``results_dir``."""
    spec, recipe = parse_spec(spec_text), as_recipe(recipe_text)
    records = load_stored_records(results_dir)
    mine = records[
        (records["spec_id"] == spec.spec_id)
        & (records["recipe_id"] == recipe.recipe_id)
        & (records["status"] == "ok")
        & records["miou"].notna()
    ]
    if dataset_id is None:
        dataset_id = pick_dataset(mine)
    mine = mine[mine["dataset_id"] == dataset_id]
    if seeds is not None:
        mine = mine[mine["seed"].isin(list(seeds))]
    if mine.empty:
        which = f" seeds {','.join(map(str, seeds))}" if seeds is not None else ""
        raise StoreError(
            f"{label}: no ok run of {spec.to_string()} ({spec.spec_id}) under recipe "
            f"{recipe.name} ({recipe.recipe_id}){which} in {results_dir}"
        )
    mine = mine.sort_values("seed")
    has_counts = mine["per_image"].map(lambda v: isinstance(v, dict)).all()
    return Side(
        label=label,
        spec=spec.to_string(),
        spec_id=spec.spec_id,
        recipe=recipe.name,
        recipe_id=recipe.recipe_id,
        seeds=tuple(int(s) for s in mine["seed"]),
        miou=tuple(100.0 * float(v) for v in mine["miou"]),
        precisions=tuple(str(p) for p in mine["train_precision"].dropna()),
        counts=tuple(RunCounts.from_record(p) for p in mine["per_image"]) if has_counts else (),
        cost=row_cost(label, tuple(int(s) for s in mine["seed"]), mine),
    )


def judge(
    a: Side,
    b: Side,
    margin: float | None = None,
    two_sided: bool = False,
    sequential: bool = False,
) -> Comparison:
    """``analysis.stats`` on the two sides by the claims' rule: paired when both sides have
    the same seeds, else Welch on all seeds of each (``--seeds`` picks common seeds). With
    a ``margin``: "no worse" (one-sided) or "within the margin of each other" (``two_sided``).
    ``sequential``: the anytime-valid rule, on sides with the same seeds."""
    paired = RowStats(a.label, a.miou, None, seeds=a.seeds).pairs_with(
        RowStats(b.label, b.miou, None, seeds=b.seeds)
    )
    if sequential and not paired:
        raise UsageError(
            f"--sequential compares sides with the same seeds: a has {_list(a.seeds)}, b has "
            f"{_list(b.seeds)} (--seeds picks common ones; --settle adds the missing ones)"
        )
    if margin is not None:
        test = equivalent if two_sided else no_worse
        return test(a.miou, b.miou, margin, paired=paired, sequential=sequential)
    return compare(a.miou, b.miou, paired=paired, sequential=sequential)


def _list(seeds: Sequence[int]) -> str:
    return ",".join(map(str, seeds)) or "none"


def describe(a: Side, b: Side, c: Comparison) -> str:
    """The comparison in words: the difference, its interval, the verdict, what would settle it."""
    lo, hi = c.ci
    level = f"{c.level:.0%}"
    ci = f"[{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) else "unbounded (no spread to use)"
    lines = [
        a.describe(),
        b.describe(),
        f"a - b: {c.diff:+.2f} points, {level} CI {ci} ({c.method})",
    ]
    if c.margin is not None:
        words = {
            "no_worse": f"a is no worse than b by more than {points(c.margin)}",
            "worse": f"a is worse than b by more than {points(c.margin)}",
            "equivalent": f"a and b are within {points(c.margin)} of each other",
            "different": f"a and b differ by more than {points(c.margin)}",
        }
    else:
        words = {"a_better": "a is better", "b_better": "b is better"}
    verdict = words.get(c.verdict, "inconclusive")
    if c.verdict == "inconclusive" and c.seeds_needed is not None:
        n = f">{MAX_SEEDS}" if c.seeds_needed > MAX_SEEDS else str(c.seeds_needed)
        verdict += f": about {n} seeds per side would settle a difference of this size"
    lines.append(f"verdict: {verdict}")
    if c.verdict == "inconclusive" and c.seeds_needed is not None and a.cost and b.cost:
        # with the fixed-n rule, the seed count must be fixed before looking at the result
        cost = settle_cost("a vs b", [a.cost, b.cost], c.seeds_needed)
        after = "" if c.method.startswith("confidence sequence") else (
            "; then judge with --sequential: seeds added after looking need it")  # fmt: skip
        lines.append(f"to settle: {cost.describe()}{after}")
    if a.counts and b.counts:
        try:
            _, (blo, bhi) = image_bootstrap(a.counts, b.counts, level=c.level, paired=c.paired)
            lines.append(f"images + seeds bootstrap, {level}: [{blo:+.2f}, {bhi:+.2f}]")
        except StatsError as exc:
            lines.append(f"no image bootstrap: {exc}")
    if len(set(a.precisions) | set(b.precisions)) > 1:
        lines.append("note: the runs trained in different precisions (see 'trained in')")
    return "\n".join(lines)


def table_side(table: str) -> Callable[..., Side]:
    """``load_side`` for ``--table``: a side's spec names a row of ``table`` (an id, a .toml
    file, or a user table the results folder keeps), run as the ablation ran it (its spec
    sized for the dataset's classes, its recipe changes on the side's recipe)."""

    def load(label: str, results_dir: Path, row: str, recipe_text: str, *rest: Any) -> Side:
        use_stored_table_files(results_dir)
        try:
            paper_row = table_from_arg(table).row(row)
            if paper_row.spec is None:
                raise SpecError(f"table {paper_row.table} row {row}: {paper_row.unsupported}")
        except SpecError as exc:
            raise UsageError(str(exc)) from None
        records = load_stored_records(results_dir)
        classes = dataset_classes(records, rest[0] or pick_dataset(records))
        spec, recipe = paper_row.run_for(
            as_recipe(recipe_text), classes or paper_row.spec.num_classes
        )
        return load_side(f"{label} ({paper_row.key})", results_dir, spec.to_json(), recipe, *rest)

    return load


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected seed numbers joined by commas") from None
    if not seeds:
        raise UsageError("--seeds: give at least one seed")
    return seeds


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--results-dir", required=True, type=Path, help="results folder")
    parser.add_argument("--a", required=True, help="side a: a preset, compact spec or JSON file")
    parser.add_argument("--a-recipe", default="smoke", help="side a's recipe (default smoke)")
    parser.add_argument("--b", default=None, help="side b's spec (default: side a's)")
    parser.add_argument("--b-recipe", default=None, help="side b's recipe (default: side a's)")
    parser.add_argument("--b-results-dir", type=Path, default=None, help="default: --results-dir")
    parser.add_argument("--dataset", default=None, help="dataset id (default: the only one)")
    parser.add_argument("--seeds", default=None, help="only these seeds, e.g. 0,1,2")
    parser.add_argument(
        "--table", default=None,
        help="--a and --b name rows of this table (an id or a .toml table file)",
    )  # fmt: skip
    parser.add_argument(
        "--sequential", action="store_true",
        help="the sequential rule (valid however often seeds were added after looking; "
        "sides with the same seeds)",
    )  # fmt: skip
    margin = parser.add_mutually_exclusive_group()
    margin.add_argument(
        "--no-worse", type=float, default=None, metavar="MARGIN",
        help="an equivalence test: is a no worse than b by more than MARGIN points?",
    )  # fmt: skip
    margin.add_argument(
        "--equivalent", type=float, default=None, metavar="MARGIN",
        help="two one-sided tests: are a and b within MARGIN points of each other?",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.b is None and args.b_recipe is None and args.b_results_dir is None:
        raise UsageError(
            "side b is side a: change at least one of --b, --b-recipe, --b-results-dir"
        )
    seeds = _seeds(args.seeds)
    load = load_side if args.table is None else table_side(args.table)
    a = load("a", args.results_dir, args.a, args.a_recipe, args.dataset, seeds)
    b = load(
        "b",
        args.b_results_dir or args.results_dir,
        args.b or args.a,
        args.b_recipe or args.a_recipe,
        args.dataset,
        seeds,
    )
    two_sided = args.equivalent is not None
    margin = args.equivalent if two_sided else args.no_worse
    print(describe(a, b, judge(a, b, margin, two_sided=two_sided, sequential=args.sequential)))
    return 0


if __name__ == "__main__":
    run_cli(main)

__all__ = ["Side", "build_parser", "describe", "judge", "load_side", "main", "table_side"]
