"""Tables and claims as TOML files: the shipped ones give what the Python definitions gave,
a bad file is one line naming file and field, and a user's table runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from analysis import claims as judging
from analysis.catalogue import CLAIMS, DEFAULT_MARGIN_PTS, all_claims
from searchspace import table_files
from searchspace.errors import SpecError, UsageError
from searchspace.table_files import (
    CLAIM_KINDS,
    SHIPPED_DIR,
    load_table_file,
    register,
    resolve_table_args,
    use_stored_table_files,
)
from searchspace.tables import PRESET_TABLE, get_table, table_names

ROOT = Path(__file__).resolve().parent.parent
BEFORE = json.loads((ROOT / "tests" / "fixtures" / "tables_before_toml.json").read_text())
TINY = "smoke:budget=3,crop_hw=64+64,batch_size=2,warmup_iters=0"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# a user's table: three small rows of the base, one claim of each family
MINE = """\
id = "mine"
title = "Three narrow rows"
input_size = [64, 128]
base = "bisenetv2:booster_positions=none,width_mult=0.5"

[[rows]]
name = "sum"
changes = "aggregation=sum"
miou = 60.5

[[rows]]
name = "bga"
setting = "the paper's aggregation"

[[rows]]
name = "narrow"
changes = "semantic.ratio=1/8"
recipe = "loss=ohem"

[[claims]]
id = "mine_bga_beats_sum"
text = "BGA beats sum"
kind = "beats"
rows = ["bga", "sum"]
source = "my notes"

[[claims]]
id = "mine_narrow_cheaper"
text = "The narrow row costs less"
kind = "cheaper"
rows = ["narrow", "bga"]
margin = 0.5
"""


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """User tables registered by a test are forgotten after it."""
    table_files.unload_table_files()
    yield
    table_files.unload_table_files()


# Table 6's backbone rows were "unsupported" until the semantic branch took backbones
RUNNABLE_SINCE = {"6/shufflenetv2_1_5x", "6/mobilenetv2", "6/resnet18"}


def _row_dict(row) -> dict:
    return {
        "row": row.row,
        "setting": row.setting,
        "spec": row.spec.to_string() if row.spec else None,
        "spec_id": row.spec.spec_id if row.spec else None,
        "recipe_changes": dict(row.recipe_changes),
        "paper_miou": row.paper_miou,
        "paper_gmacs": row.paper_gmacs,
        "input_hw": list(row.input_hw),
        "confidence": row.confidence,
        "note": row.note,
        "unsupported": row.unsupported,
        "paper": row.paper,
    }


# --------------------------------------------------------------- the shipped tables


def test_toml_tables_give_the_rows_the_python_definitions_gave() -> None:
    """Same ids, order, spec_ids (stored results are keyed by them), recipe changes,
    paper numbers and notes as the Python tables had (tests/fixtures/tables_before_toml.json)."""
    assert list(BEFORE["tables"]) == list(table_names("all"))
    assert table_names() == ("2", "3a", "3b", "3c", "4", "5a", "5b", "6")
    for table_id, before in BEFORE["tables"].items():
        table = get_table(table_id)
        assert table.title == before["title"]
        now = [_row_dict(r) for r in table.rows]
        for row in now:  # rows that became runnable since: the paper's side is unchanged
            if f"{table_id}/{row['row']}" in RUNNABLE_SINCE:
                for k in ("spec", "spec_id", "recipe_changes", "unsupported"):
                    row[k] = None if k != "recipe_changes" else {}
        for row in before["rows"]:
            if f"{table_id}/{row['row']}" in RUNNABLE_SINCE:
                assert row["unsupported"] is not None
                row["unsupported"] = None
        assert now == before["rows"], table_id
    assert get_table(PRESET_TABLE).rows  # still built from the presets, in Python


def test_catalogue_claims_are_the_python_definitions() -> None:
    got = {
        c.id: {
            "id": c.id,
            "text": c.text,
            "table": c.table,
            "kind": c.kind,
            "rows": list(c.rows),
            "field": c.field,
            "source": c.source,
            "margin": c.margin,
        }
        for c in CLAIMS
    }
    assert got == {c["id"]: c for c in BEFORE["claims"]}
    assert judging.CLAIMS is CLAIMS and judging.Claim is type(CLAIMS[0])
    # the loader's kinds and default margin are the judge's
    assert typing.get_args(judging.Kind) == CLAIM_KINDS
    assert judging.DEFAULT_MARGIN_PTS == DEFAULT_MARGIN_PTS


def test_shipped_table_files_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["searchspace"]
    shipped = {p for pattern in globs for p in (ROOT / "searchspace").glob(pattern)}
    files = sorted(p for p in Path(str(SHIPPED_DIR)).iterdir() if p.suffix == ".toml")
    assert len(files) == len(table_names("all")) and set(files) <= shipped


# --------------------------------------------------------------- a user's file


def test_a_user_table_parses_with_its_claims(tmp_path: Path, clean_registry: None) -> None:
    path = tmp_path / "my.toml"
    path.write_text(MINE)
    tf = load_table_file(path)
    rows = {r.row: r for r in tf.table.rows}
    assert list(rows) == ["sum", "bga", "narrow"] and tf.id == "mine"
    assert rows["sum"].spec.to_string() == "v2:a=0.5,agg=sum,bst=none"
    assert rows["narrow"].spec.semantic.ratio == 1 / 8
    assert rows["narrow"].recipe_changes == {"loss": "ohem"}
    assert rows["sum"].paper_miou == 60.5 and rows["bga"].paper_miou is None
    assert rows["bga"].setting == "the paper's aggregation"
    assert all(r.input_hw == (64, 128) for r in rows.values())
    assert [c.margin for c in tf.claims] == [None, 0.5]
    with pytest.raises(SpecError, match="unknown table 'mine'"):
        get_table("mine")
    ids = resolve_table_args(["3a", str(path), "3a"])
    assert ids == [("3a", None), ("mine", tf)]
    assert get_table("mine") == tf.table
    claims = {c.id: c for c in all_claims()}
    assert claims["mine_bga_beats_sum"].margin == DEFAULT_MARGIN_PTS
    assert claims["mine_narrow_cheaper"].margin == 0.5 and len(claims) == len(CLAIMS) + 2


def _edit(old: str, new: str, text: str = MINE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


BAD = {
    "toml syntax": (_edit('title = "Three narrow rows"', "title = "), ["line 2", "TOML"]),
    "unknown table field": (_edit("input_size", 'colour = "red"\ninput_size'),
                            ["table mine", "unknown field 'colour'"]),
    "unknown row field": (_edit('name = "bga"', 'name = "bga"\nsepc = "v2"'),
                          ["row bga", "unknown field 'sepc'"]),
    "unknown claim field": (_edit('source = "my notes"', 'sourse = "x"'),
                            ["claim mine_bga_beats_sum", "unknown field 'sourse'"]),
    "spec that does not parse": (_edit('changes = "aggregation=sum"', 'spec = "v2:lam=abc"'),
                                 ["row sum", "spec = 'v2:lam=abc'"]),
    "changes that do not parse": (_edit("aggregation=sum", "aggregation=fancy"),
                                  ["row sum", "changes = 'aggregation=fancy'"]),
    "base that does not parse": (_edit("bisenetv2:", "bisenetv9:"), ["table mine", "base ="]),
    "unknown recipe field": (_edit("loss=ohem", "los=ohem"), ["row narrow", "recipe = 'los=ohem'"]),
    "claim naming a missing row": (_edit('rows = ["bga", "sum"]', 'rows = ["bga", "wide"]'),
                                   ["claim mine_bga_beats_sum", "no row 'wide'"]),
    "duplicate row names": (_edit('name = "narrow"', 'name = "sum"'),
                            ["table mine", "row sum", "used twice"]),
    "unknown claim kind": (_edit('kind = "beats"', 'kind = "better"'),
                           ["claim mine_bga_beats_sum", "kind = 'better'"]),
    "negative margin": (_edit("margin = 0.5", "margin = -1"),
                        ["claim mine_narrow_cheaper", "margin = -1", "positive number"]),
    "zero margin": (_edit("margin = 0.5", "margin = 0"), ["claim mine_narrow_cheaper", "margin"]),
    "margin as text": (_edit("margin = 0.5", 'margin = "1"'), ["mine_narrow_cheaper", "margin"]),
    "missing title": (_edit('title = "Three narrow rows"\n', ""), ["missing field 'title'"]),
    "missing id": (_edit('id = "mine"\n', ""), ["missing field 'id'"]),
    "row without a name": (_edit('name = "bga"\n', ""), ["rows[1]", "missing field 'name'"]),
    "claim without a kind": (_edit('kind = "cheaper"\n', ""),
                             ["claim mine_narrow_cheaper", "missing field 'kind'"]),
    "claim without rows": (_edit('rows = ["narrow", "bga"]\n', ""),
                           ["claim mine_narrow_cheaper", "missing field 'rows'"]),
    "duplicate claim ids": (_edit('id = "mine_narrow_cheaper"', 'id = "mine_bga_beats_sum"'),
                            ["claim mine_bga_beats_sum", "used already"]),
    "no spec and no base": (_edit('base = "bisenetv2:booster_positions=none,width_mult=0.5"\n',
                                  ""), ["row sum", "missing field 'spec'"]),
    "unsupported row with a spec": (_edit("miou = 60.5", 'miou = 60.5\nunsupported = "no"'),
                                    ["row sum", "no spec/changes/recipe"]),
    "bad input size": (_edit("[64, 128]", "[64]"), ["table mine", "input_size"]),
    "numbers twice": (_edit("input_size", 'numbers = { csv = "bisenetv2_tables.csv", table = '
                            '"2" }\ninput_size'), ["row sum", "one copy"]),
    "spec file": (_edit('changes = "aggregation=sum"', 'spec = "my_spec.json"'),
                  ["row sum", "spec file"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_table_file_is_one_line_naming_file_and_field(tmp_path: Path, case: str) -> None:
    text, needles = BAD[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as exc:
        load_table_file(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for needle in needles:
        assert needle in message, message


def test_a_user_table_may_not_take_a_paper_id_or_claim_id(
    tmp_path: Path, clean_registry: None
) -> None:
    path = tmp_path / "my.toml"
    path.write_text(_edit('id = "mine"', 'id = "3a"'))
    with pytest.raises(SpecError, match=r"my.toml: table 3a: the id is a paper table's"):
        resolve_table_args([str(path)])
    path.write_text(_edit('id = "mine_bga_beats_sum"', 'id = "t3a_lambda_quarter"'))
    with pytest.raises(SpecError, match=r"claim t3a_lambda_quarter: the id is used already \("):
        resolve_table_args([str(path)])
    with pytest.raises(UsageError, match=r"table file .*nope.toml: not found"):
        resolve_table_args([str(tmp_path / "nope.toml")])
    # two files giving one id differently
    other = tmp_path / "other.toml"
    other.write_text(_edit('title = "Three', 'title = "Other'))
    path.write_text(MINE)
    with pytest.raises(UsageError, match="'mine' is defined by"):
        resolve_table_args([str(path), str(other)])


def test_stored_copies_rebuild_the_newest_version_unless_one_is_named(
    tmp_path: Path, clean_registry: None
) -> None:
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(MINE)
    new.write_text(_edit('title = "Three', 'title = "Newer, three'))
    folder = tmp_path / "results"
    first = table_files.keep_copy(load_table_file(old), folder)
    os.utime(first, (1, 1))  # run long ago
    table_files.keep_copy(load_table_file(new), folder)
    assert len(list((folder / "tables").glob("*.toml"))) == 2
    assert first.read_text() == MINE and first.stem == load_table_file(old).digest
    assert [tf.table.title for tf in use_stored_table_files(folder)] == ["Newer, three narrow rows"]
    table_files.unload_table_files()
    register(load_table_file(old))  # named on the command line: it wins over the copies
    assert use_stored_table_files(folder) == []
    assert get_table("mine").title == "Three narrow rows"


# --------------------------------------------------------------- the commands


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV,
    )  # fmt: skip


def test_ablate_with_a_bad_table_file_exits_2_and_runs_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD["claim naming a missing row"][0])
    results = tmp_path / "res"
    out = _run("runners.ablate", "--table", f"3a,{bad}", "--results-dir", str(results))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "no row 'wide'" in lines[0]
    assert out.stdout == "" and not results.exists()
    missing = _run("runners.ablate", "--table", str(tmp_path / "gone.toml"), "--list")
    assert missing.returncode == 2 and "gone.toml: not found" in missing.stderr


def test_ablate_lists_paper_tables_and_table_files_mixed(tmp_path: Path) -> None:
    path = tmp_path / "my.toml"
    path.write_text(MINE)
    out = _run("runners.ablate", "--table", f"3a,{path}", "--list")
    assert out.returncode == 0, out.stderr
    assert "table 3a: Semantic channel ratio lambda" in out.stdout
    assert "table mine: Three narrow rows" in out.stdout
    assert "v2:a=0.5,bst=none,lam=0.125 + recipe {'loss': 'ohem'}" in out.stdout


def test_a_user_table_end_to_end(tmp_path: Path, tiny_data: str) -> None:
    """Run a 3-row table file like a paper table, then rebuild it (and its claims) from the
    copy the results folder keeps: the report, the profiler and the comparison."""
    path = tmp_path / "my.toml"
    path.write_text(MINE)
    results = tmp_path / "res"
    out = _run("runners.ablate", "--table", str(path), "--recipe", TINY, "--data", tiny_data,
               "--results-dir", str(results), "--no-latency", "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "table mine: Three narrow rows" in out.stdout
    assert "3 runs done now" in out.stdout and "60.5" in out.stdout  # the file's paper mIoU
    copies = list((results / "tables").glob("*.toml"))
    assert [c.read_text() for c in copies] == [MINE]
    assert copies[0].stem == load_table_file(path).digest
    path.unlink()  # from here on, only the copy in the results folder knows the table

    report = tmp_path / "report.md"
    out = _run("analysis.report", "--results-dir", str(results), "--recipe", TINY,
               "--out", str(report))  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = report.read_text()
    assert "Three narrow rows" in text and "narrow" in text
    assert "mine_bga_beats_sum" in text and "mine_narrow_cheaper" in text
    from analysis.report import parse_tables  # what --table FILE does, without the figures

    table_files.unload_table_files()
    try:
        assert parse_tables(f"3a,{copies[0]}") == ["3a", "mine"]
        assert get_table("mine").row("narrow").recipe_changes == {"loss": "ohem"}
    finally:
        table_files.unload_table_files()

    out = _run("analysis.compare", "--results-dir", str(results), "--a-recipe", TINY,
               "--table", str(copies[0]), "--a", "bga", "--b", "sum")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "a (mine/bga)" in out.stdout and "b (mine/sum)" in out.stdout

    out = _run("runners.profile", "--table", str(copies[0]), "--no-latency")
    assert out.returncode == 0, out.stderr
    assert "Three narrow rows" in out.stdout and "narrow" in out.stdout
