"""Optuna search: spaces, hypervolume, the CLI's bad inputs, resume, store reuse, PostgreSQL."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import optuna
import pytest

from runners.search.config import SearchConfig
from runners.search.results import hypervolume
from runners.search.study import finished_trials, open_study
from runners.search.workers import split_trials
from searchspace.optuna_spaces import SPACES, get_space
from searchspace.v1 import BiSeNetV1Spec
from searchspace.v2 import BiSeNetV2Spec
from tests.test_bad_input import assert_one_line_error
from tests.test_bad_input import run as run_command

ROOT = Path(__file__).resolve().parent.parent
TINY_RECIPE = "smoke:budget=2,crop_hw=64+64,batch_size=2,warmup_iters=0"


def search(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m runners.search`` in a process of its own: only where the process matters
    (a restart, worker processes, a killed worker)."""
    return subprocess.run(
        [sys.executable, "-m", "runners.search", *args],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def search_here(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``python -m runners.search``'s ``main`` in this process, through the same ``run_cli``
    wrapper: (exit status, stdout, stderr). capfd, so that writes to the file descriptors
    (not only to sys.stderr) count as output too, as they would from a process."""
    return run_command("search", *args, capsys=capfd)


def test_every_space_samples_valid_specs() -> None:
    for space in SPACES.values():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        for _ in range(40):
            trial = study.ask()
            assert isinstance(space.sample(trial), (BiSeNetV1Spec, BiSeNetV2Spec))
            study.tell(trial, 0.0)
    grid = get_space("multipliers").grid()
    assert len(grid) >= 15
    assert len({get_space("multipliers").to_spec(p).spec_id for p in grid}) == len(grid)


def test_hypervolume_on_hand_made_points() -> None:
    ref = (0.0, 10.0)  # (mIoU, latency)
    assert hypervolume([(0.5, 4.0)], ref) == pytest.approx(0.5 * 6.0)
    # a dominated point adds nothing; a second front point adds its own strip
    assert hypervolume([(0.5, 4.0), (0.4, 5.0)], ref) == pytest.approx(3.0)
    assert hypervolume([(0.5, 4.0), (0.8, 8.0)], ref) == pytest.approx(0.5 * 4 + 0.8 * 2)
    assert hypervolume([(0.5, 12.0)], ref) == 0.0


def test_nadir_reference_lies_just_beyond_the_worst_point() -> None:
    from analysis.study_plots import nadir

    assert nadir([0.2, 0.4, 0.3], maximize=True) == pytest.approx(0.18)
    assert nadir([10.0, 30.0], maximize=False) == pytest.approx(32.0)
    assert nadir([5.0], maximize=False) == pytest.approx(5.5)  # one point: 10% of itself


def test_split_trials_uses_every_worker_exactly() -> None:
    assert split_trials(7, 3) == [3, 2, 2]
    assert split_trials(2, 3) == [1, 1]
    assert sum(split_trials(10, 4)) == 10


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--space", "nope"], "unknown search space"),
        (["--objectives", "miou,speed"], "unknown objective"),
        (["--trials", "0"], "--trials 0"),
        (["--max-gmacs", "0.01"], "no spec of space"),
        (["--max-latency-ms", "0.001", "--latency-hw", "64", "64"], "no spec of space"),
        (["--storage", "postgresql://u:p@127.0.0.1:1/db"], "cannot connect"),
        (["--storage", "redis://localhost"], "expected sqlite"),
        (["--pruner", "median"], "single objective"),
        (["--sampler", "bayes"], "unknown sampler"),
        (["--recipe", "huge"], "unknown recipe"),
        (["--export-best", "/proc/front"], "--export-best /proc/front: cannot create"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, args: list[str], needle: str, capfd: pytest.CaptureFixture[str]
) -> None:
    code, _, err = search_here(capfd, "--study", "s", "--results-dir", str(tmp_path), *args)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "optuna.db").exists()
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []  # nothing written


def test_study_resumes_reuses_trained_specs_and_guards_objectives(
    tmp_path: Path, tiny_data: str, capfd: pytest.CaptureFixture[str]
) -> None:
    common = ["--space", "multipliers", "--recipe", TINY_RECIPE, "--data", tiny_data,
              "--results-dir", str(tmp_path), "--latency-hw", "64", "64", "--sampler", "grid",
              "--latency-repeats", "1"]  # fmt: skip
    code, _, err = search_here(capfd, "--study", "a", "--trials", "2", *common)
    assert code == 0, err
    cfg = SearchConfig(space="multipliers", study="a", trials=3, results_dir=str(tmp_path),
                       recipe=TINY_RECIPE, data=tiny_data, sampler="grid")  # fmt: skip
    assert finished_trials(open_study(cfg, create=False)) == 2
    # restarting (a process of its own: nothing carried over in memory) continues to the
    # new target instead of starting over
    again = search("--study", "a", "--trials", "3", *common)
    assert again.returncode == 0, again.stderr
    study = open_study(cfg, create=False)
    assert finished_trials(study) == 3
    assert not any(t.user_attrs.get("cached") for t in study.trials)
    records = list((tmp_path / "records").rglob("*.json"))
    assert len(records) == 3
    # a second study with the same grid order trains nothing: every spec comes from the store
    code, _, err = search_here(capfd, "--study", "b", "--trials", "2", *common)
    assert code == 0, err
    cfg_b = SearchConfig(**{**cfg.__dict__, "study": "b"})
    assert all(t.user_attrs.get("cached") for t in open_study(cfg_b, create=False).trials)
    assert len(list((tmp_path / "records").rglob("*.json"))) == 3
    # the same study name with other objectives is refused and left untouched
    code, _, err = search_here(capfd, "--study", "a", "--trials", "5", "--objectives",
                               "miou,gmacs", *common)  # fmt: skip
    assert_one_line_error(code, err, "exists with objectives")
    assert finished_trials(open_study(cfg, create=False)) == 3


# --- a real PostgreSQL server on loopback -------------------------------------------


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# CI sets this: there the server must run, so what would skip the test fails it instead
REQUIRE_POSTGRES = os.environ.get("BISENET_LAB_TEST_POSTGRES") == "required"


def _no_server(reason: str) -> NoReturn:
    if REQUIRE_POSTGRES:
        pytest.fail(f"{reason} (BISENET_LAB_TEST_POSTGRES=required)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres_url():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        _no_server("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    as_user: dict = {}
    if os.geteuid() == 0:  # the server refuses to run as root: run it as 'postgres'
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            _no_server("running as root and there is no 'postgres' user to run the server")
        # no runuser/su needed; none of root's groups are kept
        as_user = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    # not under pytest's tmp folder: that is private to root, and the server runs as postgres
    base = Path(tempfile.mkdtemp(prefix="bisenet-pg-"))
    os.chmod(base, 0o777)
    data, port = base / "data", _free_port()

    def pg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        # cwd: a folder the server's user may enter (the checkout may be private to root)
        return subprocess.run(args, cwd=base, check=check, capture_output=True, text=True,
                              timeout=120, **as_user)  # fmt: skip

    try:
        # no locale: the environment's LANG may name a locale this machine lacks
        pg(initdb, "-D", str(data), "-U", "bench", "--auth=trust", "--no-locale", "-E", "UTF8")
        pg(pg_ctl, "-D", str(data), "-o", f"-p {port} -h 127.0.0.1 -k {base}",
           "-l", str(base / "log"), "-w", "start")  # fmt: skip
    except subprocess.CalledProcessError as exc:
        log = (base / "log").read_text() if (base / "log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"{exc.cmd[0]} failed: {exc.stderr}{exc.stdout}{log}", pytrace=False)
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=bench dbname=postgres",
                             autocommit=True) as conn:  # fmt: skip
            conn.execute("CREATE DATABASE study")
        yield f"postgresql://bench@127.0.0.1:{port}/study"
    finally:
        pg(pg_ctl, "-D", str(data), "-m", "fast", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.postgres
def test_three_workers_on_one_postgres_study(tmp_path: Path, tiny_data: str, postgres_url: str):
    out = search(
        "--space", "multipliers", "--study", "pg", "--trials", "6", "--workers", "3",
        "--storage", postgres_url, "--recipe", TINY_RECIPE, "--data", tiny_data,
        "--results-dir", str(tmp_path), "--latency-hw", "64", "64", "--latency-repeats", "1",
        "--objectives", "miou,gmacs", "--sampler", "random",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cfg = SearchConfig(space="multipliers", study="pg", trials=6, storage=postgres_url,
                       objectives=("miou", "gmacs"), recipe=TINY_RECIPE, data=tiny_data,
                       results_dir=str(tmp_path))  # fmt: skip
    study = open_study(cfg, create=False)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # every trained spec has exactly one record, and every trial points at one of them
    records = sorted((tmp_path / "records").rglob("*.json"))
    assert len(records) == len({t.user_attrs["spec_id"] for t in trials})
    stems = {f"{r.parent.name}__{r.stem}" for r in records}
    assert stems == {t.user_attrs["record"] for t in trials}


# --- failures, constraints, pruning, dead workers, export and plots --------------------


def _two_point_space(monkeypatch, bad_head: bool = False) -> str:
    """A 2-point space (alpha 0.25 / 0.5 at d 0.5); with ``bad_head`` alpha 0.5 is invalid."""
    from searchspace.optuna_spaces import Knob, SearchSpace
    from searchspace.presets import get_preset

    def to_spec(params):
        spec = get_preset("bisenetv2").replace(width_mult=params["width_mult"], depth_mult=0.5)
        if bad_head and params["width_mult"] == 0.5:
            return spec.replace(head_width=-3)  # validation rejects it: a bad spec
        return spec

    space = SearchSpace("two", "test space", (Knob("width_mult", (0.25, 0.5)),), to_spec)
    monkeypatch.setitem(SPACES, "two", space)
    return "two"


def test_a_bad_spec_fails_its_trial_and_the_study_goes_on(tmp_path: Path, monkeypatch) -> None:
    from runners.search.workers import run_search

    cfg = SearchConfig(space=_two_point_space(monkeypatch, bad_head=True), study="bad",
                       trials=2, objectives=("gmacs", "params"), sampler="grid",
                       results_dir=str(tmp_path), latency_hw=(64, 64))  # fmt: skip
    study = run_search(cfg)
    by_state = {t.state.name: t for t in study.trials}
    assert sorted(by_state) == ["COMPLETE", "FAIL"]
    assert by_state["FAIL"].params == {"width_mult": 0.5}
    assert "head_width" in by_state["FAIL"].user_attrs["fail_reason"]
    assert finished_trials(study) == 2  # a failure is a finished trial: the study is done


def test_a_nan_run_is_recorded_with_its_reason(tmp_path: Path, tiny_data: str, monkeypatch):
    from analysis.records import load_records
    from runners.search.workers import run_search

    # a learning rate of 1e30 makes the loss non-finite within a few steps: a real NaN run
    recipe = "smoke:budget=6,crop_hw=64+64,batch_size=2,warmup_iters=0,lr=1e30"
    cfg = SearchConfig(space=_two_point_space(monkeypatch), study="nan", trials=2,
                       objectives=("miou", "gmacs"), sampler="grid", recipe=recipe,
                       data=tiny_data, results_dir=str(tmp_path))  # fmt: skip
    study = run_search(cfg)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    for t in study.trials:
        assert "loss is" in t.user_attrs["fail_reason"], t.user_attrs
    frame = load_records(tmp_path)  # the store keeps the failures, so they are not re-run
    assert len(frame) == 2 and set(frame["status"]) == {"failed"}
    assert frame["reason"].str.contains("loss is").all()


# slow: 21-33 s on 2 cores (GMACs of the 15-point grid counted by the test, by the
# precheck and per proposal, five runs trained); CI runs it in its slow step
@pytest.mark.slow
def test_constraints_reject_before_training(tmp_path: Path, tiny_data: str) -> None:
    from runners.profile.complexity import build_on_meta, count_macs
    from runners.search.study import rejected_trials
    from runners.search.workers import run_search

    space = get_space("multipliers")
    gmacs = sorted(count_macs(build_on_meta(space.to_spec(p)), (64, 64)) / 1e9
                   for p in space.grid())  # fmt: skip
    cap = gmacs[4] + 1e-9  # 5 of the 15 points meet it
    cfg = SearchConfig(space="multipliers", study="cap", trials=5, objectives=("miou", "gmacs"),
                       sampler="grid", recipe=TINY_RECIPE, data=tiny_data, max_gmacs=cap,
                       results_dir=str(tmp_path), latency_hw=(64, 64))  # fmt: skip
    study = run_search(cfg)
    # --trials counts evaluated specs: all 5 feasible points, however many were rejected
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    rejected = [t for t in study.trials if t.state.name == "PRUNED"]
    assert len(complete) == 5 and finished_trials(study) == 5
    assert len(rejected) == rejected_trials(study) == len(study.trials) - 5 <= 10
    assert all(t.user_attrs["gmacs"] > cap for t in rejected)
    assert all("GMACs >" in t.user_attrs["rejected"] for t in rejected)
    assert len(list((tmp_path / "records").rglob("*.json"))) == 5  # nothing trained for the rest


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_single_objective_reports_intermediate_miou_and_is_pruned(
    tmp_path: Path, tiny_data: str
) -> None:
    from runners.search.objective import Objective, TrialFailed

    cfg = SearchConfig(space="multipliers", study="prune", trials=1, objectives=("miou",),
                       pruner="median", recipe="smoke:budget=8,crop_hw=64+64,batch_size=2,"
                       "warmup_iters=0", data=tiny_data, results_dir=str(tmp_path),
                       max_gmacs=50.0)  # fmt: skip
    study = optuna.create_study(direction="maximize", pruner=_AlwaysPrune())
    study.optimize(Objective(cfg), n_trials=1, catch=(TrialFailed,))
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    # the recipe gained an evaluation every budget // 4 iterations; the first one pruned it
    assert list(trial.intermediate_values) == [2]
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").rglob("*.json"))


class _PruneFromStep(optuna.pruners.BasePruner):
    def __init__(self, step: int) -> None:
        self.step = step

    def prune(self, study, trial) -> bool:
        return (trial.last_step or 0) >= self.step


def test_a_run_is_not_pruned_at_its_final_evaluation(tmp_path: Path, tiny_data: str) -> None:
    from runners.search.objective import Objective, TrialFailed

    cfg = SearchConfig(space="multipliers", study="p", trials=1, objectives=("miou",),
                       pruner="median", recipe="smoke:budget=8,crop_hw=64+64,batch_size=2,"
                       "warmup_iters=0", data=tiny_data, results_dir=str(tmp_path))  # fmt: skip
    study = optuna.create_study(direction="maximize", pruner=_PruneFromStep(8))
    study.optimize(Objective(cfg), n_trials=1, catch=(TrialFailed,))
    (trial,) = study.trials
    # evaluated at 2, 4, 6 and 8; the pruner would stop it at 8, but by then the work is
    # done, so the run completes and is stored for any later proposal of the same spec
    assert list(trial.intermediate_values) == [2, 4, 6, 8]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert len(list((tmp_path / "records").rglob("*.json"))) == 1


@pytest.mark.slow
def test_a_killed_worker_trial_is_failed_and_retried(tmp_path: Path, tiny_data: str) -> None:
    import signal
    import time

    recipe = "smoke:budget_kind=seconds,budget=6,crop_hw=64+64,batch_size=2,warmup_iters=0"
    args = ["--space", "multipliers", "--study", "hb", "--trials", "1", "--objectives",
            "miou,gmacs", "--recipe", recipe, "--data", tiny_data, "--results-dir",
            str(tmp_path), "--sampler", "random", "--grace-s", "2"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "runners.search", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    cfg = SearchConfig(space="multipliers", study="hb", trials=1, objectives=("miou", "gmacs"),
                       recipe=recipe, data=tiny_data, results_dir=str(tmp_path), grace_s=2)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "checkpoints").glob("*")):
        time.sleep(0.2)  # training has started once its run folder exists
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (dead,) = open_study(cfg, create=False).get_trials(deepcopy=False)
    assert dead.state == optuna.trial.TrialState.RUNNING  # nobody told the study
    time.sleep(3)  # past the 2 s grace period
    again = search(*args)
    assert again.returncode == 0, again.stderr
    trials = open_study(cfg, create=False).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == dead.params and trials[1].system_attrs["failed_trial"] == 0
    assert len(list((tmp_path / "records").rglob("*.json"))) == 1


def test_export_best_and_plots(
    tmp_path: Path, tiny_data: str, capfd: pytest.CaptureFixture[str]
) -> None:
    from analysis.study_plots import plot_study
    from runners.search.results import export_best, pareto_specs, reference_points, trials_frame
    from runners.search.workers import run_search
    from searchspace.presets import parse_spec

    cfg = SearchConfig(space="multipliers", study="front", trials=4, objectives=("miou", "gmacs"),
                       sampler="random", recipe=TINY_RECIPE, data=tiny_data,
                       results_dir=str(tmp_path), latency_hw=(64, 64))  # fmt: skip
    study = run_search(cfg)
    paths = export_best(study, tmp_path / "front")
    front = pareto_specs(study)
    assert paths and len(paths) == len(front)
    # every exported file is a preset the other commands accept (--spec FILE)
    assert [parse_spec(str(p)).spec_id for p in paths] == [s.spec_id for s, _ in front]
    code, _, err = run_command("profile", "--spec", str(paths[0]), "--input-hw", "64", "64",
                               "--no-latency", capsys=capfd)  # fmt: skip
    assert code == 0, err
    reference = reference_points(cfg)
    # bisenetv2 is the grid point (1.0, 1.0): trained here only if the study sampled it
    trained = any(t.params == {"width_mult": 1.0, "depth_mult": 1.0} for t in study.trials)
    assert ("miou" in reference["bisenetv2"]) == trained
    assert reference["bisenetv2_l"]["gmacs"] > 5 * reference["bisenetv2"]["gmacs"]
    written = {
        p.name for p in plot_study(study, trials_frame(study), tmp_path / "plots", reference)
    }
    for stem in ("pareto", "hypervolume", "importances"):
        assert any(stem in name and name.endswith(".png") for name in written), written


def test_enqueued_points_run_first_and_bad_points_are_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "points.json"
    good.write_text('[{"width_mult": 0.5, "depth_mult": 1.0}, {"width_mult": 1, "depth_mult": 2}]')
    code, _, err = search_here(capfd, "--space", "multipliers", "--study", "q", "--trials", "2",
                               "--objectives", "gmacs,params", "--results-dir",
                               str(tmp_path / "r"), "--latency-hw", "64", "64", "--enqueue",
                               str(good))  # fmt: skip
    assert code == 0, err
    cfg = SearchConfig(space="multipliers", study="q", trials=2, objectives=("gmacs", "params"),
                       results_dir=str(tmp_path / "r"))  # fmt: skip
    study = open_study(cfg, create=False)
    assert [t.params for t in study.trials] == [
        {"width_mult": 0.5, "depth_mult": 1.0},
        {"width_mult": 1.0, "depth_mult": 2.0},
    ]
    cases = {
        '{"width_mult": 0.5, "depth_mult": 1.0, "colour": 1}': "knob 'colour': not in space",
        '[{"width_mult": 0.5}]': "point 0: knob 'depth_mult': missing",
        '{"width_mult": 0.3, "depth_mult": 1.0}': "knob 'width_mult'=0.3: expected one of",
        "{not json": "malformed JSON",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        code, _, err = search_here(capfd, "--space", "multipliers", "--study", "b",
                                   "--results-dir", str(tmp_path / "b"), "--enqueue",
                                   str(bad))  # fmt: skip
        assert_one_line_error(code, err, message)
        assert err.count("\n") == 1, (text, err)
        assert not (tmp_path / "b").exists()  # refused before any study is made
    ge_only = dict(get_space("v2-full").cheapest_params(), block="ib", ge_gather_kernel=3)
    bad.write_text(__import__("json").dumps(ge_only))
    code, _, err = search_here(capfd, "--space", "v2-full", "--study", "c", "--results-dir",
                               str(tmp_path / "c"), "--enqueue", str(bad))  # fmt: skip
    assert_one_line_error(code, err, "'ge_gather_kernel'=3: does not apply here")
    assert not (tmp_path / "c").exists()


def test_grid_sampler_refuses_a_conditional_space(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, _, err = search_here(capfd, "--space", "v2-full", "--study", "g", "--sampler", "grid",
                               "--results-dir", str(tmp_path / "r"))  # fmt: skip
    assert_one_line_error(code, err, "space 'v2-full' is conditional")
    assert err.count("\n") == 1
    assert not (tmp_path / "r").exists()
