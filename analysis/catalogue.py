"""The claims to judge: the papers' catalogue and those of a user's loaded tables.

The claims are data in the table files (``[[claims]]`` of ``searchspace/paper/tables/*.toml``
and of a user's file, see ``searchspace.table_files``); this module turns them into the
``Claim`` objects ``analysis.claims`` judges. ``CLAIMS`` is the papers' catalogue, in table
order; ``all_claims()`` adds the claims of the user tables loaded in this process (named on
the command line, or kept in a results folder), so that the report judges them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from searchspace.errors import SpecError
from searchspace.table_files import (
    CLAIM_KINDS,
    ClaimEntry,
    TableFile,
    loaded_table_files,
    shipped_table_files,
)
from searchspace.tables import get_table

if TYPE_CHECKING:
    from analysis.claims import Kind

# "no worse" means within 1 point, the run-to-run spread (analysis.claims.PAPER_SPREAD);
# the same number as analysis.claims.DEFAULT_MARGIN_PTS (a test keeps them equal)
DEFAULT_MARGIN_PTS = 1.0


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
    margin: float = DEFAULT_MARGIN_PTS  # for no_worse_cheaper: "no worse" within this

    def __post_init__(self) -> None:
        if self.kind not in CLAIM_KINDS:
            raise SpecError(f"claim {self.id}: kind {self.kind!r} (kinds: {CLAIM_KINDS})")
        known = {r.row for r in get_table(self.table).rows}
        unknown = [r for r in self.rows if r not in known]
        if unknown or len(self.rows) < 2:
            raise SpecError(f"claim {self.id}: rows {unknown or self.rows} of table {self.table}")

    @classmethod
    def from_entry(cls, entry: ClaimEntry) -> Claim:
        margin = DEFAULT_MARGIN_PTS if entry.margin is None else entry.margin
        return cls(
            entry.id,
            entry.text,
            entry.table,
            entry.kind,  # type: ignore[arg-type]  # checked against CLAIM_KINDS on load
            entry.rows,
            field=entry.field,
            source=entry.source,
            margin=margin,
        )


def claims_of(table_file: TableFile) -> tuple[Claim, ...]:
    """The claims a table file states (its table must be known: shipped or loaded)."""
    return tuple(Claim.from_entry(c) for c in table_file.claims)


#: The papers' claims, from the shipped table files.
CLAIMS: tuple[Claim, ...] = tuple(c for tf in shipped_table_files() for c in claims_of(tf))


def all_claims() -> tuple[Claim, ...]:
    """The papers' claims, then those of every user table loaded in this process."""
    return CLAIMS + tuple(c for tf in loaded_table_files() for c in claims_of(tf))
