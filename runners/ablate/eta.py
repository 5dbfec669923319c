"""How long the rest of an ablation plan will take.

A plan mixes runs of very different cost (Table 5a's alpha = 2 trains about 4x the
multiply-adds of alpha = 1), is often shared by several copies of the same command
(``JOBS=2 bash scripts/v2_results.sh``), and resumes runs from checkpoints. Seconds per
finished run over runs left gets all three wrong, so the estimate works in cost units:
a run's cost is the multiply-adds it trains (train-mode forward at the recipe's crop,
booster heads included, times the images its budget feeds; the backward pass is a
roughly constant multiple) or, for a wall-clock budget, its seconds. This process's own
finished runs give seconds per unit; what no copy has finished yet, divided among the
copies now holding a lock of the plan, gives the time left. A rough guide (the cost model
ignores memory-bound layers and the loss), not a promise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runners.profile.complexity import build_on_meta, count_training_macs
from runners.runs import PlannedRun
from searchspace.records import RecordKey


def run_cost(run: PlannedRun) -> float:
    """Cost units of one run: training MACs, or the seconds of a wall-clock budget."""
    recipe = run.recipe
    if recipe.budget_kind == "seconds":
        return float(recipe.budget)
    images = (
        recipe.budget * recipe.batch_size if recipe.budget_kind == "iterations" else recipe.budget
    )
    return float(count_training_macs(build_on_meta(run.spec), recipe.crop_hw)) * images


def share_done_here(record: Mapping[str, Any]) -> float:
    """The part of a run's training this process did: less than 1 when it resumed a
    checkpoint (this process's training seconds over the run's total)."""
    here = (record.get("timings") or {}).get("train_s")
    total = (record.get("train") or {}).get("seconds")
    if not isinstance(here, (int, float)) or not isinstance(total, (int, float)) or total <= 0:
        return 1.0
    return min(1.0, max(0.0, here / total))


@dataclass
class Eta:
    """Seconds per cost unit from this process's runs; the estimate for what is left."""

    costs: dict[RecordKey, float]
    units: float = 0.0
    seconds: float = 0.0
    _finished: set[RecordKey] = field(default_factory=set)

    @classmethod
    def of(cls, runs: Iterable[PlannedRun]) -> Eta:
        """Costs of ``runs``, counted once per distinct network and recipe. A network the
        counter cannot trace gets the median cost of the others: an estimate must never
        stop the plan it estimates."""
        memo: dict[tuple[str, str], float | None] = {}
        by_key: dict[RecordKey, float | None] = {}
        for run in runs:
            memo_key = (run.key.spec_id, run.key.recipe_id)
            if memo_key not in memo:
                try:
                    memo[memo_key] = run_cost(run)
                except Exception:  # any tracing failure: the fallback below
                    memo[memo_key] = None
            by_key[run.key] = memo[memo_key]
        known = sorted(c for c in by_key.values() if c is not None)
        fallback = known[len(known) // 2] if known else 1.0
        return cls({k: fallback if c is None else c for k, c in by_key.items()})

    def finished(self, key: RecordKey, seconds: float, share: float = 1.0) -> None:
        """This process finished ``key`` in ``seconds`` (``share`` of its cost was left)."""
        self.units += self.costs[key] * share
        self.seconds += seconds
        self._finished.add(key)

    def seconds_left(self, pending: Iterable[RecordKey], copies: int) -> float | None:
        """Time until ``pending`` (no record yet) is done by ``copies`` copies; None before
        this process has finished a run (no rate yet)."""
        if self.units <= 0:
            return None
        rate = self.seconds / self.units
        return sum(self.costs[k] for k in pending) * rate / max(1, copies)


def format_eta(seconds: float | None, copies: int) -> str:
    """ ", ETA 12 min" or ", ETA 5.3 h (2 copies)"; empty without an estimate."""
    if seconds is None:
        return ""
    minutes = seconds / 60
    when = f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"
    return f", ETA {when}" + (f" ({copies} copies)" if copies > 1 else "")
