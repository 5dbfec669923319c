"""The ablation's ETA: cost units per run, a rate from finished runs, copies sharing the rest."""

from __future__ import annotations

import pytest

from runners.ablate.eta import Eta, format_eta, run_cost, share_done_here
from runners.runs import PlannedRun
from searchspace.presets import parse_spec
from searchspace.recipes import parse_recipe
from searchspace.records import RecordKey


def planned(spec: str, recipe: str = "smoke", seed: int = 0) -> PlannedRun:
    s, r = parse_spec(spec), parse_recipe(recipe)
    return PlannedRun(RecordKey.of(s, r, "data-0", seed), s, r, seed)


def test_cost_follows_training_macs_and_budget() -> None:
    base = run_cost(planned("v2:bst=none"))
    # twice as wide: about 4x the multiply-adds (Table 5a: 21.2 -> 85.9 GMACs at 512x1024)
    assert run_cost(planned("v2:bst=none,width_mult=2.0")) / base == pytest.approx(4.0, rel=0.1)
    assert run_cost(planned("v2:bst=none", "smoke:budget=600")) == pytest.approx(4 * base)
    # booster heads train too, so they cost something although inference MACs are equal
    assert run_cost(planned("bisenetv2")) > base
    assert run_cost(planned("v2", "smoke:budget_kind=seconds,budget=90")) == 90.0


def test_rate_from_own_runs_and_remaining_work_shared_by_copies() -> None:
    a, b, c = (
        planned("v2:bst=none"),
        planned("v2:bst=none", seed=1),
        planned("v2:bst=none,width_mult=2.0"),
    )
    eta = Eta.of([a, b, c])
    assert eta.costs[a.key] == eta.costs[b.key]  # counted once per network and recipe
    assert eta.seconds_left([b.key, c.key], copies=1) is None  # no rate before a run
    eta.finished(a.key, seconds=100.0)
    one = eta.seconds_left([b.key, c.key], copies=1)
    assert one == pytest.approx(100.0 * (1 + eta.costs[c.key] / eta.costs[a.key]))
    assert eta.seconds_left([b.key, c.key], copies=2) == pytest.approx(one / 2)
    # a resumed run that had half its training left: 100 s buys half a run's cost
    resumed = Eta.of([a, b])
    resumed.finished(a.key, seconds=100.0, share=0.5)
    assert resumed.seconds_left([b.key], copies=1) == pytest.approx(200.0)


def test_share_done_here_reads_the_record() -> None:
    assert share_done_here({"timings": {"train_s": 30.0}, "train": {"seconds": 120.0}}) == 0.25
    assert share_done_here({"timings": {"train_s": 120.0}, "train": {"seconds": 120.0}}) == 1.0
    assert share_done_here({"status": "failed"}) == 1.0  # nothing to read: count it whole


def test_format() -> None:
    assert format_eta(None, 1) == ""
    assert format_eta(600.0, 1) == ", ETA 10 min"
    assert format_eta(5.25 * 3600, 2) == ", ETA 5.2 h (2 copies)"
