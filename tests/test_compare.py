"""analysis.compare: two sets of stored runs judged by the claims' rule, in one command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.compare import judge, load_side, main
from searchspace.errors import StoreError, UsageError
from searchspace.recipes import recipe_from_json_dict

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "records"


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The fixture's own recipe as a JSON file (the command line takes a file as a recipe)."""
    record = json.loads(next(FIXTURE.glob("*/*.json")).read_text())
    path = tmp_path_factory.mktemp("recipe") / "recipe.json"
    path.write_text(recipe_from_json_dict(record["recipe"]).to_json())
    return str(path)


def test_sides_are_paired_by_seed_when_their_seeds_agree(recipe_file: str) -> None:
    a = load_side("a", FIXTURE, "v2:bst=none", recipe_file, None, None)
    b = load_side("b", FIXTURE, "v2:agg=concat,bst=none", recipe_file, None, None)
    assert a.seeds == b.seeds == (0, 1) and len(a.miou) == 2
    assert judge(a, b).method.startswith("paired")
    only0 = load_side("b", FIXTURE, "v2:agg=concat,bst=none", recipe_file, None, [0])
    assert only0.seeds == (0,) and not judge(a, only0).method.startswith("paired")
    equivalence = judge(a, b, margin=1.0)
    assert equivalence.margin == 1.0 and equivalence.verdict in (
        "no_worse",
        "worse",
        "inconclusive",
    )


def test_cli_prints_both_sides_and_a_verdict(recipe_file: str, capsys) -> None:
    args = ["--results-dir", str(FIXTURE), "--a", "v2:bst=none", "--a-recipe", recipe_file]
    assert main([*args, "--b", "v2:agg=concat,bst=none"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("a: v2:bst=none (") and "\nb: v2:agg=concat,bst=none (" in out
    assert "a - b: " in out and "95% CI" in out and "\nverdict: " in out
    assert main([*args, "--b", "v2:agg=concat,bst=none", "--no-worse", "1"]) == 0
    assert "90% CI" in capsys.readouterr().out
    assert main([*args, "--b", "v2:agg=concat,bst=none", "--equivalent", "1"]) == 0
    out = capsys.readouterr().out
    assert "90% CI" in out and "equivalence margin 1 point" in out
    verdict = out.split("\nverdict: ", 1)[1].splitlines()[0]
    assert verdict.startswith(("a and b are within 1", "a and b differ by more", "inconclusive"))


@pytest.mark.parametrize(
    "extra, error, message",
    [
        ([], UsageError, "side b is side a"),
        (["--b", "v2:lam=0.5"], StoreError, "b: no ok run of v2:lam=0.5"),
        (["--b", "v2:agg=sum,bst=none", "--seeds", "x"], UsageError, "--seeds 'x'"),
        (["--b", "v2:agg=sum,bst=none", "--seeds", "7"], StoreError, "seeds 7"),
        (["--b-results-dir", "/nonexistent/results"], StoreError, "not found"),
    ],
)
def test_bad_input_is_one_clear_error(recipe_file: str, extra, error, message) -> None:
    args = ["--results-dir", str(FIXTURE), "--a", "v2:bst=none", "--a-recipe", recipe_file]
    with pytest.raises(error, match=message.replace("(", r"\(")):
        main([*args, *extra])


def test_one_margin_question_at_a_time(recipe_file: str, capsys) -> None:
    args = ["--results-dir", str(FIXTURE), "--a", "v2:bst=none", "--a-recipe", recipe_file]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--b", "v2:agg=sum,bst=none", "--no-worse", "1", "--equivalent", "1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--equivalent: not allowed with argument --no-worse" in err and err.count("\n") == 1


def test_cli_exit_status_and_no_torch(recipe_file: str) -> None:
    code = (
        "import sys\n"
        "from analysis.compare import main\n"
        f"main(['--results-dir', {str(FIXTURE)!r}, '--a', 'v2:bst=none', '--a-recipe', "
        f"{recipe_file!r}, '--b', 'v2:agg=sum,bst=none'])\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    bad = subprocess.run(
        [sys.executable, "-m", "analysis.compare", "--results-dir", "nope", "--a", "v2"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_sequential_rule_on_sides_with_the_same_seeds(recipe_file: str, capsys) -> None:
    """``--sequential``: the confidence sequence, only on sides with the same seeds; an open
    question says what settling it costs, from the sides' own train times."""
    args = ["--results-dir", str(FIXTURE), "--a", "v2:bst=none", "--a-recipe", recipe_file,
            "--b", "v2:agg=concat,bst=none"]  # fmt: skip
    assert main([*args, "--sequential"]) == 0
    out = capsys.readouterr().out
    assert "confidence sequence (Lai's t-mixture" in out and "\nverdict: " in out
    # two seeds per side: the rule cannot decide yet, and says what more seeds would cost
    assert "verdict: inconclusive" in out
    assert main(args) == 0
    fixed = capsys.readouterr().out
    if "to settle: " in fixed:
        assert "then judge with --sequential" in fixed
    a = load_side("a", FIXTURE, "v2:bst=none", recipe_file, None, None)
    b = load_side("b", FIXTURE, "v2:agg=concat,bst=none", recipe_file, None, [0])
    with pytest.raises(UsageError, match="--sequential compares sides with the same seeds: a "
                       "has 0,1, b has 0"):  # fmt: skip
        judge(a, b, sequential=True)
