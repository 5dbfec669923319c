"""Planning an ablation: which runs a set of paper tables asks for, each once.

A table is a paper table's id or a user's ``.toml`` table file (``searchspace.table_files``),
which is kept in the results folder under its content hash before anything runs.

A run is keyed by (spec_id, recipe_id, dataset_id, seed); rows of different tables that
name the same spec and recipe share one run (Table 2's "bga" is Table 3a's "lambda_1_4").
A row is adapted to the dataset by ``PaperRow.run_for`` (its classifier sized for the
dataset's classes, its recipe changes applied), the same function the table builder
matches records with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from runners.data.source import DataSource
from runners.pretrained import NONE as NO_PRETRAINING
from runners.pretrained import Pretraining
from runners.runs import PlannedRun
from searchspace.errors import StoreError, UsageError
from searchspace.recipes import Recipe
from searchspace.records import RecordKey
from searchspace.table_files import keep_copy, loaded_table, resolve_table_args
from searchspace.tables import PaperRow, PaperTable, get_table


def resolve_tables(names: Sequence[str]) -> list[PaperTable]:
    """Table ids and ``.toml`` table files (loaded, then known by their id), each once."""
    return [get_table(table_id) for table_id, _ in resolve_table_args(names)]


def keep_table_files(tables: Sequence[PaperTable], results_dir: Path) -> dict[str, Path]:
    """Copy the user tables among ``tables`` into the results folder (by content hash), so
    that the report and the comparison can rebuild them and their claims: id -> copy."""
    kept = {}
    for table in tables:
        tf = loaded_table(table.table)
        if tf is None:
            continue
        try:
            kept[table.table] = keep_copy(tf, results_dir)
        except OSError as exc:
            raise StoreError(
                f"cannot keep table file {tf.origin} in {results_dir}: {exc.strerror or exc}"
            ) from None
    return kept


def select_rows(table: PaperTable, rows: Sequence[str] | None) -> list[PaperRow]:
    """The table's rows, or the named ones (unknown names are an error, not a no-op)."""
    if not rows:
        return list(table.rows)
    return [table.row(name) for name in rows]


def plan_runs(
    tables: Sequence[PaperTable],
    rows: Sequence[str] | None,
    recipe: Recipe,
    data: DataSource,
    seeds: int,
    pretraining: Pretraining = NO_PRETRAINING,
) -> tuple[list[PlannedRun], list[PaperRow]]:
    """(runs to do, in table order and deduplicated; rows the toolkit cannot run).
    ``pretraining``: the rows whose backbone has a file start from it."""
    if seeds < 1:
        raise UsageError(f"--seeds {seeds}: must be >= 1")
    planned: dict[RecordKey, PlannedRun] = {}
    unsupported: list[PaperRow] = []
    for table in tables:
        chosen = select_rows(table, rows if len(tables) == 1 else None)
        for row in chosen:
            if row.spec is None:
                unsupported.append(row)
                continue
            spec, row_recipe = row.run_for(recipe, data.num_classes)
            base_id = row_recipe.recipe_id
            row_recipe, weights = pretraining.apply(spec, row_recipe)
            ids = (spec.spec_id, row_recipe.recipe_id, data.data_id)  # hashed once per row
            base = base_id if weights is not None else None
            for seed in range(seeds):
                run = PlannedRun(RecordKey(*ids, seed), spec, row_recipe, seed, [], weights, base)
                planned.setdefault(run.key, run).rows.append(row)
    return list(planned.values()), unsupported
