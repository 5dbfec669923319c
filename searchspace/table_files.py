"""Tables and their claims as TOML files: the papers' (shipped) and a user's own.

One file holds one table: its rows (each a spec, or why the toolkit cannot run it) and the
claims its rows decide. The papers' tables ship as package data
(``searchspace/paper/tables/*.toml``); a user's file runs like them
(``runners.ablate --table my.toml``) and is copied into the results folder under its
content hash (``<results>/tables/<sha1-12>.toml``), so that the report, the comparison and
the profiler can rebuild the table and its claims from the folder alone. A mistake in a
file is one line (``SpecError``) naming the file and the table, row, claim or field.

The schema (a key not listed is an error)::

    id = "mine"                        # letters, digits, _ . - (no commas: ids are joined by them)
    title = "What the table asks"
    paper = "BiSeNetV2"                # optional: where the rows come from
    input_size = [512, 1024]           # optional, [H, W]: the input the paper counted MACs at
    base = "bisenetv2"                 # optional: the spec of a row that names none
    numbers = { csv = "bisenetv2_tables.csv", table = "3a" }  # optional: the paper's numbers
                                       # from a CSV of searchspace/paper (rows matched by name)

    [[rows]]
    name = "lambda_1_2"
    spec = "bisenetv2:booster_positions=none"  # a preset or compact spec (default: base)
    changes = "semantic.ratio=1/2"     # optional: spec fields changed on top of spec or base
    recipe = "loss=ohem"               # optional: recipe fields the row changes
    miou = 69.66                       # optional paper numbers (val mIoU %, GMACs), setting,
    gmacs = 25.84                      # note, confidence (not with ``numbers``: one copy)
    # or instead of spec/changes/recipe: unsupported = "why the toolkit cannot run it"
    paper_init = "imagenet"            # optional: the paper started this row's backbone
                                       # from ImageNet weights (tables then say whether
                                       # the measured runs did: --pretrained)

    [[claims]]
    id = "t3a_lambda_quarter"          # unique across the catalogue and loaded tables
    text = "lambda = 1/4 keeps the accuracy of lambda = 1/2 at a lower cost"
    kind = "no_worse_cheaper"          # one of CLAIM_KINDS (analysis/claims.py judges them)
    rows = ["lambda_1_4", "lambda_1_2"]  # the subject first
    field = "semantic.ratio"           # optional: the spec field the rows are ordered by
    source = "Table 3a"                # optional
    margin = 1.0                       # optional, points (no_worse_cheaper)

Tables named by ``get_table`` must be known in the process: the shipped ones always, a
user's once ``use_table_file`` (or ``use_stored_table_files``) has loaded it. The table
builder, the claims and the profiler look tables up by id, so a loaded file is remembered
here rather than passed down every call.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from searchspace.atomic import write_text
from searchspace.errors import SpecError, UsageError
from searchspace.presets import ArchSpec, parse_spec
from searchspace.recipes import Recipe
from searchspace.serialize import parse_overrides
from searchspace.tables import (
    PAPER_DIR,
    PRESET_TABLE,
    V2_INPUT_HW,
    PaperRow,
    PaperTable,
    get_table,
)
from searchspace.v1 import BiSeNetV1Spec, parse_v1_overrides
from searchspace.v2 import parse_v2_overrides

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

#: The papers' tables, one file each; their order (by file name) is the tables' order.
SHIPPED_DIR: Traversable = PAPER_DIR / "tables"
#: Where a results folder keeps the table files its runs came from.
STORED_DIRNAME = "tables"
SUFFIX = ".toml"
#: The kinds ``analysis.claims.judge`` knows (its ``Kind``; a test keeps the two equal).
CLAIM_KINDS = (
    "beats",
    "no_worse_cheaper",
    "argmax",
    "monotone",
    "free_accuracy",
    "same_cost",
    "cheaper",
    "cost_monotone",
)

_TABLE_KEYS = ("id", "title", "paper", "input_size", "base", "numbers", "rows", "claims")
_ROW_KEYS = (
    "name",
    "spec",
    "changes",
    "recipe",
    "miou",
    "gmacs",
    "setting",
    "note",
    "confidence",
    "unsupported",
    "paper_init",
)
# how the paper initialised a row (absent: from scratch, as V2's own rows)
PAPER_INITS = ("imagenet",)
_NUMBER_KEYS = ("setting", "miou", "gmacs", "note", "confidence")
_CLAIM_KEYS = ("id", "text", "kind", "rows", "field", "source", "margin")
_NUMBERS_KEYS = ("csv", "table")
# ids and row names travel in comma-joined flags, file names and "table/row" keys
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_RECIPE_FIELDS = {f: f for f in Recipe.__dataclass_fields__}


@dataclass(frozen=True)
class ClaimEntry:
    """A claim as a table file states it (``analysis.catalogue.Claim`` is built from it)."""

    id: str
    text: str
    table: str
    kind: str
    rows: tuple[str, ...]
    field: str | None = None
    source: str = ""
    margin: float | None = None  # None: the judge's default margin


@dataclass(frozen=True)
class TableFile:
    """One parsed table file: the table, its claims, and the text they came from."""

    origin: str  # the path it was read from, for messages
    text: str
    table: PaperTable
    claims: tuple[ClaimEntry, ...]

    @property
    def id(self) -> str:
        return self.table.table

    @property
    def digest(self) -> str:
        """Names the copy in a results folder: same text, same file."""
        return hashlib.sha1(self.text.encode("utf-8")).hexdigest()[:12]


# --- parsing ------------------------------------------------------------------------------


def _fail(where: str, message: str) -> SpecError:
    return SpecError(" ".join(f"{where}: {message}".split()))


def _unknown_keys(data: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for key in data:
        if key not in known:
            raise _fail(where, f"unknown field {key!r} (fields: {', '.join(known)})")


def _text(data: Mapping[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise _fail(where, f"missing field {key!r}")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise _fail(where, f"{key} = {value!r}: expected a non-empty string")
    return value


def _name(data: Mapping[str, Any], key: str, where: str) -> str:
    value = _text(data, key, where, required=True)
    assert value is not None
    if not _NAME.fullmatch(value) or value.endswith(SUFFIX):
        raise _fail(
            where,
            f"{key} = {value!r}: use letters, digits, '_', '.', '-' (first a letter or digit)",
        )
    return value


def _number(value: Any, key: str, where: str, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0) or (not positive and value < 0):
        sign = "a positive" if positive else "a non-negative"
        raise _fail(where, f"{key} = {value!r}: expected {sign} number")
    return float(value)


def _spec(text: str, where: str, key: str) -> ArchSpec:
    if text.strip().endswith(".json"):
        raise _fail(
            where,
            f"{key} = {text!r}: a spec file is not kept with the table; write the spec string",
        )
    try:
        return parse_spec(text)
    except SpecError as exc:
        raise _fail(where, f"{key} = {text!r}: {exc}") from None


def _changed(spec: ArchSpec, text: str, where: str) -> ArchSpec:
    parse = parse_v1_overrides if isinstance(spec, BiSeNetV1Spec) else parse_v2_overrides
    try:
        return spec.replace(**parse(text))
    except SpecError as exc:
        raise _fail(where, f"changes = {text!r}: {exc}") from None


def _recipe_changes(text: str, where: str) -> dict[str, Any]:
    try:
        changes = parse_overrides(text, Recipe, _RECIPE_FIELDS, what="recipe field")
        Recipe().replace(**changes)  # values checked now, not when the row runs
    except SpecError as exc:
        raise _fail(where, f"recipe = {text!r}: {exc}") from None
    return changes


def _input_size(value: Any, where: str) -> tuple[int, int]:
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        raise _fail(where, f"input_size = {value!r}: expected [H, W], two positive integers")
    return value[0], value[1]


def _csv_hw(text: str | None, default: tuple[int, int]) -> tuple[int, int]:
    """The CSVs write sizes as W x H ("640x360"); rows store (H, W) like tensors."""
    if not text or not text.strip():
        return default
    w, _, h = text.strip().partition("x")
    return int(h), int(w)


def _csv_float(text: str) -> float | None:
    return float(text) if text.strip() else None


@cache
def _csv_rows(name: str) -> tuple[dict[str, str], ...]:
    path = PAPER_DIR / name
    if not path.is_file():
        raise SpecError(f"{path}: the paper's numbers are missing (package data searchspace/paper)")
    with path.open("r", newline="", encoding="utf-8") as fh:
        return tuple(csv.DictReader(fh))


def _paper_numbers(value: Any, where: str) -> tuple[str, dict[str, dict[str, str]], str]:
    """``numbers = {csv, table}``: (the CSV's name, its rows of that table by row name, the
    CSV's GMACs column)."""
    if not isinstance(value, dict):
        raise _fail(where, f"numbers = {value!r}: expected {{ csv = FILE, table = ID }}")
    here = f"{where}, numbers"
    _unknown_keys(value, _NUMBERS_KEYS, here)
    name = _text(value, "csv", here, required=True)
    table = _text(value, "table", here, required=True)
    assert name is not None and table is not None
    if "/" in name or "\\" in name or not name.endswith(".csv"):
        raise _fail(here, f"csv = {name!r}: name a CSV of searchspace/paper (no folders)")
    rows = _csv_rows(name)
    gmacs = [c for c in (rows[0] if rows else {}) if c.startswith("gmacs")]
    if len(gmacs) != 1:
        raise _fail(here, f"csv = {name!r}: expected one 'gmacs...' column")
    mine = {r["row"]: r for r in rows if r["table"] == table}
    if not mine:
        raise _fail(here, f"table = {table!r}: no such table in {name}")
    return name, mine, gmacs[0]


@dataclass(frozen=True)
class _Context:
    """What every row of one table shares."""

    where: str
    table: str
    paper: str
    input_hw: tuple[int, int]
    base: ArchSpec | None
    numbers: tuple[str, dict[str, dict[str, str]], str] | None


def _row(data: Any, index: int, ctx: _Context) -> PaperRow:
    if not isinstance(data, dict):
        raise _fail(f"{ctx.where}, rows[{index}]", "expected a [[rows]] table")
    where = f"{ctx.where}, rows[{index}]"
    name = _name(data, "name", where)
    where = f"{ctx.where}, row {name}"
    _unknown_keys(data, _ROW_KEYS, where)
    numbers: dict[str, Any] = {
        "setting": _text(data, "setting", where) or "",
        "note": _text(data, "note", where) or "",
        "confidence": _text(data, "confidence", where) or "",
        "paper_miou": _number(data["miou"], "miou", where) if "miou" in data else None,
        "paper_gmacs": _number(data["gmacs"], "gmacs", where) if "gmacs" in data else None,
        "input_hw": ctx.input_hw,
    }
    if ctx.numbers is not None:
        csv_name, by_row, gmacs_column = ctx.numbers
        twice = [k for k in _NUMBER_KEYS if k in data]
        if twice:
            raise _fail(where, f"{', '.join(twice)}: given in {csv_name} already (one copy)")
        reported = by_row.get(name)
        if reported is None:
            raise _fail(where, f"not in {csv_name} (numbers.table of this file)")
        numbers.update(
            setting=reported["setting"],
            note=reported["note"],
            confidence=reported["confidence"],
            paper_miou=_csv_float(reported["miou_val"]),
            paper_gmacs=_csv_float(reported[gmacs_column]),
            input_hw=_csv_hw(reported.get("input_wh"), ctx.input_hw),
        )
    paper_init = _text(data, "paper_init", where)
    if paper_init is not None and paper_init not in PAPER_INITS:
        raise _fail(where, f"paper_init = {paper_init!r}: expected one of {', '.join(PAPER_INITS)}")
    common = dict(table=ctx.table, row=name, paper=ctx.paper, paper_init=paper_init, **numbers)
    unsupported = _text(data, "unsupported", where)
    if unsupported is not None:
        extra = [k for k in ("spec", "changes", "recipe") if k in data]
        if extra or not unsupported.strip():
            raise _fail(where, "an unsupported row gives its reason and no spec/changes/recipe")
        return PaperRow(spec=None, unsupported=unsupported, **common)
    spec_text = _text(data, "spec", where)
    if spec_text is not None:
        spec = _spec(spec_text, where, "spec")
    elif ctx.base is not None:
        spec = ctx.base
    else:
        raise _fail(where, "missing field 'spec' (and the table has no base)")
    changes = _text(data, "changes", where)
    if changes:
        spec = _changed(spec, changes, where)
    recipe = _text(data, "recipe", where)
    recipe_changes = _recipe_changes(recipe, where) if recipe else {}
    return PaperRow(spec=spec, recipe_changes=recipe_changes, **common)


def _claim(data: Any, index: int, table: PaperTable, where: str) -> ClaimEntry:
    if not isinstance(data, dict):
        raise _fail(f"{where}, claims[{index}]", "expected a [[claims]] table")
    claim_id = _name(data, "id", f"{where}, claims[{index}]")
    here = f"{where}, claim {claim_id}"
    _unknown_keys(data, _CLAIM_KEYS, here)
    text = _text(data, "text", here, required=True)
    kind = _text(data, "kind", here, required=True)
    if kind not in CLAIM_KINDS:
        raise _fail(here, f"kind = {kind!r}: unknown (kinds: {', '.join(CLAIM_KINDS)})")
    rows = data.get("rows")
    if rows is None:
        raise _fail(here, "missing field 'rows'")
    if not isinstance(rows, list) or len(rows) < 2 or not all(isinstance(r, str) for r in rows):
        raise _fail(here, f"rows = {rows!r}: expected at least two row names")
    known = {r.row for r in table.rows}
    for row in rows:
        if row not in known:
            raise _fail(here, f"rows: no row {row!r} in table {table.table}")
    if len(set(rows)) != len(rows):
        raise _fail(here, f"rows = {rows!r}: a row named twice")
    margin = data.get("margin")
    assert text is not None and kind is not None
    return ClaimEntry(
        id=claim_id,
        text=text,
        table=table.table,
        kind=kind,
        rows=tuple(rows),
        field=_text(data, "field", here),
        source=_text(data, "source", here) or "",
        margin=None if margin is None else _number(margin, "margin", here, positive=True),
    )


def parse_table_text(text: str, origin: str) -> TableFile:
    """A table file's text (read from ``origin``, named in every message) parsed and checked."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(origin, f"not valid TOML: {exc}") from None
    name = data.get("id")
    where = f"{origin}: table {name}" if isinstance(name, str) else origin
    table_id = _name(data, "id", where)
    _unknown_keys(data, _TABLE_KEYS, where)
    title = _text(data, "title", where, required=True)
    paper = _text(data, "paper", where) or ""
    input_hw = _input_size(data["input_size"], where) if "input_size" in data else V2_INPUT_HW
    base_text = _text(data, "base", where)
    ctx = _Context(
        where=where,
        table=table_id,
        paper=paper,
        input_hw=input_hw,
        base=_spec(base_text, where, "base") if base_text is not None else None,
        numbers=_paper_numbers(data["numbers"], where) if "numbers" in data else None,
    )
    raw_rows = data.get("rows")
    if not isinstance(raw_rows, list) or not raw_rows:
        raise _fail(where, "missing field 'rows' (at least one [[rows]])")
    rows = [_row(r, i, ctx) for i, r in enumerate(raw_rows)]
    seen: set[str] = set()
    for row in rows:
        if row.row in seen:
            raise _fail(where, f"row {row.row}: the name is used twice")
        seen.add(row.row)
    assert title is not None
    table = PaperTable(table=table_id, title=title, rows=tuple(rows))
    raw_claims = data.get("claims", [])
    if not isinstance(raw_claims, list):
        raise _fail(where, "claims: expected [[claims]] tables")
    claims = tuple(_claim(c, i, table, where) for i, c in enumerate(raw_claims))
    _check_unique_claims([(origin, c) for c in claims])
    return TableFile(origin=origin, text=text, table=table, claims=claims)


def _check_unique_claims(claims: Iterable[tuple[str, ClaimEntry]]) -> None:
    first: dict[str, str] = {}
    for origin, claim in claims:
        if claim.id in first:
            raise _fail(
                f"{origin}: table {claim.table}, claim {claim.id}",
                f"the id is used already (by {first[claim.id]}); claim ids are unique",
            )
        first[claim.id] = f"{origin}"


def is_table_file_arg(value: str) -> bool:
    """A ``--table`` value naming a ``.toml`` file (else it is a table id)."""
    return value.strip().endswith(SUFFIX)


def load_table_file(path: Path | str) -> TableFile:
    """Parse the table file at ``path``; UsageError when it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"table file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"table file {path}: cannot be read ({exc})") from None
    return parse_table_text(text, str(path))


# --- the shipped tables and the loaded ones ---------------------------------------------


@cache
def shipped_table_files() -> tuple[TableFile, ...]:
    """The papers' tables (package data), in file-name order; ids and claim ids unique."""
    if not SHIPPED_DIR.is_dir():
        raise SpecError(f"{SHIPPED_DIR}: the paper tables are missing (package data)")
    paths = sorted((p for p in SHIPPED_DIR.iterdir() if p.name.endswith(SUFFIX)), key=str)
    out = []
    for path in paths:
        tf = parse_table_text(path.read_text(encoding="utf-8"), f"{path}")
        if f"{tf.id}{SUFFIX}" != path.name:
            raise _fail(f"{path}: table {tf.id}", f"a shipped table file is named {tf.id}.toml")
        out.append(tf)
    _check_unique_claims((tf.origin, c) for tf in out for c in tf.claims)
    return tuple(out)


def shipped_table(table_id: str) -> TableFile | None:
    return next((tf for tf in shipped_table_files() if tf.id == table_id), None)


_LOADED: dict[str, TableFile] = {}


def use_table_file(path: Path | str) -> TableFile:
    """Load a user's table file and make its table known to ``get_table`` by its id."""
    return register(load_table_file(path))


def register(tf: TableFile) -> TableFile:
    """Make ``tf``'s table known by id (replacing an earlier file of that id)."""
    where = f"{tf.origin}: table {tf.id}"
    if tf.id == PRESET_TABLE or shipped_table(tf.id) is not None:
        raise _fail(where, "the id is a paper table's; choose another id")
    others = [(o.origin, c) for o in _LOADED.values() if o.id != tf.id for c in o.claims]
    shipped = [(s.origin, c) for s in shipped_table_files() for c in s.claims]
    _check_unique_claims([*shipped, *others, *((tf.origin, c) for c in tf.claims)])
    _LOADED[tf.id] = tf
    return tf


def loaded_table(table_id: str) -> TableFile | None:
    return _LOADED.get(table_id)


def loaded_table_files() -> tuple[TableFile, ...]:
    """The users' table files loaded in this process, in the order they were loaded."""
    return tuple(_LOADED.values())


def unload_table_files() -> None:
    """Forget every loaded user table (tests that load several in one process)."""
    _LOADED.clear()


def resolve_table_args(values: Iterable[str]) -> list[tuple[str, TableFile | None]]:
    """``--table`` values (ids or ``.toml`` files) as (table id, its file or None).

    Files are loaded and known by id from now on; one id given by two different files is
    an error, the same table twice is taken once."""
    out: dict[str, TableFile | None] = {}
    for value in (v.strip() for v in values):
        if not value:
            continue
        if not is_table_file_arg(value):
            out.setdefault(value, None)
            continue
        tf = load_table_file(value)
        earlier = out.get(tf.id)
        if earlier is not None and earlier.digest != tf.digest:
            raise UsageError(f"table id {tf.id!r} is defined by {earlier.origin} and {value}")
        out[tf.id] = register(tf)
    return list(out.items())


def table_from_arg(value: str) -> PaperTable:
    """One ``--table`` value: a table id, or a ``.toml`` file (loaded, then known by id)."""
    value = value.strip()
    return use_table_file(value).table if is_table_file_arg(value) else get_table(value)


# --- copies in a results folder --------------------------------------------------------


def stored_dir(results_dir: Path | str) -> Path:
    return Path(results_dir) / STORED_DIRNAME


def keep_copy(tf: TableFile, results_dir: Path | str) -> Path:
    """Copy ``tf`` into the results folder as ``tables/<sha1-12>.toml`` (once per content);
    its time is touched so that, of two versions of one id, the one run last is newest."""
    path = stored_dir(results_dir) / f"{tf.digest}{SUFFIX}"
    if path.is_file():
        path.touch()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, tf.text)
    return path


def use_stored_table_files(results_dir: Path | str) -> list[TableFile]:
    """Load the table files a results folder keeps, unless a table of that id is loaded
    already (one named on the command line wins). Of several versions of one id, the one
    run last (newest copy) is used."""
    folder = stored_dir(results_dir)
    if not folder.is_dir():
        return []
    copies = sorted(folder.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name))
    newest: dict[str, TableFile] = {}
    for path in copies:
        tf = load_table_file(path)
        newest[tf.id] = tf
    return [register(tf) for tf in newest.values() if tf.id not in _LOADED]
