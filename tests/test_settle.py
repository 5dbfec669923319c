"""analysis.settle: the runs and compute that settling an open claim costs."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.claims import evaluate_claims
from analysis.records import load_records
from analysis.settle import RowCost, settle_cost, settle_costs

ROOT = Path(__file__).resolve().parent.parent


def test_runs_and_hours_bring_every_row_to_the_same_seeds() -> None:
    a = RowCost("a", (0, 1, 2), cpu_s=600.0, gpu_s=None, devices=("CPU Xeon (fp32)",))
    b = RowCost("b", (0, 1, 2, 3, 4), cpu_s=1200.0, gpu_s=60.0, devices=("CPU Xeon (fp32)",))
    cost = settle_cost("c", [a, b], seeds_per_row=8)
    assert cost.seeds_per_row == 8 and cost.runs_to_add == 5 + 3
    assert cost.cpu_hours == pytest.approx((5 * 600 + 3 * 1200) / 3600)
    assert cost.gpu_hours is None  # row a never ran on a GPU: not measured
    assert "GPU hours not measured" in cost.describe() and "8 more runs" in cost.describe()
    # the union of the seeds comes first: a smaller estimate still pairs the rows
    pairing = settle_cost("c", [a, b], seeds_per_row=4)
    assert pairing.seeds_per_row == 5 and pairing.runs_to_add == 2
    capped = settle_cost("c", [a, b], seeds_per_row=120, bound=1.5)
    assert capped.capped and capped.runs_to_add is None
    assert "not settled within 100 seeds" in capped.describe()
    assert "excludes differences beyond +-1.50 points" in capped.describe()
    gpu = RowCost("g", (0, 1, 2), cpu_s=None, gpu_s=90.0, devices=("GPU A100 (bf16)",))
    both = settle_cost("c", [gpu, b], seeds_per_row=5)
    assert both.gpu_hours == pytest.approx((2 * 90 + 0 * 60) / 3600) and both.cpu_hours is None


@pytest.mark.slow  # judges every claim of results/v2-synth: 15-35 s
def test_every_claim_left_open_by_the_sequential_rule_is_costed_cheapest_first() -> None:
    records = load_records(ROOT / "results" / "v2-synth")
    verdicts = evaluate_claims(records, "synth")
    costs = settle_costs(verdicts, records, "synth", None)
    open_ = {v.claim.id for v in verdicts if v.sequential_outcome == "inconclusive"}
    assert {c.claim_id for c in costs} == open_ and open_
    keys = [c.sort_key() for c in costs]
    assert keys == sorted(keys)
    for c in costs:
        if c.runs_to_add is not None:
            assert c.runs_to_add > 0 and c.cpu_hours is not None and c.cpu_hours > 0
            assert c.gpu_hours is None  # no GPU record in that folder


def test_claim_lines_say_what_the_printed_tables_mean(tmp_path: Path) -> None:
    """After the tables, one line per claim with both rules; an open claim says what would
    settle it; single-seed rows say plainly that no ranking is resolved."""
    from analysis.settle import claim_lines
    from tests.test_analysis import FIXTURE

    records = load_records(FIXTURE)
    recipe = _fixture_recipe(records)
    lines = claim_lines(records, ["2", "3a"], recipe, None)
    text = "\n".join(lines)
    assert lines[1].startswith("claims of these tables")
    assert "t2_bga_beats_concat_sum: " in text and "c3a_lambda_quarter_cheaper: " in text
    assert "[inconclusive]" in text or "[supported]" in text
    one_seed = records[records["seed"] == 0]
    text = "\n".join(claim_lines(one_seed, ["2", "3a"], recipe, None))
    assert "at one seed per row no ranking among these rows is resolved" in text
    assert claim_lines(records, ["nope"], recipe, None) == []


def _fixture_recipe(records):
    import json

    from tests.test_analysis import recipe_from_json_dict

    path = records["path"].iloc[0]
    return recipe_from_json_dict(json.loads(Path(path).read_text())["recipe"])
