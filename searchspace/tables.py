"""The V2 paper's ablation tables as data: each row names its spec and the paper's numbers.

A row is the table's base spec with a few fields replaced, plus any recipe changes the
row implies (OHEM is a loss, not an architecture). The reported numbers are read from
``results/paper/bisenetv2_tables.csv`` so that there is one copy of them.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from searchspace.errors import SpecError
from searchspace.presets import PAPER_BOOSTERS, PRESETS
from searchspace.v2 import BiSeNetV2Spec

PAPER_DIR = Path(__file__).resolve().parent.parent / "results" / "paper"
V2_CSV = PAPER_DIR / "bisenetv2_tables.csv"
V2_INPUT_HW = (512, 1024)


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: the spec that reproduces it and what the paper reports."""

    table: str
    row: str
    setting: str
    spec: BiSeNetV2Spec | None
    recipe_changes: Mapping[str, Any] = field(default_factory=dict)
    paper_miou: float | None = None
    paper_gmacs: float | None = None
    input_hw: tuple[int, int] = V2_INPUT_HW
    confidence: str = ""
    note: str = ""
    unsupported: str | None = None  # why the toolkit cannot run this row

    @property
    def source(self) -> str:
        return f"BiSeNetV2 paper, Table {self.table}, row {self.row}"

    @property
    def key(self) -> str:
        return f"{self.table}/{self.row}"


@dataclass(frozen=True)
class PaperTable:
    table: str
    title: str
    rows: tuple[PaperRow, ...]

    def row(self, name: str) -> PaperRow:
        for r in self.rows:
            if r.row == name:
                return r
        known = ", ".join(r.row for r in self.rows)
        raise SpecError(f"table {self.table} has no row {name!r} (rows: {known})")

    @property
    def runnable(self) -> tuple[PaperRow, ...]:
        return tuple(r for r in self.rows if r.spec is not None)


# Tables 2 and 3 ablate the model without booster heads (Table 2's "bga" row is 69.67).
BASE = PRESETS["bisenetv2"].replace(booster_positions=())
FULL = PRESETS["bisenetv2"]  # with the chosen booster heads
OHEM = {"loss": "ohem"}
_sem = "semantic."

# table -> (title, {row: (base spec, spec changes, recipe changes) or unsupported reason})
_ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "2": (
        "Aggregation: detail / semantic branch alone, sum, concat, BGA, booster, OHEM",
        {
            "detail_only": (BASE, {"aggregation": "detail_only"}, {}),
            "semantic_only": (BASE, {"aggregation": "semantic_only"}, {}),
            "sum": (BASE, {"aggregation": "sum"}, {}),
            "concat": (BASE, {"aggregation": "concat"}, {}),
            "bga": (BASE, {}, {}),
            "bga_booster": (FULL, {}, {}),
            "bga_booster_ohem": (FULL, {}, OHEM),
        },
    ),
    "3a": (
        "Semantic channel ratio lambda",
        {
            "detail_only": (BASE, {"aggregation": "detail_only"}, {}),
            "lambda_1_2": (BASE, {_sem + "ratio": 1 / 2}, {}),
            "lambda_1_4": (BASE, {}, {}),
            "lambda_1_8": (BASE, {_sem + "ratio": 1 / 8}, {}),
            "lambda_1_16": (BASE, {_sem + "ratio": 1 / 16}, {}),
        },
    ),
    "3b": (
        "GE layer design",
        {
            "full": (BASE, {}, {}),
            "no_context": (BASE, {_sem + "context_embedding": False}, {}),
            "dw5x5": (BASE, {_sem + "ge_down_dw": "5x5"}, {}),
            "gather_1x1": (BASE, {_sem + "ge_gather_kernel": 1}, {}),
        },
    ),
    "3c": (
        "GE expansion ratio",
        {
            "detail_only": (BASE, {"aggregation": "detail_only"}, {}),
            **{f"eps_{e}": (BASE, {_sem + "exp_ratio": e}, {}) for e in (1, 2, 4, 6, 8)},
        },
    ),
    "4": (
        "Booster head positions (training only; inference cost unchanged)",
        {
            "none": (BASE, {}, {}),
            "s2_s3_s4_s5_4_s5_5": (FULL, {"booster_positions": (*PAPER_BOOSTERS, "s5_5")}, {}),
            "s2_s3_s4_s5_4": (FULL, {}, {}),
            "s2_s3_s4": (FULL, {"booster_positions": ("stem", "s3", "s4")}, {}),
            "s3_s4_s5_4_s5_5": (FULL, {"booster_positions": ("s3", "s4", "s5_4", "s5_5")}, {}),
            "s4_s5_4_s5_5": (FULL, {"booster_positions": ("s4", "s5_4", "s5_5")}, {}),
            "s5_4_s5_5": (FULL, {"booster_positions": ("s5_4", "s5_5")}, {}),
            "s2_s3_s4_s5_4_ohem": (FULL, {}, OHEM),
        },
    ),
    "5a": (
        "Width multiplier alpha (booster + OHEM)",
        {
            f"alpha_{str(a).replace('.', '_')}": (FULL, {"width_mult": a}, OHEM)
            for a in (1.0, 1.25, 1.5, 1.75, 2.0)
        },
    ),
    "5b": (
        "Depth multiplier d (booster + OHEM)",
        {f"d_{d}": (FULL, {"depth_mult": float(d)}, OHEM) for d in (1, 2, 3, 4)},
    ),
    "6": (
        "BiSeNetV2 and BiSeNetV2-L, and ImageNet backbones as semantic branch",
        {
            "ours_small": (FULL, {}, OHEM),
            "ours_large": (PRESETS["bisenetv2_l"], {}, OHEM),
            "shufflenetv2_1_5x": "needs ImageNet-pretrained ShuffleNetV2 weights, which "
            "cannot be downloaded here, and a backbone the toolkit does not build",
            "mobilenetv2": "needs ImageNet-pretrained MobileNetV2 weights, which cannot be "
            "downloaded here, and a backbone the toolkit does not build",
            "resnet18": "needs ImageNet-pretrained ResNet-18 weights, which cannot be "
            "downloaded here, and a backbone the toolkit does not build",
        },
    ),
}


def _float(text: str) -> float | None:
    return float(text) if text.strip() else None


@cache
def _paper_numbers() -> dict[tuple[str, str], dict[str, str]]:
    if not V2_CSV.is_file():
        raise SpecError(f"{V2_CSV}: the paper's numbers are missing from results/paper")
    with V2_CSV.open(newline="") as fh:
        return {(r["table"], r["row"]): r for r in csv.DictReader(fh)}


@cache
def get_table(table: str) -> PaperTable:
    if table not in _ROWS:
        raise SpecError(f"unknown table {table!r} (known: {', '.join(_ROWS)})")
    title, rows = _ROWS[table]
    numbers = _paper_numbers()
    out = []
    for name, definition in rows.items():
        reported = numbers.get((table, name))
        if reported is None:
            raise SpecError(f"table {table} row {name}: not in {V2_CSV.name}")
        common = dict(
            table=table,
            row=name,
            setting=reported["setting"],
            paper_miou=_float(reported["miou_val"]),
            paper_gmacs=_float(reported["gmacs_512x1024"]),
            confidence=reported["confidence"],
            note=reported["note"],
        )
        if isinstance(definition, str):
            out.append(PaperRow(spec=None, unsupported=definition, **common))
            continue
        base, changes, recipe = definition
        out.append(PaperRow(spec=base.replace(**changes), recipe_changes=recipe, **common))
    return PaperTable(table=table, title=title, rows=tuple(out))


def table_names() -> tuple[str, ...]:
    return tuple(_ROWS)


def all_tables() -> tuple[PaperTable, ...]:
    return tuple(get_table(t) for t in _ROWS)
