"""The BiSeNet V2 paper's ablation claims as data, checked against stored results.

Each claim names a paper table, the rows it compares (in ``rows``, the subject first) and
a kind. Accuracy comes from the per-seed mIoU of each row (``build_table``'s
``seed_values``), compared with ``analysis.stats``; cost from the measured
multiply-adds (exact integers, so no tolerance).

Accuracy verdicts are calibrated (see ``analysis/stats.py``): a comparison says a row is
better only when the 95% interval of the difference excludes zero, so with no true
difference a verdict is wrong at most 5% of the time whatever the number of seeds. Two
rows trained with the same seeds are compared seed by seed (a paired interval: a seed
fixes the data order for every row, and its luck is shared). Rows with a single seed
borrow the table's pooled seed spread (rows with >= 2 seeds); two single runs with no
spread to borrow stay inconclusive. Every inconclusive comparison
says how many seeds per row would settle a difference of its size.

Kinds and verdicts ("not run" whenever a needed row has no ok record, or no MACs for a
cost claim):

- ``beats``: rows[0] is better than every other row. Supported if each comparison says
  so; contradicted if any other row is better; else inconclusive. With k > 1 other rows
  a comparison contradicts only at the Bonferroni level (its interval at 1 - 0.05/k
  excludes zero): "any of k" at 95% each would be wrong in up to k x 2.5% of claims
  with no true difference (about 9% for k = 4, ``benchmarks/verdicts_bench.py``), while
  "all of k" (supported) is an intersection-union test that stays at 2.5% uncorrected.
- ``argmax``: rows[0] is the most accurate of the rows: judged as ``beats`` against each
  (comparing with the best-looking other row alone would pick it by its own noise).
- ``no_worse_cheaper``: rows[0] costs fewer MACs than rows[1] and is no worse by more
  than ``margin`` points: an equivalence test (``stats.no_worse``), not the absence of a
  difference. Contradicted if not cheaper or worse beyond the margin.
- ``monotone``: accuracy grows along the rows. Supported if the last row beats the
  first; contradicted if any step goes down or the last row is below the first
  (significantly, at the Bonferroni level for those k + 1 comparisons: a trend that
  falls overall in small steps contradicts the claim too); else inconclusive. So every
  claim, of one comparison or several, is wrong at most 5% of the time when its rows do
  not differ.
- ``free_accuracy``: rows[0] has the same inference MACs and parameters as rows[1]
  (contradicted if not) and beats it (as ``beats``).
- ``same_cost`` / ``cheaper`` / ``cost_monotone``: complexity only, from MACs (and
  inference parameters for ``same_cost``).

Every verdict is also computed at half the training budget (the records' learning-curve
point) and on the paper's own numbers. The paper reports single runs; they are compared
with an *assumed* run-to-run spread, ``PAPER_SPREAD``: the paper notes (shared/paper/
README.md, V2 protocol) give the spread of Cityscapes val mIoU across reimplementations as
"about +-1 point"; we read it as a standard deviation of 1 point, the conservative reading.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any, Literal

import pandas as pd

# the claims are data (the table files); the catalogue builds them
from analysis.catalogue import CLAIMS, Claim
from analysis.columns import Column, frame_of
from analysis.stats import (
    ALPHA,
    Comparison,
    RunCounts,
    Spread,
    StatsError,
    compare,
    image_bootstrap,
    no_worse,
)
from analysis.tables import BuiltTable, as_recipe, build_table, pick_dataset, row_recipe_ids
from searchspace.recipes import Recipe
from searchspace.tables import get_table

PAPER_SPREAD = Spread(
    1.0,
    df=None,
    source="assumed: 'about +-1 point' run to run for Cityscapes reimplementations, "
    "read as a standard deviation",
)
DEFAULT_MARGIN_PTS = 1.0  # "no worse" means within 1 point: the run-to-run spread above
Kind = Literal[
    "beats",
    "no_worse_cheaper",
    "argmax",
    "monotone",
    "free_accuracy",
    "same_cost",
    "cheaper",
    "cost_monotone",
]
Outcome = Literal["supported", "contradicted", "inconclusive", "not run"]
COST_KINDS = ("same_cost", "cheaper", "cost_monotone")
UNPAIRED_SEQUENTIAL = "confidence sequence: needs rows with the same seeds (--settle pairs them)"


@dataclass(frozen=True)
class RowStats:
    """What a claim needs of one row: per-seed mIoU (points) at the end and at half the
    budget, and the cost."""

    row: str
    values: tuple[float, ...]
    cost: float | None  # MACs (measured, exact) or GMACs (paper, 2 decimals)
    params: int | None = None
    half_values: tuple[float, ...] = ()
    counts: tuple[RunCounts, ...] = ()  # per-image counts of each seed, when stored
    seeds: tuple[int, ...] = ()  # the seed of each value (empty: unknown, e.g. the paper)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None

    def at_half(self) -> RowStats:
        return RowStats(self.row, self.half_values, self.cost, self.params, seeds=self.seeds)

    def pairs_with(self, other: RowStats) -> bool:
        """Same seeds, in order: the rows saw the same data stream seed by seed."""
        return bool(self.seeds) and self.seeds == other.seeds and self.n == len(self.seeds)

    def describe(self) -> str:
        if not self.values:
            return f"{self.row}: not run"
        return f"{self.row} {self.mean:.2f} (n={self.n})"


def _cmp(
    a: RowStats, b: RowStats, spread: Spread | None, sequential: bool, alpha: float = ALPHA
) -> Comparison:
    """``stats.compare`` of two rows: paired when both have the same seeds, else Welch on
    all seeds of each (pairing on a common subset would drop seeds; see ``analysis.stats``).
    ``sequential``: the anytime-valid rule, defined only on rows with the same seeds; rows
    without them are left inconclusive, with no seed count (``--settle`` pairs them)."""
    if not sequential:
        return compare(a.values, b.values, spread=spread, alpha=alpha, paired=a.pairs_with(b))
    if a.pairs_with(b):
        return compare(a.values, b.values, alpha=alpha, sequential=True)
    mean_a, mean_b = a.mean or 0.0, b.mean or 0.0
    return Comparison(
        diff=mean_a - mean_b, ci=(-math.inf, math.inf), verdict="inconclusive",
        seeds_needed=None, n_a=a.n, n_b=b.n, sd=None, df=None,
        method=UNPAIRED_SEQUENTIAL, level=1 - alpha,
    )  # fmt: skip


def _compare(
    a: RowStats, b: RowStats, spread: Spread | None, sequential: bool = False
) -> tuple[RowStats, RowStats, Comparison]:
    return a, b, _cmp(a, b, spread, sequential)


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    detail: str  # the numbers behind the outcome, as text
    seeds_needed: int | None = None  # per row, to settle the open comparisons
    intervals: tuple[tuple[float, float], ...] = ()  # of the open comparisons


@dataclass(frozen=True)
class Verdict:
    """A claim's outcome on the measured results (at the end and at half the budget) and
    on the paper's own numbers."""

    claim: Claim
    outcome: Outcome
    detail: str
    paper_outcome: Outcome
    paper_detail: str
    seeds_needed: int | None = None
    half_outcome: Outcome | None = None  # None: the records have no learning curve
    # the same claim by the sequential rule (valid after seeds were added on looking);
    # None for cost claims, which no seed count changes
    sequential_outcome: Outcome | None = None
    sequential_detail: str = ""
    sequential_seeds_needed: int | None = None
    sequential_intervals: tuple[tuple[float, float], ...] = ()  # its open comparisons'

    @property
    def budget_sufficient(self) -> bool | None:
        """False when the verdict changed over the last doubling of the budget."""
        if self.half_outcome is None or self.claim.kind in COST_KINDS:
            return None
        if "not run" in (self.outcome, self.half_outcome):
            return None
        return self.half_outcome == self.outcome


def _f(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _text(a: RowStats, b: RowStats, c: Comparison) -> str:
    lo, hi = c.ci
    ci = "unbounded" if not math.isfinite(lo) else f"[{lo:+.2f}, {hi:+.2f}]"
    word = {"a_better": ">", "b_better": "<", "no_worse": "no worse", "worse": "worse"}
    rel = word.get(c.verdict, "vs")
    how = ", paired by seed" if c.paired else ""
    # an equivalence test is one-sided at 5%: a 90% interval
    text = f"{a.describe()} {rel} {b.describe()}: {c.diff:+.2f}, {c.level:.0%} CI {ci}{how}"
    if c.method == UNPAIRED_SEQUENTIAL:
        return text + " (the sequential rule needs the same seeds: --settle pairs them)"
    if a.counts and b.counts:
        try:
            _, (blo, bhi) = image_bootstrap(a.counts, b.counts, level=c.level, paired=c.paired)
            text += f" (images + seeds bootstrap [{blo:+.2f}, {bhi:+.2f}])"
        except StatsError:
            pass  # scored on other val images: no paired bootstrap
    return text


def _open(comparisons: Sequence[Comparison]) -> tuple[tuple[float, float], ...]:
    return tuple(c.ci for c in comparisons if not c.decided)


def _needed(comparisons: Sequence[Comparison]) -> int | None:
    open_ = [c.seeds_needed for c in comparisons if not c.decided]
    if not open_ or any(n is None for n in open_):
        return None
    return max(n for n in open_ if n is not None)


def _any_of(
    judged: Sequence[tuple[RowStats, RowStats, Comparison]],
    spread: Spread | None,
    sequential: bool = False,
) -> tuple[list[Comparison], list[str]]:
    """Comparisons whose "b_better" would contradict a claim if *any* of them says so,
    with texts: with k > 1 of them such a verdict stands only if it holds at level
    ``ALPHA / k`` (Bonferroni; for "any of k" the same as Holm's first step), so that
    the claim's false-contradiction rate stays at ALPHA / 2 whatever k; it is demoted to
    inconclusive otherwise. The "all of them" route (supported) needs no correction: it
    is an intersection-union test, at most ALPHA / 2 with every comparison at 95%."""
    k = len(judged)
    comps, texts = [], []
    for x, o, c in judged:
        note = ""
        if k > 1 and c.verdict == "b_better":
            strict = _cmp(x, o, spread, sequential, alpha=ALPHA / k)
            lo, hi = strict.ci
            note = (
                f"; {100 * (1 - ALPHA / k):g}% CI [{lo:+.2f}, {hi:+.2f}] for {k}"
                " comparisons (Bonferroni)"
            )
            if strict.verdict != "b_better":
                # the seeds that would settle it at the level it is judged at
                c = replace(c, verdict="inconclusive", seeds_needed=strict.seeds_needed)
        comps.append(c)
        texts.append(_text(x, o, c) + note)
    return comps, texts


def _beats(
    a: RowStats, others: Sequence[RowStats], spread: Spread | None, sequential: bool = False
) -> tuple[Outcome, str, list[Comparison]]:
    judged = [_compare(a, o, spread, sequential) for o in others]
    comps, texts = _any_of(judged, spread, sequential)
    if any(c.verdict == "b_better" for c in comps):
        outcome: Outcome = "contradicted"
    elif all(c.verdict == "a_better" for c in comps):
        outcome = "supported"
    else:
        outcome = "inconclusive"
    return outcome, "; ".join(texts), comps


def _cost(s: RowStats, paper: bool) -> str:
    if s.cost is None:
        return f"{s.row}: no MACs"
    gmacs = s.cost if paper else s.cost / 1e9
    params = f", {s.params:,} params" if s.params is not None else ""
    return f"{s.row} {gmacs:.2f} GMACs{params}"


def judge(
    claim: Claim,
    stats: Sequence[RowStats],
    paper: bool = False,
    spread: Spread | None = None,
    sequential: bool = False,
) -> Judgement:
    """The outcome of ``claim`` given its rows' stats (in ``claim.rows`` order).

    ``spread``: the run-to-run spread single-seed rows borrow (the table's pooled one, or
    the paper's assumed one). ``sequential``: every comparison by the anytime-valid rule
    (``analysis.stats``), valid however often seeds were added after looking."""
    a, others = stats[0], list(stats[1:])
    if claim.kind in COST_KINDS or claim.kind in ("no_worse_cheaper", "free_accuracy"):
        missing = [s.row for s in stats if s.cost is None]
        if missing:
            return Judgement("not run", f"no MACs for {', '.join(missing)}")
    if claim.kind not in COST_KINDS:
        missing = [s.row for s in stats if not s.values]
        if missing:
            return Judgement("not run", f"no ok result for {', '.join(missing)}")
    costs = "; ".join(_cost(s, paper) for s in stats)

    if claim.kind == "same_cost":
        same = all(
            o.cost == a.cost and (o.params is None or a.params is None or o.params == a.params)
            for o in others
        )
        return Judgement("supported" if same else "contradicted", costs)
    if claim.kind == "cheaper":
        ok = all(a.cost < o.cost for o in others)  # type: ignore[operator]
        return Judgement("supported" if ok else "contradicted", costs)
    if claim.kind == "cost_monotone":
        ok = all(p.cost < q.cost for p, q in pairwise(stats))  # type: ignore[operator]
        return Judgement("supported" if ok else "contradicted", costs)

    if claim.kind in ("beats", "argmax"):
        outcome, text, comps = _beats(a, others, spread, sequential)
        return Judgement(outcome, text, _needed(comps), _open(comps))
    if claim.kind == "no_worse_cheaper":
        b = others[0]
        if sequential and not a.pairs_with(b):
            c = _cmp(a, b, spread, sequential)
        else:
            c = no_worse(a.values, b.values, claim.margin, spread=spread,
                         paired=a.pairs_with(b), sequential=sequential)  # fmt: skip
        text = _text(a, b, c) + f" (against a {claim.margin:g}-point margin)"
        if not a.cost < b.cost:  # type: ignore[operator]
            return Judgement("contradicted", f"not cheaper: {costs}; {text}")
        outcome: Outcome = {"no_worse": "supported", "worse": "contradicted"}.get(
            c.verdict, "inconclusive"
        )  # type: ignore[assignment]
        return Judgement(outcome, f"{text}; {costs}", _needed([c]), _open([c]))
    if claim.kind == "free_accuracy":
        b = others[0]
        same_params = a.params is None or b.params is None or a.params == b.params
        if a.cost != b.cost or not same_params:
            return Judgement("contradicted", f"inference cost differs: {costs}")
        outcome, text, comps = _beats(a, [b], spread, sequential)
        return Judgement(outcome, f"{text}; same cost: {costs}", _needed(comps), _open(comps))
    if claim.kind == "monotone":
        steps = [_compare(q, p, spread, sequential) for p, q in pairwise(stats)]
        last = _compare(stats[-1], a, spread, sequential)
        comps, texts = _any_of([*steps, last], spread, sequential)
        last, text = comps[-1], f"last vs first: {texts[-1]}"
        down = [t for c, t in zip(comps[:-1], texts[:-1]) if c.verdict == "b_better"]
        if down:
            return Judgement("contradicted", "goes down: " + "; ".join(down))
        if last.verdict == "b_better":
            return Judgement("contradicted", text)
        if last.verdict == "a_better":
            return Judgement("supported", text)
        return Judgement("inconclusive", text, _needed([last]), _open([last]))
    raise ValueError(f"unknown claim kind {claim.kind!r}")


def pooled_spread(stats: Iterable[RowStats]) -> Spread | None:
    """The seed spread pooled over the rows with >= 2 seeds (one table, one recipe)."""
    ss, df = 0.0, 0
    for s in stats:
        if s.n >= 2:
            mean = s.mean or 0.0
            ss += sum((v - mean) ** 2 for v in s.values)
            df += s.n - 1
    if df == 0 or ss <= 0:
        return None
    return Spread(math.sqrt(ss / df), df=df, source=f"pooled over the table's seeds, {df} df")


def _row_stats(table: BuiltTable, paper: bool) -> dict[str, RowStats]:
    out = {}
    for rec in table.frame.to_dict("records"):
        if paper:
            mean = _f(rec["miou_paper_pct"])
            values = (mean,) if mean is not None else ()
            out[rec["row"]] = RowStats(rec["row"], values, _f(rec["gmacs_paper"]))
            continue
        macs, params = _f(rec["macs"]), _f(rec["params"])
        got = table.seeds_of(rec["row"])
        out[rec["row"]] = RowStats(
            rec["row"],
            got.final,
            int(macs) if macs is not None else None,
            int(params) if params is not None else None,
            got.half,
            tuple(RunCounts.from_record(p) for p in got.per_image),
            got.seeds,
        )
    return out


def claim_recipe_ids(recipe: Recipe, claims: Iterable[Claim] = CLAIMS) -> set[str]:
    """Recipe ids the claims' rows run with (to pick the dataset among the records)."""
    ids = set()
    for claim in claims:
        table = get_table(claim.table)
        ids |= row_recipe_ids((table.row(r) for r in claim.rows), recipe)
    return ids


def evaluate_claims(
    records: pd.DataFrame,
    recipe: Recipe | str = "smoke",
    dataset_id: str | None = None,
    claims: Iterable[Claim] = CLAIMS,
    init: str = "scratch",
) -> list[Verdict]:
    """Judge each claim on the records (frame of ``load_records``) and on the paper's numbers.
    ``init``: which runs of a row are judged, as its table shows them (``build_table``)."""
    claims = list(claims)
    base = as_recipe(recipe)
    if dataset_id is None:
        dataset_id = pick_dataset(records, claim_recipe_ids(base, claims))
    tables: dict[str, BuiltTable] = {}
    verdicts = []
    for claim in claims:
        if claim.table not in tables:
            tables[claim.table] = build_table(claim.table, records, base, dataset_id, init)
        measured = _row_stats(tables[claim.table], paper=False)
        from_paper = _row_stats(tables[claim.table], paper=True)
        spread = pooled_spread(measured.values())
        stats = [measured[r] for r in claim.rows]
        final = judge(claim, stats, spread=spread)
        half = None
        if all(s.half_values for s in stats) and claim.kind not in COST_KINDS:
            halves = [s.at_half() for s in stats]
            half = judge(
                claim, halves, spread=pooled_spread(m.at_half() for m in measured.values())
            )
        on_paper = judge(claim, [from_paper[r] for r in claim.rows], True, PAPER_SPREAD)
        seq = None if claim.kind in COST_KINDS else judge(claim, stats, sequential=True)
        verdicts.append(
            Verdict(
                claim,
                final.outcome,
                final.detail,
                on_paper.outcome,
                on_paper.detail,
                seeds_needed=final.seeds_needed,
                half_outcome=half.outcome if half is not None else None,
                sequential_outcome=seq.outcome if seq is not None else None,
                sequential_detail=seq.detail if seq is not None else "",
                sequential_seeds_needed=seq.seeds_needed if seq is not None else None,
                sequential_intervals=seq.intervals if seq is not None else (),
            )
        )
    return verdicts


# One row per claim: the claim, its verdicts and what would settle it, in this order.
VERDICT_COLUMNS: tuple[Column[Verdict], ...] = (
    Column("id", lambda v: v.claim.id),
    Column("table", lambda v: v.claim.table),
    Column("kind", lambda v: v.claim.kind),
    Column("text", lambda v: v.claim.text),
    Column("outcome", lambda v: v.outcome),
    Column("detail", lambda v: v.detail),
    Column("paper_outcome", lambda v: v.paper_outcome),
    Column("paper_detail", lambda v: v.paper_detail),
    Column("source", lambda v: v.claim.source),
    Column("seeds_needed", lambda v: v.seeds_needed),
    Column("half_outcome", lambda v: v.half_outcome),
    Column("budget_sufficient", lambda v: v.budget_sufficient),
    Column("sequential_outcome", lambda v: v.sequential_outcome),
    Column("sequential_seeds_needed", lambda v: v.sequential_seeds_needed),
)


def verdicts_frame(verdicts: Iterable[Verdict]) -> pd.DataFrame:
    """One row per claim, the columns of ``VERDICT_COLUMNS``."""
    return frame_of(verdicts, VERDICT_COLUMNS)
