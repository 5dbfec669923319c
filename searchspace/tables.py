"""The papers' ablation tables: each row names its spec and the paper's numbers.

The tables are data, one TOML file each (``searchspace/paper/tables/<id>.toml``, read by
``searchspace.table_files``, which documents the format): a row is the table's base spec
with a few fields changed, plus any recipe changes the row implies (OHEM is a loss, not an
architecture). The reported numbers stay in ``searchspace/paper/bisenetv2_tables.csv`` and
``bisenetv1_tables.csv``, which the files name, so that there is one copy of them; all of it
is package data, read through importlib.resources, so an installed wheel finds it. V2
tables keep the paper's names ("2", "3a" ...); V1 tables are prefixed ("v1-3", "v1-4").
``table_names()`` and ``all_tables()`` list the V2 tables unless asked (``paper="v1"`` or
``"all"``), because their callers compare rows at V2's 512x1024. A user's table file,
once loaded, is found by ``get_table`` like these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Literal

from searchspace.errors import SpecError
from searchspace.presets import ArchSpec
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
    # "imagenet": the paper initialised this row's backbone from ImageNet weights
    paper_init: str | None = None

    @property
    def source(self) -> str:
        if not self.paper:  # a user's table file that names no paper
            return f"table {self.table}, row {self.row}"
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


# Not a paper table: every named preset as one row, so that ``profile --table presets`` and
# ``ablate --table presets`` compare them (the peers' forms beside the paper's) like any table.
PRESET_TABLE = "presets"


@cache
def _preset_table() -> PaperTable:
    from searchspace.presets import PRESETS

    rows = tuple(
        PaperRow(
            table=PRESET_TABLE,
            row=name,
            setting=spec.to_string(),
            spec=spec,
            paper=PRESET_TABLE,
            note="a named preset; no paper row",
        )
        for name, spec in PRESETS.items()
    )
    return PaperTable(PRESET_TABLE, "Every named preset at 512x1024 (no paper numbers)", rows)


def get_table(table: str) -> PaperTable:
    """A paper table (``searchspace/paper/tables/<id>.toml``), the presets table, or a
    user's table loaded by ``searchspace.table_files.use_table_file``."""
    if table == PRESET_TABLE:
        return _preset_table()
    from searchspace import table_files  # it builds this module's rows: imported late

    found = table_files.loaded_table(table) or table_files.shipped_table(table)
    if found is None:
        loaded = [tf.id for tf in table_files.loaded_table_files()]
        known = ", ".join((*table_names("all"), PRESET_TABLE, *loaded))
        raise SpecError(f"unknown table {table!r} (known: {known}; or a .toml table file)")
    return found.table


def table_names(paper: Paper = "v2") -> tuple[str, ...]:
    """Table ids of one paper ("v2", the default, or "v1") or of both ("all")."""
    if paper not in ("v2", "v1", "all"):
        raise SpecError(f"paper={paper!r}: expected 'v2', 'v1' or 'all'")
    from searchspace.table_files import shipped_table_files

    ids = [tf.id for tf in shipped_table_files()]
    v2 = tuple(t for t in ids if not t.startswith(V1_PREFIX))
    v1 = tuple(t for t in ids if t.startswith(V1_PREFIX))
    return {"v2": v2, "v1": v1, "all": v2 + v1}[paper]


def all_tables(paper: Paper = "v2") -> tuple[PaperTable, ...]:
    return tuple(get_table(t) for t in table_names(paper))
