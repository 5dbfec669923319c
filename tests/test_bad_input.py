"""Bad input, every command: one line on stderr, exit status 2, nothing written.

Each case runs a command's ``main`` in this process through the same ``run_cli`` wrapper
that ``python -m`` uses, so the sweep is fast; tests/test_data.py and test_search.py
start real processes for the cases that need one (loader workers, search workers).
"""

from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from searchspace.cli import run_cli

COMMANDS = {
    "ablate": "runners.ablate.__main__",
    "train": "runners.train.__main__",
    "evaluate": "runners.evaluate.__main__",
    "profile": "runners.profile.__main__",
    "export": "runners.export.__main__",
    "search": "runners.search.__main__",
    "data": "runners.data.__main__",
    "report": "analysis.report",
}


def run(command: str, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    main = importlib.import_module(COMMANDS[command]).main
    with pytest.raises(SystemExit) as done:
        run_cli(main, list(argv))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err


# --- specs and recipes: arithmetic, repeated keys, unknown and inapplicable fields --------

SPEC_CASES = [
    ("ablate", ["--table", "3a", "--recipe", "smoke:lr=1/0"], "lr='1/0': division by zero"),
    ("ablate", ["--table", "3a", "--recipe", "smoke:foo=1"], "'foo': unknown recipe field"),
    ("ablate", ["--table", "3a", "--recipe", "smoke:budget=1,budget=2"], "given twice"),
    ("ablate", ["--table", "3a", "--recipe", "smoke:ohem_thresh=0.5"], "does not apply"),
    ("train", ["--spec", "v2:lam=1/0"], "semantic.ratio='1/0': division by zero"),
    ("train", ["--spec", "v2:blk=ib,gk=1"], "semantic.ge_gather_kernel=1: does not apply"),
    ("train", ["--spec", "bisenetv2", "--recipe", "smoke:foo=1"], "unknown recipe field"),
    ("profile", ["--spec", "v2:a=1.5,a=2", "--no-latency"], "'a': width_mult is given twice"),
    ("profile", ["--spec", "v1:fus=sum,red=4", "--no-latency"], "ffm_reduction=4: does not"),
    ("export", ["--spec", "v2:lam=1/0"], "division by zero"),
    ("search", ["--study", "s", "--recipe", "smoke:lr=1/0"], "division by zero"),
    ("search", ["--study", "s", "--space", "nope"], "unknown search space 'nope'"),
    ("report", ["--recipe", "smoke:lr=1/0"], "division by zero"),
]


@pytest.mark.parametrize(("command", "argv", "expected"), SPEC_CASES)
def test_bad_specs_and_recipes(
    command: str, argv: list[str], expected: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    extra = {
        "ablate": ["--results-dir", str(out)],
        "train": ["--out", str(out)],
        "export": ["--onnx", str(out / "m.onnx")],
        "search": ["--results-dir", str(out)],
        "report": ["--results-dir", str(tmp_path), "--out", str(tmp_path / "r.md")],
    }.get(command, [])
    code, _, err = run(command, *argv, *extra, capsys=capsys)
    assert_one_line_error(code, err, expected)
    assert list(tmp_path.iterdir()) == []  # nothing written, no folder made


# --- output paths that cannot be written: refused before any work ---------------------


def test_unwritable_outputs_are_refused_before_work(tmp_path: Path, capsys) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    missing = tmp_path / "missing" / "deeper"
    cases = [
        ("train", ["--spec", "bisenetv2", "--out", str(a_file / "run")], "cannot create"),
        ("train", ["--spec", "bisenetv2", "--out", str(a_file)], "is a file, not a folder"),
        ("profile", ["--spec", "bisenetv2", "--no-latency", "--json", str(missing / "p.json")],
         "does not exist"),
        ("profile", ["--spec", "bisenetv2", "--no-latency", "--csv", str(tmp_path)], "is a folder"),
        ("export", ["--spec", "bisenetv2", "--onnx", str(missing / "m.onnx")], "does not exist"),
        ("evaluate", ["--baseline", "majority", "--json", str(missing / "e.json")],
         "does not exist"),
        ("evaluate", ["--baseline", "majority", "--save-predictions", str(a_file)],
         "is a file, not a folder"),
        ("data", ["synth", "--out", str(a_file)], "is a file"),
        ("search", ["--study", "s", "--results-dir", str(a_file)], "is a file, not a folder"),
        ("search", ["--study", "s", "--results-dir", str(tmp_path / "r"), "--plots",
                    str(a_file)], "is a file, not a folder"),
        ("ablate", ["--table", "3a", "--results-dir", str(a_file)], "not writable"),
        ("report", ["--results-dir", str(tmp_path), "--out", str(missing / "r.md")], ""),
    ]  # fmt: skip
    for command, argv, expected in cases:
        code, _, err = run(command, *argv, capsys=capsys)
        assert_one_line_error(code, err, expected)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"], (command, argv)
        assert a_file.read_text() == "x"


# --- broken datasets: found before any run, for every command that trains or scores --------


def _pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    out = []
    for image in sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        out.append(
            (image, root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png")
        )
    return out


def _unpaired(root: Path) -> str:
    _pairs(root, "val")[0][1].unlink()
    return "image has no label"


def _label_not_png(root: Path) -> str:
    label = _pairs(root, "train")[0][1]
    Image.open(label).save(label, format="JPEG")
    return "label is not a PNG"


def _unknown_id(root: Path) -> str:
    label = _pairs(root, "train")[0][1]
    Image.new("L", Image.open(label).size, 250).save(label)
    return "are not Cityscapes labelIds"


def _empty(root: Path) -> str:
    shutil.rmtree(root)
    root.mkdir()
    return "split folder not found"


BREAKERS: list[Callable[[Path], str]] = [_unpaired, _label_not_png, _unknown_id, _empty]


@pytest.fixture
def broken_city(tiny_data: str, tmp_path: Path) -> Path:
    root = tmp_path / "city"
    shutil.copytree(Path(tiny_data.removeprefix("synth:")), root)
    return root


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__.strip("_"))
def test_ablate_refuses_broken_data_before_any_run(
    breaker, broken_city: Path, tmp_path: Path, capsys
) -> None:
    expected = breaker(broken_city)
    results = tmp_path / "results"
    code, _, err = run("ablate", "--table", "3a", "--no-latency", "--data",
                       f"cityscapes:{broken_city}", "--results-dir", str(results),
                       capsys=capsys)  # fmt: skip
    assert_one_line_error(code, err, expected)
    assert not results.exists()


def test_train_search_and_evaluate_refuse_broken_data(
    broken_city: Path, tmp_path: Path, capsys
) -> None:
    expected = _label_not_png(broken_city)
    data = f"cityscapes:{broken_city}"
    for command, argv in (
        ("train", ["--spec", "bisenetv2", "--data", data, "--out", str(tmp_path / "t")]),
        ("search", ["--study", "s", "--data", data, "--results-dir", str(tmp_path / "s")]),
        ("evaluate", ["--baseline", "majority", "--split", "train", "--data", data]),
    ):
        code, _, err = run(command, *argv, capsys=capsys)
        assert_one_line_error(code, err, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city"]


# --- corrupt records -----------------------------------------------------------------


def test_a_corrupt_record_is_named_not_counted_as_stored(
    tiny_data: str, tmp_path: Path, capsys
) -> None:
    from runners.ablate.plan import plan_runs
    from runners.data.source import parse_data_arg
    from searchspace.recipes import get_recipe
    from searchspace.tables import get_table

    results = tmp_path / "results"
    data = parse_data_arg(tiny_data)
    runs, _ = plan_runs([get_table("3a")], ["lambda_1_8"], get_recipe("smoke"), data, 1)
    path = results / "records" / runs[0].key.relpath
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    code, out, err = run("ablate", "--table", "3a", "--rows", "lambda_1_8", "--no-latency",
                         "--data", tiny_data, "--results-dir", str(results),
                         "--no-progress", capsys=capsys)  # fmt: skip
    assert code == 0, err
    assert "0 already stored, 1 with a corrupt record" in out + err
    assert path.read_text() == "{not json"  # never overwritten without --force
    code, _, err = run("report", "--results-dir", str(results), "--out",
                       str(tmp_path / "r.md"), capsys=capsys)  # fmt: skip
    assert_one_line_error(code, err, "no usable records")
    assert "1 corrupt" in err and "bad JSON" in err
    assert not (tmp_path / "r.md").exists()


def test_search_parameter_file_with_an_unknown_knob(tmp_path: Path, capsys) -> None:
    points = tmp_path / "p.json"
    points.write_text(json.dumps({"width_mult": 1.0, "depth_mult": 1.0, "lam": 0.5}))
    code, _, err = run("search", "--study", "s", "--enqueue", str(points), "--results-dir",
                       str(tmp_path / "r"), capsys=capsys)  # fmt: skip
    assert_one_line_error(code, err, "knob 'lam': not in space 'multipliers'")
    assert not (tmp_path / "r").exists()
