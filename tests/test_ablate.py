"""runners.ablate end to end on a tiny budget: table output, resume, SIGKILL, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.records import load_records
from runners import experiment
from runners.ablate import run as ablate_run
from runners.runs import PlannedRun, ProfileSettings
from runners.store.store import Store
from searchspace.presets import parse_spec
from searchspace.recipes import parse_recipe
from searchspace.records import RecordKey

ROOT = Path(__file__).resolve().parent.parent
TINY = "smoke:budget=3,crop_hw=64+64,batch_size=2,warmup_iters=0"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def ablate(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runners.ablate", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV, **kw,
    )  # fmt: skip


def test_list_names_every_table_and_marks_unsupported_rows() -> None:
    out = ablate("--list")
    assert out.returncode == 0, out.stderr
    for table in ("table 2:", "table 3a:", "table 5b:", "table 6:", "table v1-3:"):
        assert table in out.stdout
    assert "bb=resnet18" in out.stdout  # Table 6's backbone rows
    assert "lambda_1_8" in out.stdout and "lam=0.125" in out.stdout


def test_dry_run_profiles_without_storing(tmp_path: Path) -> None:
    out = ablate("--table", "3a", "--dry-run", "--no-latency", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "3a/lambda_1_2" in out.stdout and "25.84" in out.stdout and "26.23" in out.stdout
    assert not (tmp_path / "records").exists()


def test_several_tables_share_their_common_rows(tmp_path: Path) -> None:
    from runners.ablate.plan import plan_runs
    from runners.data.source import parse_data_arg
    from searchspace.recipes import parse_recipe
    from searchspace.tables import get_table

    runs, _ = plan_runs([get_table("2"), get_table("3a")], None, parse_recipe("smoke"),
                        parse_data_arg("synth"), seeds=1)  # fmt: skip
    # 7 + 5 rows; detail_only is in both, and 3a's lambda_1_4 is Table 2's bga: 10 runs
    assert len(runs) == 10
    shared = {r.label: sorted(row.key for row in r.rows) for r in runs if len(r.rows) > 1}
    assert sorted(shared.values()) == [["2/bga", "3a/lambda_1_4"],
                                       ["2/detail_only", "3a/detail_only"]]  # fmt: skip
    out = ablate("--table", "2,3a", "--dry-run", "--no-latency", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    listed = [line.split()[0] for line in out.stdout.splitlines()[2:]]
    assert len(listed) == 12 and "3a/lambda_1_4" in listed and "2/bga_booster_ohem" in listed


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--table", "9z"], "unknown table '9z'"),
        (["--table", "3a", "--rows", "lambda_1_3"], "no row 'lambda_1_3'"),
        (["--table", "3a", "--seeds", "0"], "--seeds 0"),
        (["--table", "3a", "--recipe", "fast"], "unknown recipe"),
        (["--table", "3a", "--data", "cityscapes:/nonexistent"], "not found"),
        (["--table", "3a", "--device", "cuda"], "no CUDA device"),
        ([], "--table is required"),
        (["--table", "2,3a", "--rows", "bga"], "--rows needs a single --table"),
        (["--table", "3a,9z"], "unknown table '9z'"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    if "--device" in args:
        from runners.device import cuda_available

        if cuda_available():
            pytest.skip("a CUDA device is present")
    out = ablate(*args, "--results-dir", str(tmp_path / "res"))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert not (tmp_path / "res" / "records").exists()


def test_unwritable_results_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = ablate("--table", "3a", "--rows", "lambda_1_8", "--results-dir", str(blocker / "res"))
    assert out.returncode == 2 and "not writable" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _common(tmp: Path, data: str) -> list[str]:
    return ["--table", "3a", "--rows", "lambda_1_8,lambda_1_16", "--recipe", TINY,
            "--data", data, "--results-dir", str(tmp), "--no-latency", "--no-progress"]  # fmt: skip


@pytest.mark.slow
def test_end_to_end_then_resume_is_a_no_op(tmp_path: Path, tiny_data: str) -> None:
    first = ablate(*_common(tmp_path, tiny_data), "--seeds", "2")
    assert first.returncode == 0, first.stderr
    assert "NOT Cityscapes" in first.stdout
    # progress counts runs done (by any copy); from the second run on it carries an ETA
    assert "[1/4] " in first.stdout and "[4/4, ETA " in first.stdout
    assert "lambda_1_8" in first.stdout and "19.93" in first.stdout  # paper GMACs beside ours
    frame = load_records(tmp_path)
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}
    assert set(frame["seed"]) == {0, 1}
    mtimes = {p: p.stat().st_mtime for p in (tmp_path / "records").rglob("*.json")}
    t0 = time.perf_counter()
    again = ablate(*_common(tmp_path, tiny_data), "--seeds", "2")
    assert again.returncode == 0, again.stderr
    assert "0 runs done now, 4 reused" in again.stdout
    assert time.perf_counter() - t0 < 30
    assert mtimes == {p: p.stat().st_mtime for p in (tmp_path / "records").rglob("*.json")}
    # latency can be re-taken on a quieter machine without retraining; mIoU is kept
    before = load_records(tmp_path).set_index(["spec_id", "seed"])["miou"]
    timed = ablate(*_common(tmp_path, tiny_data), "--rows", "lambda_1_8", "--remeasure-latency",
                   "--latency-repeats", "1", "--seeds", "2")  # fmt: skip
    assert timed.returncode == 2 and "contradict" in timed.stderr  # with --no-latency
    args = [a for a in _common(tmp_path, tiny_data) if a != "--no-latency"]
    timed = ablate(*args, "--remeasure-latency", "--latency-repeats", "1", "--seeds", "2")
    assert timed.returncode == 0, timed.stderr
    assert "re-timed 4 stored runs" in timed.stdout
    after = load_records(tmp_path).set_index(["spec_id", "seed"])
    assert (after["miou"] == before).all() and after["latency_ms"].notna().all()
    # one measurement per network: a spec's seeds share it (2 specs x 2 seeds here)
    assert timed.stdout.count("(2 stored runs)") == 2
    assert after.groupby(level="spec_id")["latency_ms"].nunique().eq(1).all()


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_same_records(tmp_path: Path, tiny_data: str) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runners.ablate", *_common(killed, tiny_data)],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    # kill as soon as the first record lands, while the second run is in progress
    deadline = time.time() + 300
    while time.time() < deadline and not list((killed / "records").rglob("*.json")):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # every file that looks like a record parses; the killed row left no record
    for path in (killed / "records").rglob("*.json"):
        json.loads(path.read_text())
    rerun = ablate(*_common(killed, tiny_data))
    assert rerun.returncode == 0, rerun.stderr
    straight = ablate(*_common(clean, tiny_data))
    assert straight.returncode == 0, straight.stderr

    def keys(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in (root / "records").rglob("*.json"))

    assert keys(killed) == keys(clean) and len(keys(clean)) == 2
    a, b = load_records(killed), load_records(clean)
    assert list(a["status"]) == ["ok", "ok"] and list(b["status"]) == ["ok", "ok"]
    assert not list((killed / "records").rglob("*.tmp*"))


# --- a dataset of another number of classes -------------------------------------------

FOLDER_CLASSES = ("background", "road", "car", "person", "sky")


@pytest.fixture(scope="module")
def five_class_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``folder:`` dataset of 5 classes (4 train + 2 val images, 64x128), made once."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("five")
    (root / "classes.txt").write_text("\n".join(FOLDER_CLASSES) + "\n")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            label = rng.integers(0, len(FOLDER_CLASSES), (4, 8), dtype=np.uint8)
            label = label.repeat(16, axis=0).repeat(16, axis=1)  # 64x128 blocks of a class
            image = (label[..., None] * 50 + rng.integers(0, 20, (64, 128, 3))).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"img{i}.png")
            Image.fromarray(label).save(root / "labels" / split / f"img{i}.png")
    return root


def test_a_five_class_folder_dataset_trains_and_fills_the_table(
    tmp_path: Path, five_class_folder: Path
) -> None:
    """Rows are sized for the data's 5 classes, and the table finds what was measured."""
    out = ablate("--table", "3a", "--rows", "lambda_1_8", "--recipe", TINY,
                 "--data", f"folder:{five_class_folder}", "--results-dir", str(tmp_path),
                 "--no-latency", "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    frame = load_records(tmp_path)
    assert list(frame["status"]) == ["ok"] and list(frame["num_classes"]) == [5]
    (row,) = [line for line in out.stdout.splitlines() if line.startswith("| lambda_1_8 ")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    headers = next(
        [c.strip() for c in line.strip("|").split("|")]
        for line in out.stdout.splitlines()
        if line.startswith("| Row ")
    )
    got = dict(zip(headers, cells))
    assert got["Status"] == "ok", row
    assert float(got["mIoU measured"]) == pytest.approx(100 * frame["miou"].iloc[0], abs=0.01)
    assert got["n"] == "1" and "nc=5" in got["Spec"]  # sized for the data
    # a folder dataset is not Cityscapes: no delta against the paper's mIoU, and a note
    assert got["Δ mIoU"] == "" and list(frame["dataset_kind"]) == ["folder"]
    assert "is not Cityscapes: measured mIoU is not comparable" in out.stdout


def _record(key: RecordKey, status: str = "ok") -> dict:
    reason = "diverged" if status == "failed" else None
    return {"schema": 1, "key": key.to_dict(), "status": status, "reason": reason,
            "metrics": {"miou": 0.5, "macs": 1000, "params": 10}, "timings": {}}  # fmt: skip


def test_a_run_another_copy_finished_meanwhile_is_not_reported_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another copy held run a when this one reached it, and stored a while this one
    ran b: the summary says nothing is still running elsewhere (it used to count a)."""
    spec, recipe = parse_spec("v2:bst=none"), parse_recipe("smoke")
    a, b = (PlannedRun(RecordKey.of(spec, recipe, "data-0", s), spec, recipe, s) for s in (0, 1))
    store = Store(tmp_path)

    def execute(run: PlannedRun, *_args: object, **_kw: object) -> dict:
        store.put(_record(a.key))  # the other copy finishes a meanwhile
        return _record(run.key)

    class Data:
        def prepare(self, progress: bool = True) -> None:
            pass

    monkeypatch.setattr(experiment, "execute_run", execute)
    with store.lock(a.key) as held:
        assert held
        outcome = ablate_run.run_ablation(
            [a, b], Data(), store, settings=ProfileSettings(latency=False), progress=False,  # type: ignore[arg-type]
        )  # fmt: skip
    assert outcome.ran == [b.key] and outcome.busy == []


def test_remeasure_times_each_deployed_network_once(tmp_path: Path) -> None:
    """Rows that differ only in training-only booster heads deploy one network: one
    measurement serves both, seeds included; a failed run is left untimed."""
    recipe = parse_recipe("smoke")
    runs = [
        PlannedRun(RecordKey.of(spec, recipe, "data-0", seed), spec, recipe, seed)
        for spec in (parse_spec("v2:bst=none"), parse_spec("v2"), parse_spec("v2:lam=0.125"))
        for seed in (0, 1)
    ]
    store = Store(tmp_path)
    for run in runs[:-1]:
        store.put(_record(run.key))
    store.put(_record(runs[-1].key, status="failed"))
    said: list[str] = []
    settings = ProfileSettings(warmup=1, repeats=2, threads=1, input_hw=(32, 64))
    done = ablate_run.remeasure_latency(runs, store, "cpu", settings, say=said.append, rounds=2)
    assert done == 5
    assert said[0] == "timing 2 networks at 32x64, 2 calls each in 2 turns"
    # the default spec with and without boosters: 4 runs, one timing, one line
    assert said[1].endswith(" ms  v2:bst=none, v2 (4 stored runs)")
    assert said[2].endswith(" ms  v2:lam=0.125 (1 stored run)")
    lat = [(store.get(r.key) or {})["metrics"].get("latency_ms") for r in runs]
    assert lat[0] == lat[1] == lat[2] == lat[3] and lat[0]["rounds"] == 2
    assert lat[0]["input_hw"] == [32, 64] and lat[0]["repeats"] == 2
    assert lat[4]["median"] != lat[0]["median"] and lat[5] is None
    assert all((store.get(r.key) or {})["metrics"]["miou"] == 0.5 for r in runs)


def test_an_ablation_times_its_networks_in_turns_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Latency is taken for every network to train, up front and in turns, and each run's
    record gets its network's: the same for rows that differ only in booster heads."""
    recipe = parse_recipe("smoke")
    specs = (parse_spec("v2:bst=none"), parse_spec("v2"), parse_spec("v2:lam=0.125"))
    runs = [PlannedRun(RecordKey.of(sp, recipe, "data-0", 0), sp, recipe, 0) for sp in specs]
    store = Store(tmp_path)
    given: dict[str, dict] = {}

    def execute(run: PlannedRun, *_args: object, latency: dict | None = None, **_kw: object):
        assert latency is not None
        given[run.spec.to_string()] = latency
        return _record(run.key)

    class Data:
        def prepare(self, progress: bool = True) -> None:
            pass

    said: list[str] = []
    monkeypatch.setattr(experiment, "execute_run", execute)
    settings = ProfileSettings(warmup=1, repeats=2, threads=1, input_hw=(32, 64))
    outcome = ablate_run.run_ablation(
        runs, Data(), store, settings=settings, progress=False, on_progress=said.append,  # type: ignore[arg-type]
    )  # fmt: skip
    assert len(outcome.ran) == 3
    assert "timing 2 networks at 32x64, 2 calls each in 5 turns" in said
    assert given["v2:bst=none"] == given["v2"] and given["v2"]["rounds"] == 5
    assert given["v2:lam=0.125"]["median"] != given["v2"]["median"]


def test_a_dry_run_times_rows_by_deployed_network() -> None:
    """Table 4's rows differ only in training-only booster heads: one network, one latency."""
    from runners.ablate.plan import plan_runs, resolve_tables
    from runners.data.source import parse_data_arg

    runs, _ = plan_runs(
        resolve_tables(["4"]), ["none", "s2_s3_s4"], parse_recipe("smoke"),
        parse_data_arg("synth"), 1,
    )  # fmt: skip
    settings = ProfileSettings(warmup=1, repeats=2, threads=1, input_hw=(32, 64))
    rows = ablate_run.dry_run_rows(runs, "cpu", settings)
    assert [r["row"] for r in rows] == ["4/none", "4/s2_s3_s4"]
    assert rows[0]["latency_ms"] is not None and rows[0]["latency_ms"] == rows[1]["latency_ms"]
    assert rows[0]["gmacs"] == rows[1]["gmacs"]
