"""The papers' ablation tables as data: each row names its spec and the paper's numbers.

A row is the table's base spec with a few fields replaced, plus any recipe changes the
row implies (OHEM is a loss, not an architecture). The reported numbers are read from
``searchspace/paper/bisenetv2_tables.csv`` and ``bisenetv1_tables.csv`` (package data, read
through importlib.resources, so an installed wheel finds them) so that there is one copy of
them. V2 tables keep the paper's names ("2", "3a" ...); V1 tables are prefixed
("v1-3", "v1-4"). ``table_names()`` and ``all_tables()`` list the V2 tables unless asked
(``paper="v1"`` or ``"all"``), because their callers compare rows at V2's 512x1024.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Literal

from searchspace.errors import SpecError
from searchspace.presets import PAPER_BOOSTERS, PRESETS, V1_PRESETS, ArchSpec
from searchspace.recipes import Recipe

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

#: The papers' numbers, shipped inside the package (a ``pathlib.Path`` for a normal install).
PAPER_DIR: Traversable = files("searchspace") / "paper"
V2_CSV = PAPER_DIR / "bisenetv2_tables.csv"
V1_CSV = PAPER_DIR / "bisenetv1_tables.csv"
V2_INPUT_HW = (512, 1024)
V1_INPUT_HW = (360, 640)  # V1 Table 4 counts at 640x360 (H=360, W=640)
V1_PREFIX = "v1-"

Paper = Literal["v2", "v1", "all"]


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: the spec that reproduces it and what the paper reports."""

    table: str
    row: str
    setting: str
    spec: ArchSpec | None
    recipe_changes: Mapping[str, Any] = field(default_factory=dict)
    paper_miou: float | None = None
    paper_gmacs: float | None = None
    input_hw: tuple[int, int] = V2_INPUT_HW
    confidence: str = ""
    note: str = ""
    unsupported: str | None = None  # why the toolkit cannot run this row
    paper: str = "BiSeNetV2"

    @property
    def source(self) -> str:
        number = self.table.removeprefix(V1_PREFIX)
        return f"{self.paper} paper, Table {number}, row {self.row}"

    @property
    def key(self) -> str:
        return f"{self.table}/{self.row}"

    def run_for(self, recipe: Recipe, num_classes: int) -> tuple[ArchSpec, Recipe]:
        """The spec and recipe this row runs with on a dataset of ``num_classes`` classes.

        The one place that adapts a row to a dataset: ablation plans with it, search
        seeds presets with it and the table builder finds a row's records with it, so a
        folder dataset of 5 classes trains and is matched under the same spec_id.
        """
        if self.spec is None:
            raise SpecError(f"table {self.table} row {self.row}: {self.unsupported}")
        spec = for_dataset(self.spec, num_classes)
        return spec, recipe.replace(**self.recipe_changes) if self.recipe_changes else recipe


def for_dataset(spec: ArchSpec, num_classes: int) -> ArchSpec:
    """``spec`` with its classifier sized for a dataset (unchanged when it already is)."""
    return spec if spec.num_classes == num_classes else spec.replace(num_classes=num_classes)


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


# --- BiSeNet V1 (ECCV 2018) ----------------------------------------------------------

V1_FULL = V1_PRESETS["bisenetv1_x39"]
# Table 3 adds global pooling (GP) and the ARMs to a context path that has neither; the
# ARM rows keep the lateral conv (widths must match for the U-shape sum), see v1.py.
_NO_GP_ARM = {"context.arm": False, "context.global_context": False}

_V1_ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "v1-3": (
        "Component ablation on Xception39: spatial path, FFM, global pooling (GP), ARM",
        {
            "cp": (V1_FULL, {**_NO_GP_ARM, "fusion": "cp_only"}, {}),
            "cp_sp_sum": (V1_FULL, {**_NO_GP_ARM, "fusion": "sum"}, {}),
            "cp_sp_ffm": (V1_FULL, _NO_GP_ARM, {}),
            "cp_sp_ffm_gp": (V1_FULL, {"context.arm": False}, {}),
            "cp_sp_ffm_arm": (V1_FULL, {"context.global_context": False}, {}),
            "cp_sp_ffm_gp_arm": (V1_FULL, {}, {}),
        },
    ),
    "v1-4": (
        "Complexity at 640x360 (the paper's 'Parameters' column is fp32 MiB, kept as a note)",
        {
            "xception39": (V1_FULL, {}, {}),
            "res18": (V1_PRESETS["bisenetv1_r18"], {}, {}),
        },
    ),
}


@dataclass(frozen=True)
class _Source:
    """Where one paper's numbers live and how its CSV names things."""

    paper: str
    csv_path: Traversable
    gmacs_column: str
    input_hw: tuple[int, int]
    prefix: str = ""


_V2_SOURCE = _Source("BiSeNetV2", V2_CSV, "gmacs_512x1024", V2_INPUT_HW)
_V1_SOURCE = _Source("BiSeNetV1", V1_CSV, "gmacs", V1_INPUT_HW, V1_PREFIX)


def _float(text: str) -> float | None:
    return float(text) if text.strip() else None


def _input_hw(wh: str | None, default: tuple[int, int]) -> tuple[int, int]:
    """The CSVs write sizes as W x H ("640x360"); rows store (H, W) like tensors."""
    if not wh or not wh.strip():
        return default
    w, _, h = wh.strip().partition("x")
    return int(h), int(w)


@cache
def _paper_numbers(csv_path: Traversable = V2_CSV) -> dict[tuple[str, str], dict[str, str]]:
    if not csv_path.is_file():
        raise SpecError(
            f"{csv_path}: the paper's numbers are missing (package data searchspace/paper)"
        )
    with csv_path.open("r", newline="", encoding="utf-8") as fh:
        return {(r["table"], r["row"]): r for r in csv.DictReader(fh)}


# Not a paper table: every named preset as one row, so that ``profile --table presets`` and
# ``ablate --table presets`` compare them (the peers' forms beside the paper's) like any table.
PRESET_TABLE = "presets"


def _preset_table() -> PaperTable:
    from searchspace.presets import ALL_PRESETS

    rows = tuple(
        PaperRow(
            table=PRESET_TABLE,
            row=name,
            setting=spec.to_string(),
            spec=spec,
            paper=PRESET_TABLE,
            note="a named preset; no paper row",
        )
        for name, spec in ALL_PRESETS.items()
    )
    return PaperTable(PRESET_TABLE, "Every named preset at 512x1024 (no paper numbers)", rows)


@cache
def get_table(table: str) -> PaperTable:
    if table == PRESET_TABLE:
        return _preset_table()
    if table in _ROWS:
        source, (title, rows) = _V2_SOURCE, _ROWS[table]
    elif table in _V1_ROWS:
        source, (title, rows) = _V1_SOURCE, _V1_ROWS[table]
    else:
        known = ", ".join((*_ROWS, *_V1_ROWS, PRESET_TABLE))
        raise SpecError(f"unknown table {table!r} (known: {known})")
    numbers = _paper_numbers(source.csv_path)
    csv_table = table.removeprefix(source.prefix)
    out = []
    for name, definition in rows.items():
        reported = numbers.get((csv_table, name))
        if reported is None:
            raise SpecError(f"table {table} row {name}: not in {source.csv_path.name}")
        common = dict(
            table=table,
            row=name,
            setting=reported["setting"],
            paper_miou=_float(reported["miou_val"]),
            paper_gmacs=_float(reported[source.gmacs_column]),
            input_hw=_input_hw(reported.get("input_wh"), source.input_hw),
            confidence=reported["confidence"],
            note=reported["note"],
            paper=source.paper,
        )
        if isinstance(definition, str):
            out.append(PaperRow(spec=None, unsupported=definition, **common))
            continue
        base, changes, recipe = definition
        out.append(PaperRow(spec=base.replace(**changes), recipe_changes=recipe, **common))
    return PaperTable(table=table, title=title, rows=tuple(out))


def table_names(paper: Paper = "v2") -> tuple[str, ...]:
    """Table ids of one paper ("v2", the default, or "v1") or of both ("all")."""
    if paper not in ("v2", "v1", "all"):
        raise SpecError(f"paper={paper!r}: expected 'v2', 'v1' or 'all'")
    v2, v1 = tuple(_ROWS), tuple(_V1_ROWS)
    return {"v2": v2, "v1": v1, "all": v2 + v1}[paper]


def all_tables(paper: Paper = "v2") -> tuple[PaperTable, ...]:
    return tuple(get_table(t) for t in table_names(paper))
