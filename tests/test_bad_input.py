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
    "convert": "runners.convert.__main__",
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
    # the closing line counts it as what it is, not as a stored run reused
    assert "0 runs done now, 0 reused, 1 with a corrupt record (not run" in out
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


# --- one place (run_cli): a failed command shows one line and leaves nothing behind ------

PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not PROC.is_dir(), reason="needs Linux /proc")


@needs_proc
def test_an_output_that_cannot_be_written_is_one_line_and_leaves_nothing(
    tiny_data: str, tmp_path: Path, capsys
) -> None:
    """/proc takes no new files, yet looks like a folder: the write itself fails (for
    root; for others the check before any work already refuses it)."""
    csv = tmp_path / "p.csv"
    code, _, err = run("profile", "--spec", "bisenetv2", "--no-latency", "--counters",
                       "flop_counter", "--input-hw", "64", "128", "--csv", str(csv),
                       "--json", "/proc/bisenet-lab.json", capsys=capsys)  # fmt: skip
    assert_one_line_error(code, err, "--json /proc/bisenet-lab.json")
    code, _, err = run("evaluate", "--baseline", "majority", "--data", tiny_data,
                       "--max-images", "1", "--json", "/proc/bisenet-lab.json",
                       capsys=capsys)  # fmt: skip
    assert_one_line_error(code, err, "--json /proc/bisenet-lab.json")
    results = Path(__file__).parent.parent / "results" / "smoke-synth"
    code, _, err = run("report", "--results-dir", str(results), "--tables", "3a", "--out",
                       "/proc/bisenet-lab.md", capsys=capsys)  # fmt: skip
    assert_one_line_error(code, err, "/proc/bisenet-lab")
    # the report's figures and tables were written before its Markdown failed: removed
    folder = tmp_path / "a_folder"
    folder.mkdir()
    code, _, err = run("report", "--results-dir", str(results), "--tables", "3a", "--out",
                       str(folder), capsys=capsys)  # fmt: skip
    assert_one_line_error(code, err, f"report {folder}: cannot write")
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    import errno

    from searchspace.errors import OutputError
    from searchspace.outputs import output_file, write_output

    target = tmp_path / "f.bin"
    no_space = f"{target}: cannot write \\(No space left"
    with pytest.raises(OutputError, match=no_space), output_file(target) as tmp:
        tmp.write_bytes(b"half of it")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    # a device is written in place, never renamed over (that would replace the device node)
    full = Path("/dev/full")
    if full.is_char_device():
        with pytest.raises(OutputError, match="/dev/full: cannot write \\(No space left"):
            write_output(full, "x" * 10_000)
        assert full.is_char_device()


def _warnings_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Warnings written to stderr, as outside pytest (which records them itself)."""
    import sys
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(warnings, "showwarning", show)


def test_notes_and_warnings_before_an_error_are_dropped_and_shown_on_success(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import sys
    import warnings

    from searchspace.errors import UsageError

    _warnings_to_stderr(monkeypatch)

    def main(fail: bool) -> int:
        print("note: something worth knowing", file=sys.stderr)
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
        if fail:
            raise UsageError("--x 1: bad")
        return 0

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as done:
            run_cli(lambda _argv: main(True), [])
        err = capsys.readouterr().err
        assert done.value.code == 2 and err.splitlines() == [
            "tests.test_bad_input: error: --x 1: bad"
        ]
        with pytest.raises(SystemExit) as done:
            run_cli(lambda _argv: main(False), [])
        err = capsys.readouterr().err
        assert done.value.code == 0
        assert "note: something worth knowing" in err and "a library's warning" in err


def test_a_precision_note_before_an_error_is_dropped(
    tiny_data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The note comes from the training loop itself; the refusal (a missing decoded cache)
    comes after it, and after the run folder was made: the folder goes too."""
    from runners import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    code, _, err = run("train", "--recipe", "smoke:amp=true", "--data", tiny_data,
                       "--decoded-cache", str(tmp_path / "nope"), "--out",
                       str(tmp_path / "runs" / "a"), capsys=capsys)  # fmt: skip
    assert_one_line_error(code, err, "decoded cache")
    assert list(tmp_path.iterdir()) == []


def test_torch_warning_on_a_refused_pickle_is_not_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A file made with ``pickle`` (not ``torch.save``): torch warns about its protocol,
    then the toolkit refuses it. Only the refusal is shown."""
    import argparse
    import pickle
    import warnings

    src = tmp_path / "weights.pkl"
    src.write_bytes(pickle.dumps({"w": argparse.Namespace(x=1)}, protocol=4))
    _warnings_to_stderr(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, _, err = run("convert", "--from", "coincheung", "--spec", "bisenetv2_coincheung",
                           str(src), str(tmp_path / "out.pt"), capsys=capsys)  # fmt: skip
    assert_one_line_error(code, err, str(src))
    assert list(tmp_path.iterdir()) == [src]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--train", "0"], "--train 0: must be >= 1"),
        (["--val", "0"], "--val 0: must be >= 1"),
        (["--train", "-3"], "--train -3: must be >= 1"),
        (["--workers", "-1"], "--workers -1: must be >= 0"),
        (["--height", "8"], "height must be an integer >= 32"),
    ],
)
def test_synth_counts_are_checked(argv: list[str], expected: str, tmp_path: Path, capsys) -> None:
    code, _, err = run("data", "synth", "--out", str(tmp_path / "s"), *argv, capsys=capsys)
    assert_one_line_error(code, err, expected)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_train_leaves_no_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from runners import device

    monkeypatch.setattr(device, "cuda_available", lambda: False)
    code, _, err = run("train", "--device", "cuda", "--out", str(tmp_path / "runs" / "a"),
                       capsys=capsys)  # fmt: skip
    assert_one_line_error(code, err, "--device cuda: no CUDA device")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_command_removes_only_what_it_made(tmp_path: Path, capsys) -> None:
    """Files and folders made through searchspace.outputs go; what was there before, and
    what other code put in a folder made here (finished work), stays."""
    from searchspace.errors import DataError
    from searchspace.outputs import make_output_dir, write_output

    kept = tmp_path / "old"
    kept.mkdir()
    (kept / "earlier.json").write_text("{}")

    def main(_argv) -> int:
        write_output(kept / "new.json", "{}")
        write_output(make_output_dir(tmp_path / "made" / "deep") / "x.csv", "a,b\n")
        make_output_dir(tmp_path / "work")
        (tmp_path / "work" / "checkpoint.pt").write_bytes(b"hours of training")
        raise DataError("a corrupt image")

    with pytest.raises(SystemExit) as done:
        run_cli(main, [])
    assert done.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old", "work"]
    assert [p.name for p in kept.iterdir()] == ["earlier.json"]
    assert (tmp_path / "work" / "checkpoint.pt").exists()
    assert len(capsys.readouterr().err.splitlines()) == 1
