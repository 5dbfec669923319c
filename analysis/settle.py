"""What settling an open claim costs: seeds per row, runs to add, and compute.

"38 seeds would settle it" is not actionable; "33 more runs of each of 2 rows, 66 runs,
about 5.1 CPU hours on this Xeon; GPU hours not measured" is. For every accuracy claim
the sequential rule leaves inconclusive (``analysis.claims``, ``sequential_*``):

- seeds per row: the sequential rule's estimate (the rule whose verdicts stay valid when
  seeds are added after looking, which is what settling does); rows that do not share
  their seeds yet are first brought to the same seeds (the union of their seed lists);
- runs to add: per row of the claim, the seeds it lacks, summed (rows shared between
  claims are counted in each claim here; ``--settle`` runs them once);
- compute: each row's stored runs' mean training seconds (``train.seconds``, the total
  across resumes) times the runs it lacks: CPU hours from its CPU runs, GPU hours from its
  GPU runs ("not measured" unless a GPU trained every row), with the device descriptions
  (the GPU's name, or the CPU model, with the training precision) they were timed on;
- a claim whose estimate passes ``MAX_SEEDS`` (or the cap given) says it cannot be
  settled within it; where the sequence's interval already excludes differences larger
  than some margin, that is said too (an equivalence statement, not only "inconclusive").

Torch-free: the report, ``analysis.compare`` and ``runners.ablate --settle`` use it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from analysis.claims import Claim, Verdict
from analysis.stats import MAX_SEEDS
from analysis.tables import BuiltTable, as_recipe, build_table, row_runs
from searchspace.recipes import Recipe


@dataclass(frozen=True)
class RowCost:
    """One row of a claim: its seeds now and what one more run of it costs."""

    row: str
    seeds: tuple[int, ...]
    cpu_s: float | None  # mean training seconds of its runs on CPUs (None: none)
    gpu_s: float | None  # ... on GPUs
    devices: tuple[str, ...] = ()  # the device descriptions of those runs


@dataclass(frozen=True)
class SettleCost:
    claim_id: str
    seeds_per_row: int | None  # the sequential rule's estimate; None: cannot be estimated
    runs_to_add: int | None
    cpu_hours: float | None = None  # None: some row has no CPU run to time it by
    gpu_hours: float | None = None  # None: "not measured" (no GPU run of every row)
    devices: tuple[str, ...] = ()
    capped: bool = False  # beyond the cap: not settled by seeds alone within it
    bound: float | None = None  # the interval already excludes |difference| > bound
    pairing: bool = False  # the estimate is the round that brings rows to the same seeds
    reason: str = ""  # why there is no estimate
    rows: tuple[RowCost, ...] = ()  # the claim's rows as they stand (seeds, run times)

    def sort_key(self) -> tuple[int, float]:
        if self.runs_to_add is None or self.capped:
            return (2, math.inf)
        hours = [h for h in (self.gpu_hours, self.cpu_hours) if h is not None]
        return (1 if self.pairing else 0, min(hours) if hours else math.inf)

    def describe(self) -> str:
        """One line: what settling costs, or why it cannot be said."""
        if self.seeds_per_row is None:
            text = f"no estimate ({self.reason})" if self.reason else "no estimate"
        elif self.capped:
            text = f"not settled within {self.seeds_per_row - 1} seeds per row"
        else:
            runs = f"{self.runs_to_add} more run" + ("" if self.runs_to_add == 1 else "s")
            text = f"{self.seeds_per_row} seeds per row: {runs}"
            if self.pairing:
                text += " to give the rows the same seeds (the rule then sizes the rest)"
            cpu = f"{format_hours(self.cpu_hours)} CPU" if self.cpu_hours is not None else None
            gpu = (f"{format_hours(self.gpu_hours)} GPU" if self.gpu_hours is not None
                   else "GPU hours not measured")  # fmt: skip
            text += ", about " + "; ".join(x for x in (cpu, gpu) if x)
            if self.devices:
                text += f" (timed on {', '.join(self.devices)})"
        if self.bound is not None:
            text += f"; its interval already excludes differences beyond +-{self.bound:.2f} points"
        return text


def format_hours(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{60 * hours:.0f} min"


def device_description(device: str | None, name: str | None, precision: str | None) -> str:
    """``GPU NVIDIA A100 (bf16)`` or ``CPU Intel Xeon (fp32)``: what a run's time means."""
    kind = "GPU" if str(device or "").startswith("cuda") else "CPU"
    return f"{kind} {name or '?'} ({precision or '?'})"


def row_cost(row: str, seeds: Sequence[int], runs: pd.DataFrame) -> RowCost:
    """A row's mean training seconds per run on CPUs and on GPUs, from its ok runs."""
    cpu, gpu, devices = [], [], set()
    for rec in runs.to_dict("records"):
        seconds = rec.get("train_seconds")
        if rec.get("status") != "ok" or not isinstance(seconds, (int, float)) or seconds != seconds:
            continue
        desc = device_description(
            rec.get("env_device"), rec.get("env_device_name"), rec.get("train_precision")
        )
        devices.add(desc)
        (gpu if desc.startswith("GPU ") else cpu).append(float(seconds))
    mean = statistics.fmean
    return RowCost(row, tuple(seeds), mean(cpu) if cpu else None, mean(gpu) if gpu else None,
                   tuple(sorted(devices)))  # fmt: skip


def settle_cost(
    claim_id: str,
    rows: Sequence[RowCost],
    seeds_per_row: int | None,
    bound: float | None = None,
    max_seeds: int = MAX_SEEDS,
    reason: str = "",
    pairing: bool = False,
) -> SettleCost:
    """The cost of bringing every row to the same ``seeds_per_row`` seeds (and at least to
    the union of the rows' seeds, so that they pair)."""
    if seeds_per_row is None:
        return SettleCost(claim_id, None, None, bound=bound, reason=reason, rows=tuple(rows))
    union = set().union(*(set(r.seeds) for r in rows)) if rows else set()
    target = max(seeds_per_row, len(union))
    if target > max_seeds:
        return SettleCost(claim_id, max_seeds + 1, None, capped=True, bound=bound,
                          rows=tuple(rows))  # fmt: skip
    # every row ends on the same seed list: the union, then new seeds
    lacking = [target - len(set(r.seeds)) for r in rows]
    cpu = (sum(n * r.cpu_s for n, r in zip(lacking, rows)) / 3600
           if all(r.cpu_s is not None for r in rows) else None)  # type: ignore[operator]  # fmt: skip
    gpu = (sum(n * r.gpu_s for n, r in zip(lacking, rows)) / 3600
           if all(r.gpu_s is not None for r in rows) else None)  # type: ignore[operator]  # fmt: skip
    devices = tuple(sorted({d for r in rows for d in r.devices}))
    return SettleCost(claim_id, target, sum(lacking), cpu, gpu, devices, bound=bound,
                      pairing=pairing, rows=tuple(rows))  # fmt: skip


def open_bound(intervals: Iterable[tuple[float, float]]) -> float | None:
    """The largest |difference| the open comparisons' intervals still allow, when all are
    bounded: "differences beyond +-M points are already excluded"."""
    widest = 0.0
    for lo, hi in intervals:
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return None
        widest = max(widest, abs(lo), abs(hi))
    return widest or None


def settle_costs(
    verdicts: Iterable[Verdict],
    records: pd.DataFrame,
    recipe: Recipe | str,
    dataset_id: str | None,
    max_seeds: int = MAX_SEEDS,
    init: str = "scratch",
) -> list[SettleCost]:
    """The cost to settle each accuracy claim the sequential rule leaves inconclusive,
    cheapest first (claims with no estimate, or beyond the cap, last). ``init``: as the
    verdicts were judged (``evaluate_claims``)."""
    base = as_recipe(recipe)
    tables: dict[str, BuiltTable] = {}
    out = []
    for v in verdicts:
        if v.sequential_outcome != "inconclusive":
            continue
        rows = claim_rows(v.claim, records, base, dataset_id, tables, init)
        paired = len({r.seeds for r in rows}) == 1
        needed, reason, pairing = v.sequential_seeds_needed, "", False
        if needed is None and not paired:
            # rows on other seeds: pair them first; the rule sizes the rest after that round
            needed, pairing = len(set().union(*(set(r.seeds) for r in rows))), True
        elif needed is None:
            reason = "no spread or no difference to size it by"
        bound = open_bound(v.sequential_intervals)
        out.append(settle_cost(v.claim.id, rows, needed, bound, max_seeds, reason, pairing))
    return sorted(out, key=SettleCost.sort_key)


def claim_rows(
    claim: Claim,
    records: pd.DataFrame,
    recipe: Recipe | str,
    dataset_id: str | None,
    cache: dict[str, BuiltTable] | None = None,
    init: str = "scratch",
) -> tuple[RowCost, ...]:
    """Each row of ``claim`` as it stands: the seeds of its ok records and its run times
    (``init`` and ``cache`` as the verdicts were judged: one init per cache)."""
    cache = {} if cache is None else cache
    if claim.table not in cache:
        cache[claim.table] = build_table(claim.table, records, as_recipe(recipe), dataset_id, init)
    table = cache[claim.table]
    frame, dataset = table.frame, table.dataset_id
    rows = []
    for name in claim.rows:
        line = frame[frame["row"] == name].iloc[0]
        on_data = records[records["dataset_id"] == dataset]
        runs = row_runs(on_data, line["spec_id"], line["recipe_id"], init)
        seeds = table.seeds_of(name).seeds
        rows.append(row_cost(name, seeds, runs))
    return tuple(rows)


def claim_lines(
    records: pd.DataFrame,
    table_ids: Sequence[str],
    recipe: Recipe | str,
    dataset_id: str | None,
    claims: Iterable[Claim] | None = None,
    init: str = "scratch",
) -> list[str]:
    """What the tables just printed mean, one line per claim of those tables: the verdict
    (fixed n, and the sequential rule), the difference with its interval, and what would
    settle it. At one seed per row it says that no ranking is resolved. ``init``: the runs
    the tables showed, so the claims judge those."""
    from analysis.catalogue import all_claims
    from analysis.claims import COST_KINDS, evaluate_claims

    wanted = [c for c in (all_claims() if claims is None else claims) if c.table in set(table_ids)]
    if not wanted:
        return []
    verdicts = evaluate_claims(records, recipe, dataset_id, wanted, init)
    costs = {c.claim_id: c for c in settle_costs(verdicts, records, recipe, dataset_id, init=init)}
    which = "" if init == "scratch" else ", on the pretrained runs where a row has them"
    lines = [
        "",
        f"claims of these tables (verdict with the fixed-n rule; [the sequential rule]{which}):",
    ]
    single = False
    for v in verdicts:
        if v.claim.kind in COST_KINDS:
            lines.append(f"  {v.claim.id}: {v.outcome} ({v.detail})")
            continue
        seq = f" [{v.sequential_outcome}]" if v.sequential_outcome else ""
        lines.append(f"  {v.claim.id}: {v.outcome}{seq}: {v.detail.split('; ')[0]}")
        single |= "(n=1)" in v.detail
        if v.claim.id in costs:
            lines.append(f"    to settle: {costs[v.claim.id].describe()}")
    if single:
        lines.append(
            "  at one seed per row no ranking among these rows is resolved: differences of "
            "a few tenths of a point are within one seed's spread; run --seeds 3 or more"
        )
    return lines
