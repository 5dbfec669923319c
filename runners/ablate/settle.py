"""``--settle CLAIM``: add seeds to an open claim's rows in rounds until it is settled.

Each round: judge the named claims by the sequential rule (valid however often one looks,
``analysis.stats``), plan the seeds their open ones still need (first bringing their rows
to the same seeds, then toward the rule's estimate, growing by half the seeds stored per
round so that a claim settled early does not pay for the estimate's margin), check the
caps (``--max-seeds`` per row in total, ``--max-hours`` of training), run the round, and
judge again. Rows shared by several claims run once. With no launcher (or a local one)
it loops to the end; with ``--launcher slurm`` each call submits one round and returns,
and the next call judges and plans the next.

The judging is passed in (``Judge``): it reads the records through ``analysis``, which the
runners' library does not import (the command line does, ``runners/ablate/__main__.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from runners.ablate.plan import plan_runs
from runners.data.source import DataSource
from runners.pretrained import NONE as NO_PRETRAINING
from runners.pretrained import Pretraining
from runners.runs import PlannedRun
from searchspace.errors import UsageError
from searchspace.recipes import Recipe
from searchspace.tables import PaperTable

DEFAULT_MAX_SEEDS = 30
FIRST_DECIDABLE = 4  # the sequential rule decides nothing with fewer seeds per row


@dataclass(frozen=True)
class ClaimState:
    """One claim as the sequential rule sees it now."""

    claim_id: str
    table: str
    rows: tuple[str, ...]
    outcome: str  # the sequential rule's: supported, contradicted, inconclusive, not run
    seeds: Mapping[str, tuple[int, ...]]  # per row, the seeds of its ok records
    target: int | None  # seeds per row the rule estimates (None: no estimate yet)
    run_hours: Mapping[str, float | None] = field(default_factory=dict)  # one run of a row
    detail: str = ""

    @property
    def settled(self) -> bool:
        return self.outcome in ("supported", "contradicted")


Judge = Callable[[], dict[str, ClaimState]]


@dataclass
class RoundPlan:
    runs: list[PlannedRun]  # the runs this round trains (deduplicated, not yet stored)
    hours: float  # their estimated training hours (rows with no stored time count 0)
    unknown: int  # runs whose time no stored run of their row tells
    targets: dict[str, int]  # claim -> seeds per row after this round
    stuck: dict[str, str]  # claim -> why no round can help it (cap, no estimate)


def check_claims(claim_ids: Sequence[str], known: Mapping[str, str], tables: str) -> None:
    """Every named claim is a claim of the tables given (one line naming what is known)."""
    unknown = [c for c in claim_ids if c not in known]
    if unknown:
        raise UsageError(
            f"--settle {','.join(unknown)}: no such claim in table(s) {tables} "
            f"(their claims: {', '.join(sorted(known)) or 'none'})"
        )


def check_caps(states: Mapping[str, ClaimState], max_seeds: int, max_hours: float | None) -> None:
    if max_hours is not None and not max_hours > 0:
        raise UsageError(f"--max-hours {max_hours}: must be a positive number of hours")
    for state in states.values():
        for row, seeds in state.seeds.items():
            if len(seeds) > max_seeds:
                raise UsageError(
                    f"--max-seeds {max_seeds}: row {state.table}/{row} of {state.claim_id} has "
                    f"{len(seeds)} seeds stored already"
                )


def next_target(state: ClaimState, max_seeds: int) -> tuple[int | None, str]:
    """Seeds per row after the next round, or (None, why not)."""
    counts = [len(s) for s in state.seeds.values()]
    union = set().union(*(set(s) for s in state.seeds.values())) if state.seeds else set()
    now = min(counts) if counts else 0
    paired = len({tuple(s) for s in state.seeds.values()}) == 1
    want = len(union) if not paired else state.target
    if paired and want is not None and want > max_seeds:
        shown = f"over {want - 1}" if want > 100 else f"about {want}"
        return None, f"needs {shown} seeds per row, more than --max-seeds {max_seeds}"
    if want is None and now < FIRST_DECIDABLE:
        want = FIRST_DECIDABLE  # too few seeds to size anything: to where the rule can decide
    if want is None:
        return None, "no estimate (no spread or no difference to size it by)"
    # the estimate is judged at its seed count alone: while the claim is open, add at
    # least one round even where it says the seeds stored should have been enough
    want = max(want, len(union), now + 1)
    # grow by half of what is stored, and never to a count where the rule cannot decide
    step = max(len(union), now + max(2, now // 2), FIRST_DECIDABLE)
    target = min(want, step, max_seeds)
    if target <= now:
        return None, f"--max-seeds {max_seeds} reached"
    return target, ""


def plan_round(
    states: Mapping[str, ClaimState],
    claim_ids: Sequence[str],
    tables: Mapping[str, PaperTable],
    recipe: Recipe,
    data: DataSource,
    stored: Callable[[PlannedRun], bool],
    max_seeds: int,
    pretraining: Pretraining = NO_PRETRAINING,
) -> RoundPlan:
    """The runs of the next round for the open claims among ``claim_ids`` (rows whose
    backbone has a file in ``pretraining`` start from it, as the judged runs did)."""
    plan = RoundPlan([], 0.0, 0, {}, {})
    seen = set()
    for cid in claim_ids:
        state = states[cid]
        if state.settled:
            continue
        target, why = next_target(state, max_seeds)
        if target is None:
            plan.stuck[cid] = why
            continue
        plan.targets[cid] = target
        table = tables[state.table]
        runs, _ = plan_runs([table], list(state.rows), recipe, data, target, pretraining)
        for run in runs:
            if run.key in seen or stored(run):
                continue
            seen.add(run.key)
            plan.runs.append(run)
            row = run.rows[0].row
            hours = state.run_hours.get(row)
            if hours is None:
                plan.unknown += 1
            else:
                plan.hours += hours
    return plan


def settle(
    claim_ids: Sequence[str],
    tables: Mapping[str, PaperTable],
    recipe: Recipe,
    data: DataSource,
    judge: Judge,
    run_round: Callable[[list[PlannedRun]], float],
    stored: Callable[[PlannedRun], bool],
    *,
    max_seeds: int = DEFAULT_MAX_SEEDS,
    max_hours: float | None = None,
    dry_run: bool = False,
    one_round: bool = False,
    pretraining: Pretraining = NO_PRETRAINING,
    say: Callable[[str], None] = print,
) -> dict[str, ClaimState]:
    """Rounds until every named claim is settled or a cap is reached; the final states.
    ``run_round(runs)`` trains (or submits) a round and returns the seconds it took here."""
    spent_h, rounds = 0.0, 0
    states = judge()
    check_caps(states, max_seeds, max_hours)
    while True:
        plan = plan_round(states, claim_ids, tables, recipe, data, stored, max_seeds, pretraining)
        for cid, why in plan.stuck.items():
            say(f"{cid}: stays {states[cid].outcome}: {why}")
        if not plan.runs:
            if plan.targets:  # the runs are there; only their judging is left
                states = judge()
            break
        unknown = f" (+{plan.unknown} runs of rows with no stored time)" if plan.unknown else ""
        say(
            f"round {rounds + 1}: {len(plan.runs)} runs, about {plan.hours:.2f} h of training"
            f"{unknown}; seeds per row after it: "
            + ", ".join(f"{c} {t}" for c, t in plan.targets.items())
        )
        if max_hours is not None and spent_h + plan.hours > max_hours:
            say(f"stopping: this round would pass --max-hours {max_hours:g} "
                f"({spent_h:.2f} h spent)")  # fmt: skip
            break
        if dry_run:
            for run in plan.runs:
                say(f"  {run.label} seed {run.seed}: {run.spec.to_string()}")
            say("dry run: nothing trained; later rounds depend on what this one finds")
            break
        spent_h += run_round(plan.runs) / 3600
        rounds += 1
        if one_round:
            say("submitted one round; run the same command again to judge it and plan the next")
            break
        states = judge()
        if all(states[c].settled for c in claim_ids):
            break
    say(f"\n{rounds} round(s), {spent_h:.2f} h of training here")
    for cid in claim_ids:
        s = states[cid]
        seeds = sorted({len(v) for v in s.seeds.values()})
        say(f"  {cid}: {s.outcome} (sequential rule) at {'/'.join(map(str, seeds))} seeds per row: "
            f"{s.detail}")  # fmt: skip
    return states
