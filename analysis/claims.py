"""The BiSeNet V2 paper's ablation claims as data, checked against stored results.

Each claim names a paper table, the rows it compares (in ``rows``, the subject first) and
a kind. Accuracy is read from ``build_table`` (mean mIoU over seeds, in points), cost
from the measured multiply-adds (exact integers, so no tolerance).

The rule for accuracy (a coarse rule of thumb, not a significance test):

- ``margin(a, b)`` is the larger sample std (ddof=1) over seeds of the two rows; if
  either row has a single seed it is at least ``SINGLE_RUN_SPREAD_PTS`` = 1.0 point,
  the run-to-run spread of Cityscapes mIoU reported for reimplementations
  (../shared/paper/README.md). The paper's own numbers are single runs: margin 1.0.
- ``a`` beats ``b`` when ``mean(a) - mean(b) > margin``; ``b`` beats ``a`` when it is below
  ``-margin``; otherwise the difference is within the seeds' spread: *inconclusive*.

Kinds and verdicts ("not run" whenever a needed row has no ok record, or no MACs for a
cost claim):

- ``beats``: rows[0] beats every other row. Supported if it beats each one; contradicted
  if any other row beats it; else inconclusive.
- ``no_worse_cheaper``: rows[0] costs fewer MACs than rows[1] and is not beaten by it.
  Contradicted if it is not cheaper or is beaten; else supported (being within the
  spread *is* "no worse").
- ``argmax``: rows[0] is the most accurate of the rows. Compared with the best other row:
  supported if it beats it, contradicted if beaten, else inconclusive.
- ``monotone``: accuracy grows along the rows (ordered by ``field``). Contradicted if any
  step goes down by more than its margin; supported if the last row beats the first;
  else inconclusive.
- ``free_accuracy``: rows[0] has the same inference MACs and parameters as rows[1]
  (contradicted if not) and beats it (verdict as ``beats``).
- ``same_cost`` / ``cheaper`` / ``cost_monotone``: complexity only, from MACs (and
  inference parameters for ``same_cost``): rows[0] costs the same as / less than every
  other row; the cost strictly grows along the rows.

Every verdict is also computed on the paper's own numbers, by the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

import pandas as pd

from analysis.tables import as_recipe, build_table, pick_dataset, row_recipe_ids
from searchspace.recipes import Recipe
from searchspace.tables import get_table

SINGLE_RUN_SPREAD_PTS = 1.0
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


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: what it says, where, and which rows decide it."""

    id: str
    text: str
    table: str
    kind: Kind
    rows: tuple[str, ...]
    field: str | None = None  # the spec field a ``monotone`` claim orders its rows by
    source: str = ""

    def __post_init__(self) -> None:
        known = {r.row for r in get_table(self.table).rows}
        unknown = [r for r in self.rows if r not in known]
        if unknown or len(self.rows) < 2:
            raise ValueError(f"claim {self.id}: rows {unknown or self.rows} of table {self.table}")


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "t2_bga_beats_concat_sum",
        "Bilateral Guided Aggregation is more accurate than concatenation and summation",
        "2",
        "beats",
        ("bga", "concat", "sum"),
        source="Table 2; Sec. 4.1 (aggregation methods)",
    ),
    Claim(
        "t2_two_branches_beat_one",
        "The two-pathway model (fused by BGA) beats either branch alone",
        "2",
        "beats",
        ("bga", "detail_only", "semantic_only"),
        source="Table 2; Sec. 4.1 (individual pathways)",
    ),
    Claim(
        "t3a_lambda_quarter",
        "lambda = 1/4 keeps the accuracy of lambda = 1/2 at a lower cost",
        "3a",
        "no_worse_cheaper",
        ("lambda_1_4", "lambda_1_2"),
        source="Table 3a; Sec. 4.1 (channel capacity of the semantic branch)",
    ),
    Claim(
        "t3b_context_embedding",
        "The context embedding block adds accuracy",
        "3b",
        "beats",
        ("full", "no_context"),
        source="Table 3b; Sec. 4.1 (context embedding)",
    ),
    Claim(
        "t3c_expansion_6_best",
        "Expansion ratio 6 is the most accurate choice",
        "3c",
        "argmax",
        ("eps_6", "eps_1", "eps_2", "eps_4", "eps_8"),
        source="Table 3c; Sec. 4.1 (expansion ratio)",
    ),
    Claim(
        "t2_booster_free_accuracy",
        "The booster heads add accuracy at no inference cost",
        "2",
        "free_accuracy",
        ("bga_booster", "bga"),
        source="Table 2; Sec. 3.5 (booster training strategy)",
    ),
    Claim(
        "t4_booster_free_accuracy",
        "The chosen booster positions add accuracy at no inference cost",
        "4",
        "free_accuracy",
        ("s2_s3_s4_s5_4", "none"),
        source="Table 4",
    ),
    Claim(
        "t2_ohem",
        "OHEM adds accuracy on top of the booster",
        "2",
        "beats",
        ("bga_booster_ohem", "bga_booster"),
        source="Table 2",
    ),
    Claim(
        "t5a_wider",
        "A wider model (width multiplier alpha) is more accurate",
        "5a",
        "monotone",
        ("alpha_1_0", "alpha_1_25", "alpha_1_5", "alpha_1_75", "alpha_2_0"),
        field="width_mult",
        source="Table 5a; Sec. 4.2 (generalisation to large models)",
    ),
    Claim(
        "t5b_deeper",
        "A deeper model (depth multiplier d) is more accurate",
        "5b",
        "monotone",
        ("d_1", "d_2", "d_3", "d_4"),
        field="depth_mult",
        source="Table 5b; Sec. 4.2",
    ),
    Claim(
        "t6_large_beats_small",
        "BiSeNetV2-L is more accurate than BiSeNetV2",
        "6",
        "beats",
        ("ours_large", "ours_small"),
        source="Table 6",
    ),
    Claim(
        "c2_booster_zero_inference_macs",
        "Booster heads add no inference MACs or parameters",
        "2",
        "same_cost",
        ("bga_booster", "bga"),
        source="Table 2 (same GFLOPs); Sec. 3.5",
    ),
    Claim(
        "c4_booster_positions_zero_inference_macs",
        "No booster position changes the inference MACs or parameters",
        "4",
        "same_cost",
        (
            "none",
            "s2_s3_s4_s5_4_s5_5",
            "s2_s3_s4_s5_4",
            "s2_s3_s4",
            "s3_s4_s5_4_s5_5",
            "s4_s5_4_s5_5",
            "s5_4_s5_5",
        ),
        source="Table 4 (same GFLOPs)",
    ),
    Claim(
        "c3a_lambda_quarter_cheaper",
        "lambda = 1/4 costs fewer MACs than lambda = 1/2",
        "3a",
        "cheaper",
        ("lambda_1_4", "lambda_1_2"),
        source="Table 3a",
    ),
    Claim(
        "c2_bga_cheaper_than_concat",
        "BGA costs fewer MACs than concatenation",
        "2",
        "cheaper",
        ("bga", "concat"),
        source="Table 2",
    ),
    Claim(
        "c3c_expansion_cost_grows",
        "The cost grows with the expansion ratio",
        "3c",
        "cost_monotone",
        ("eps_1", "eps_2", "eps_4", "eps_6", "eps_8"),
        field="semantic.exp_ratio",
        source="Table 3c",
    ),
)


@dataclass(frozen=True)
class RowStats:
    """What a claim needs of one row: accuracy over seeds (points) and cost."""

    row: str
    n: int
    mean: float | None
    std: float | None
    cost: float | None  # MACs (measured, exact) or GMACs (paper, 2 decimals)
    params: int | None = None

    def describe(self) -> str:
        if self.mean is None:
            return f"{self.row}: not run"
        spread = f"±{self.std:.2f}" if self.std is not None else ""
        return f"{self.row} {self.mean:.2f}{spread} (n={self.n})"


@dataclass(frozen=True)
class Verdict:
    """A claim's outcome on the measured results and on the paper's own numbers."""

    claim: Claim
    outcome: Outcome
    detail: str  # the numbers behind the outcome, as text
    paper_outcome: Outcome
    paper_detail: str


def _f(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def margin(a: RowStats, b: RowStats) -> float:
    """The seeds' spread that a difference of means must exceed (see the module docstring)."""
    spreads = [s.std for s in (a, b) if s.n >= 2 and s.std is not None]
    if min(a.n, b.n) < 2:
        spreads.append(SINGLE_RUN_SPREAD_PTS)
    return max(spreads)


def compare(a: RowStats, b: RowStats) -> tuple[int, str]:
    """+1 if a beats b, -1 if b beats a, 0 if within the spread; with the numbers."""
    diff, m = a.mean - b.mean, margin(a, b)  # type: ignore[operator]
    sign = 1 if diff > m else -1 if diff < -m else 0
    rel = {1: f"> margin {m:.2f}", -1: f"< -margin {m:.2f}", 0: f"within ±{m:.2f}"}[sign]
    return sign, f"{a.describe()} vs {b.describe()}: {diff:+.2f} ({rel})"


def _combine(signs: Sequence[int]) -> Outcome:
    if any(s < 0 for s in signs):
        return "contradicted"
    return "supported" if all(s > 0 for s in signs) else "inconclusive"


def _cost(s: RowStats, paper: bool) -> str:
    if s.cost is None:
        return f"{s.row}: no MACs"
    gmacs = s.cost if paper else s.cost / 1e9
    params = f", {s.params:,} params" if s.params is not None else ""
    return f"{s.row} {gmacs:.2f} GMACs{params}"


def judge(claim: Claim, stats: Sequence[RowStats], paper: bool = False) -> tuple[Outcome, str]:
    """The outcome of ``claim`` given its rows' stats (in ``claim.rows`` order)."""
    a, others = stats[0], list(stats[1:])
    if claim.kind in COST_KINDS or claim.kind in ("no_worse_cheaper", "free_accuracy"):
        missing = [s.row for s in stats if s.cost is None]
        if missing:
            return "not run", f"no MACs for {', '.join(missing)}"
    if claim.kind not in COST_KINDS:
        missing = [s.row for s in stats if s.mean is None]
        if missing:
            return "not run", f"no ok result for {', '.join(missing)}"
    costs = "; ".join(_cost(s, paper) for s in stats)

    if claim.kind == "same_cost":
        same = all(
            o.cost == a.cost and (o.params is None or a.params is None or o.params == a.params)
            for o in others
        )
        return ("supported" if same else "contradicted"), costs
    if claim.kind == "cheaper":
        ok = all(a.cost < o.cost for o in others)  # type: ignore[operator]
        return ("supported" if ok else "contradicted"), costs
    if claim.kind == "cost_monotone":
        ok = all(p.cost < q.cost for p, q in pairwise(stats))  # type: ignore[operator]
        return ("supported" if ok else "contradicted"), costs

    if claim.kind == "beats":
        results = [compare(a, o) for o in others]
        return _combine([s for s, _ in results]), "; ".join(t for _, t in results)
    if claim.kind == "no_worse_cheaper":
        b = others[0]
        sign, text = compare(a, b)
        if not a.cost < b.cost:  # type: ignore[operator]
            return "contradicted", f"not cheaper: {costs}; {text}"
        return ("contradicted" if sign < 0 else "supported"), f"{text}; {costs}"
    if claim.kind == "free_accuracy":
        b = others[0]
        same_params = a.params is None or b.params is None or a.params == b.params
        if a.cost != b.cost or not same_params:
            return "contradicted", f"inference cost differs: {costs}"
        sign, text = compare(a, b)
        return _combine([sign]), f"{text}; same cost: {costs}"
    if claim.kind == "argmax":
        best = max(others, key=lambda s: s.mean)  # type: ignore[arg-type,return-value]
        sign, text = compare(a, best)
        return _combine([sign]), f"best other row: {text}"
    if claim.kind == "monotone":
        steps = [compare(q, p) for p, q in pairwise(stats)]
        if any(s < 0 for s, _ in steps):
            down = [t for s, t in steps if s < 0]
            return "contradicted", "goes down: " + "; ".join(down)
        sign, text = compare(stats[-1], a)
        return ("supported" if sign > 0 else "inconclusive"), f"last vs first: {text}"
    raise ValueError(f"unknown claim kind {claim.kind!r}")


def _row_stats(table: pd.DataFrame, paper: bool) -> dict[str, RowStats]:
    out = {}
    for rec in table.to_dict("records"):
        if paper:
            mean = _f(rec["miou_paper_pct"])
            out[rec["row"]] = RowStats(
                rec["row"], 1 if mean is not None else 0, mean, None, _f(rec["gmacs_paper"])
            )
            continue
        n = int(rec["n_seeds"]) if _f(rec["n_seeds"]) is not None else 0
        macs, params = _f(rec["macs"]), _f(rec["params"])
        out[rec["row"]] = RowStats(
            rec["row"],
            n,
            _f(rec["miou_pct"]) if n else None,
            _f(rec["miou_std_pct"]),
            int(macs) if macs is not None else None,
            int(params) if params is not None else None,
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
) -> list[Verdict]:
    """Judge each claim on the records (frame of ``load_records``) and on the paper's numbers."""
    claims = list(claims)
    base = as_recipe(recipe)
    if dataset_id is None:
        dataset_id = pick_dataset(records, claim_recipe_ids(base, claims))
    tables: dict[str, pd.DataFrame] = {}
    verdicts = []
    for claim in claims:
        if claim.table not in tables:
            tables[claim.table] = build_table(claim.table, records, base, dataset_id)
        measured = _row_stats(tables[claim.table], paper=False)
        from_paper = _row_stats(tables[claim.table], paper=True)
        stats = [measured[r] for r in claim.rows]
        outcome, detail = judge(claim, stats)
        paper_outcome, paper_detail = judge(claim, [from_paper[r] for r in claim.rows], paper=True)
        verdicts.append(Verdict(claim, outcome, detail, paper_outcome, paper_detail))
    return verdicts


def verdicts_frame(verdicts: Iterable[Verdict]) -> pd.DataFrame:
    """One row per claim: id, table, kind, text, outcome, detail, paper_outcome, paper_detail."""
    rows = [
        {
            "id": v.claim.id,
            "table": v.claim.table,
            "kind": v.claim.kind,
            "text": v.claim.text,
            "outcome": v.outcome,
            "detail": v.detail,
            "paper_outcome": v.paper_outcome,
            "paper_detail": v.paper_detail,
            "source": v.claim.source,
        }
        for v in verdicts
    ]
    columns = [
        "id",
        "table",
        "kind",
        "text",
        "outcome",
        "detail",
        "paper_outcome",
        "paper_detail",
        "source",
    ]
    return pd.DataFrame(rows, columns=columns)
