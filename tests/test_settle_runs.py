"""``runners.ablate --settle``: rounds of seeds for open claims, their caps and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runners.ablate.settle import ClaimState, next_target
from searchspace.cli import run_cli

TINY = "smoke:budget=3,crop_hw=64+64,batch_size=2,warmup_iters=0"


def state(seeds: dict[str, tuple[int, ...]], target: int | None, outcome="inconclusive"):
    return ClaimState("c", "3a", tuple(seeds), outcome, seeds, target)


def test_rounds_pair_the_rows_first_then_grow_toward_the_estimate() -> None:
    # other seed lists: the first round only gives the rows the same seeds
    assert next_target(state({"a": (0, 1, 2, 3, 4), "b": (0, 1, 2)}, None), 30) == (5, "")
    # too few seeds to size anything: to 4, where the rule can first decide
    assert next_target(state({"a": (0,), "b": (0,)}, None), 30) == (4, "")
    # toward the estimate, by half of what is stored per round (a claim settled early
    # does not pay for the estimate's margin), never past the cap
    assert next_target(state({"a": tuple(range(6)), "b": tuple(range(6))}, 20), 30) == (9, "")
    assert next_target(state({"a": tuple(range(6)), "b": tuple(range(6))}, 7), 30) == (7, "")
    assert next_target(state({"a": tuple(range(28)), "b": tuple(range(28))}, 30), 30) == (30, "")
    # an estimate beyond the cap: no seeds spent on a claim they cannot settle
    assert next_target(state({"a": tuple(range(6)), "b": tuple(range(6))}, 80), 30) == (
        None, "needs about 80 seeds per row, more than --max-seeds 30")  # fmt: skip
    no_size = state({"a": tuple(range(6)), "b": tuple(range(6))}, None)
    assert next_target(no_size, 30)[0] is None
    # an estimate already met while still open: one more round, until the cap
    assert next_target(state({"a": tuple(range(6)), "b": tuple(range(6))}, 5), 30) == (7, "")
    assert next_target(state({"a": tuple(range(6)), "b": tuple(range(6))}, 5), 6) == (
        None, "--max-seeds 6 reached")  # fmt: skip


def ablate(capsys, *argv: str) -> tuple[int, str, str]:
    from runners.ablate.__main__ import main

    with pytest.raises(SystemExit) as done:
        run_cli(main, list(argv))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--settle", "t2_ohem"], "--settle t2_ohem: no such claim in table(s) 3a"),
        (["--settle", "t3a_too_narrow_hurts", "--max-hours", "0"], "--max-hours 0.0: must be a positive"),
        (["--max-seeds", "5"], "--max-seeds and --max-hours go with --settle"),
        (["--settle", "t3a_too_narrow_hurts", "--max-seeds", "1"], "--max-seeds 1: must be >= 2"),
    ],
)  # fmt: skip
def test_bad_settle_input_is_one_line_exit_2(
    extra: list[str], needle: str, tmp_path: Path, tiny_data: str, capsys
) -> None:
    res = tmp_path / "res"
    code, _, err = ablate(capsys, "--table", "3a", "--results-dir", str(res), "--data",
                          tiny_data, "--recipe", TINY, *extra)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not list(res.glob("records/**/*.json"))


@pytest.mark.slow  # 10 tiny runs in rounds: 30-60 s on 2 cores
def test_settle_runs_rounds_until_the_cap_and_says_what_it_found(
    tmp_path: Path, tiny_data: str, capsys
) -> None:
    res = tmp_path / "res"
    base = ["--table", "3a", "--results-dir", str(res), "--data", tiny_data, "--recipe", TINY,
            "--no-latency", "--no-progress"]  # fmt: skip
    code, out, err = ablate(capsys, *base, "--rows", "lambda_1_4,lambda_1_16")
    assert code == 0, err
    code, out, err = ablate(capsys, *base, "--settle", "t3a_too_narrow_hurts", "--max-seeds", "5")
    assert code == 0, err
    assert "round 1: 6 runs" in out  # 1 seed per row stored: to 4 seeds, where it can decide
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("t3a_too_narrow_hurts: ")]
    assert lines and "(sequential rule)" in lines[-1]
    records = [json.loads(p.read_text()) for p in res.glob("records/**/*.json")]
    seeds = {}
    for r in records:
        seeds.setdefault(r["key"]["spec_id"], set()).add(r["key"]["seed"])
    assert len(seeds) == 2 and len({frozenset(s) for s in seeds.values()}) == 1  # paired
    n = len(next(iter(seeds.values())))
    assert 4 <= n <= 5  # never past --max-seeds
    if "supported" not in lines[-1] and "contradicted" not in lines[-1]:
        assert "more than --max-seeds 5" in out or (n == 5 and "--max-seeds 5 reached" in out)
    # --max-seeds below what is stored is refused, nothing lost
    code, _, err = ablate(capsys, *base, "--settle", "t3a_too_narrow_hurts", "--max-seeds", "3")
    assert code == 2 and f"has {n} seeds stored already" in err
    assert len(list(res.glob("records/**/*.json"))) == len(records)


def test_caps_below_what_is_stored_are_refused_in_one_line() -> None:
    from runners.ablate.settle import check_caps
    from searchspace.errors import UsageError

    states = {"c": state({"lambda_1_4": tuple(range(6)), "lambda_1_16": tuple(range(6))}, 9)}
    check_caps(states, 6, None)  # as many as stored: fine
    with pytest.raises(UsageError, match="--max-seeds 5: row 3a/lambda_1_4 of c has 6 seeds"):
        check_caps(states, 5, None)
    with pytest.raises(UsageError, match="--max-hours -1: must be a positive number"):
        check_caps(states, 30, -1)


def test_a_settle_round_grows_pretrained_rows_from_their_file(tmp_path: Path) -> None:
    """With --pretrained, a round adds seeds to the runs the claims were judged on: the
    row whose backbone has the file starts from it (its own key, the file's path), the
    row without one trains from scratch."""
    from runners.ablate.settle import plan_round
    from runners.data.source import parse_data_arg
    from runners.pretrained import PretrainedFile, Pretraining
    from searchspace.recipes import parse_recipe
    from searchspace.tables import get_table

    weights = PretrainedFile(tmp_path / "r18.pth", "ab" * 32, "torchvision_resnet18",
                             "torchvision", "resnet18", (0.5,) * 3, (0.2,) * 3)  # fmt: skip
    claim = ClaimState("c", "6", ("resnet18", "ours_large"), "inconclusive",
                       {"resnet18": (0,), "ours_large": (0,)}, None)  # fmt: skip
    recipe, data = parse_recipe("synth"), parse_data_arg("synth", check=())
    args = ({"c": claim}, ["c"], {"6": get_table("6")}, recipe, data, lambda run: False, 30)
    plan = plan_round(*args, Pretraining({"resnet18": weights}))
    by_row = {(r.rows[0].row, r.seed): r for r in plan.runs}
    assert sorted(by_row) == [(row, s) for row in ("ours_large", "resnet18") for s in range(4)]
    assert by_row["resnet18", 1].pretrained == weights.path
    assert by_row["ours_large", 1].pretrained is None
    scratch = {(r.rows[0].row, r.seed): r.key for r in plan_round(*args).runs}
    assert by_row["resnet18", 1].key != scratch["resnet18", 1]
    assert by_row["ours_large", 1].key == scratch["ours_large", 1]
