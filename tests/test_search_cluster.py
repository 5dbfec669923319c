"""Search workers on a cluster: a journal file storage, dead workers found by trial locks,
one latency device per study, and no SQLite for workers on many nodes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest

from runners.env import device_name
from runners.search.config import SearchConfig, check_storage_for_launcher, storage_kind
from runners.search.stale import WORKER_ATTR, TrialLocks, queue_retry, uses_trial_locks
from runners.search.study import (
    LATENCY_DEVICE_ATTR,
    claim_latency_device,
    finished_trials,
    open_study,
)
from searchspace.errors import UsageError
from searchspace.optuna_spaces import get_space
from tests.test_bad_input import assert_one_line_error
from tests.test_search import TINY_RECIPE, search, search_here

S = optuna.trial.TrialState
FAST = ["--space", "multipliers", "--latency-hw", "64", "64", "--latency-repeats", "1",
        "--sampler", "random"]  # fmt: skip


def _lock_files(results: Path) -> list[str]:
    return sorted(p.name for p in (results / "locks").glob("search__*"))


def test_journal_study_runs_end_to_end(
    tmp_path: Path, tiny_data: str, capfd: pytest.CaptureFixture[str]
) -> None:
    journal, results = tmp_path / "shared" / "s.journal", tmp_path / "r"
    code, _, err = search_here(capfd, *FAST, "--study", "j", "--trials", "2", "--recipe",
                               TINY_RECIPE, "--data", tiny_data, "--results-dir", str(results),
                               "--storage", f"journal:{journal}")  # fmt: skip
    assert code == 0, err
    assert journal.is_file() and not (results / "optuna.db").exists()
    cfg = SearchConfig(space="multipliers", study="j", trials=2, storage=str(journal),
                       recipe=TINY_RECIPE, data=tiny_data, results_dir=str(results))  # fmt: skip
    assert cfg.storage_url == f"journal:{journal}"  # a bare PATH.journal is the same storage
    study = open_study(cfg, create=False)
    assert uses_trial_locks(study)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [S.COMPLETE, S.COMPLETE]
    assert len(list((results / "records").rglob("*.json"))) == 2
    # each trial names who ran it and its lock, released once the study was told
    for t in trials:
        assert t.user_attrs[WORKER_ATTR]["pid"] == os.getpid()
        assert t.user_attrs[WORKER_ATTR]["lock"].startswith(f"search__j__t{t.number}__")
        assert t.user_attrs["latency_device"] == device_name("cpu")
    assert _lock_files(results) == []
    assert study.user_attrs[LATENCY_DEVICE_ATTR] == device_name("cpu")


def _claim_and_die(cfg: SearchConfig, number: int) -> int:
    """A forked worker that takes ``number``'s trial lock, names itself on the trial, and is
    SIGKILLed while holding it; returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child: nothing of pytest's runs here, and it never returns
        try:
            study = open_study(cfg, create=False)  # its own storage object, as a worker has
            frozen = study.get_trials(deepcopy=False)[number]

            class Claimed:  # what TrialLocks.claim uses of a trial
                def __init__(self) -> None:
                    self.study, self.number = study, number

                def set_user_attr(self, key: str, value: object) -> None:
                    study._storage.set_trial_user_attr(frozen._trial_id, key, value)

            TrialLocks(Path(cfg.results_dir) / "locks", cfg.grace_s).claim(Claimed())
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return pid


def test_a_dead_workers_trial_is_failed_and_retried_with_its_params(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from runners.search.workers import run_search

    results = tmp_path / "r"
    cfg = SearchConfig(space="multipliers", study="dead", trials=3, objectives=("gmacs", "params"),
                       sampler="random", storage=f"journal:{tmp_path / 's.journal'}",
                       results_dir=str(results), latency_hw=(64, 64))  # fmt: skip
    study = open_study(cfg)
    space = get_space(cfg.space)
    dead, live = study.ask(), study.ask()
    space.sample(dead)
    space.sample(live)
    mine = TrialLocks(results / "locks", cfg.grace_s)
    mine.claim(live)  # a live worker (this process) runs trial 1 throughout
    dead_pid = _claim_and_die(cfg, dead.number)
    (lock,) = [n for n in _lock_files(results) if "__t0__" in n]
    assert [t.state for t in study.get_trials(deepcopy=False)] == [S.RUNNING, S.RUNNING]
    assert study.trials[0].user_attrs[WORKER_ATTR]["pid"] == dead_pid

    # a heartbeat grace of 60 s, yet no wait: the lock's holder is a dead pid of this host
    study = run_search(cfg)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [S.FAIL, S.RUNNING, S.COMPLETE, S.COMPLETE]
    assert "fail_reason" not in trials[0].user_attrs  # not a result: it does not count
    retry = trials[2]
    assert retry.params == dead.params and len(dead.params) == 2
    assert retry.system_attrs["failed_trial"] == 0 and retry.system_attrs["retry_history"] == [0]
    assert retry.user_attrs[WORKER_ATTR]["pid"] == os.getpid()
    # the live worker's trial is under way: it counts towards --trials and is left alone
    assert finished_trials(study) == 2
    assert lock not in _lock_files(results)  # the dead lock is cleared away
    assert "trial 0's worker" in capfd.readouterr().err
    study.tell(live.number, [1.0, 1.0])
    mine.release()
    assert finished_trials(study) == 3 and _lock_files(results) == []
    assert len(run_search(cfg).trials) == 4  # done: nothing more is asked


def test_retries_stop_after_two(tmp_path: Path) -> None:
    study = optuna.create_study()
    dist = optuna.distributions.CategoricalDistribution([1, 2])
    for history, queued in (([], True), ([0], True), ([0, 2], False)):
        attrs = {"failed_trial": 0, "retry_history": history} if history else {}
        failed = optuna.trial.create_trial(state=S.FAIL, params={"k": 2},
                                           distributions={"k": dist}, system_attrs=attrs,
                                           user_attrs={WORKER_ATTR: {"pid": 1}, "spec": "x"})  # fmt: skip
        failed.number = 7
        before = len(study.trials)
        assert queue_retry(study, failed) is queued
        assert len(study.trials) == before + queued
    waiting = study.get_trials(states=(S.WAITING,))
    assert [t.system_attrs["retry_history"] for t in waiting] == [[7], [0, 7]]
    assert all(t.params == {"k": 2} and t.user_attrs == {"spec": "x"} for t in waiting)


def test_a_trial_not_yet_claimed_is_dead_only_when_old(tmp_path: Path, monkeypatch) -> None:
    import runners.search.stale as stale

    study = optuna.create_study()  # in memory: no heartbeat, so trial locks
    trial = study.ask()
    locks = TrialLocks(tmp_path / "locks", grace_s=60)
    assert locks.fail_dead_trials(study) == []  # its worker may still be sampling
    monkeypatch.setattr(stale, "UNCLAIMED_GRACE_S", 0.0)
    locks = TrialLocks(tmp_path / "locks", grace_s=0.01)
    time.sleep(0.05)
    assert locks.fail_dead_trials(study) == [trial.number]
    assert study.trials[0].state == S.FAIL and study.trials[1].state == S.WAITING


def test_a_worker_on_another_node_is_judged_by_its_heartbeat(tmp_path: Path) -> None:
    """Another host's pid cannot be asked: its lock lives while its heartbeat is fresh."""
    import json

    folder = tmp_path / "locks"
    folder.mkdir()
    study = optuna.create_study()
    trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, WORKER_ATTR,
                                       {"host": "node-b", "pid": 1, "lock": "search__x__t0__ab",
                                        "locks_dir": str(folder)})  # fmt: skip
    path = folder / "search__x__t0__ab.lock"
    locks = TrialLocks(folder, grace_s=60)
    for age, live in ((5, True), (120, False)):
        beat = time.time() - age
        path.write_text(json.dumps({"pid": 1, "hostname": "node-b", "heartbeat": beat}))
        os.utime(path, (beat, beat))
        assert locks.is_live(study.trials[0], {}) is live
    assert locks.fail_dead_trials(study) == [0] and not path.exists()


def test_a_worker_waits_out_the_grace_of_the_last_trial_another_node_runs(tmp_path: Path) -> None:
    """The study's last trial is under way on another node whose heartbeat is still fresh
    when this worker would leave. The worker waits a grace period instead: the node died,
    so its trial is failed and run here again, and the study completes (it used to leave at
    once, with the trial RUNNING and one trial short)."""
    import json

    from runners.search.workers import run_search

    results = tmp_path / "r"
    cfg = SearchConfig(space="multipliers", study="wait", trials=1, objectives=("gmacs", "params"),
                       sampler="random", storage=f"journal:{tmp_path / 's.journal'}",
                       results_dir=str(results), latency_hw=(64, 64), grace_s=2)  # fmt: skip
    study = open_study(cfg)
    trial = study.ask()
    get_space(cfg.space).sample(trial)
    folder = results / "locks"
    folder.mkdir(parents=True)
    study._storage.set_trial_user_attr(trial._trial_id, WORKER_ATTR,
                                       {"host": "node-b", "pid": 1, "lock": "search__w__t0__ab",
                                        "locks_dir": str(folder.resolve())})  # fmt: skip
    beat = time.time()  # fresh now; node-b never beats again
    lock = folder / "search__w__t0__ab.lock"
    lock.write_text(json.dumps({"pid": 1, "hostname": "node-b", "heartbeat": beat}))
    t0 = time.monotonic()
    study = run_search(cfg)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [S.FAIL, S.COMPLETE] and finished_trials(study) == 1
    assert study.trials[1].params == trial.params
    assert time.monotonic() - t0 >= 2  # it waited for the heartbeat to go stale


@pytest.mark.parametrize(
    "args",
    [
        ["--objectives", "gmacs,latency_ms"],
        ["--objectives", "miou,gmacs", "--max-latency-ms", "1e6"],
    ],
)
def test_a_worker_on_another_device_kind_is_refused(
    tmp_path: Path, args: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    objectives = tuple(args[1].split(","))
    cfg = SearchConfig(space="multipliers", study="lat", trials=2, objectives=objectives,
                       storage=f"journal:{tmp_path / 's.journal'}",
                       results_dir=str(tmp_path / "r"))  # fmt: skip
    open_study(cfg).set_user_attr(LATENCY_DEVICE_ATTR, "Imaginary NPU 9000")
    code, _, err = search_here(capfd, *FAST, "--study", "lat", "--trials", "2", *args,
                               "--results-dir", str(tmp_path / "r"),
                               "--storage", f"journal:{tmp_path / 's.journal'}")  # fmt: skip
    assert_one_line_error(code, err, "timed its latencies on 'Imaginary NPU 9000'")
    assert repr(device_name("cpu")) in err and "constraint=" in err and "gmacs" in err
    assert open_study(cfg, create=False).trials == []


def test_a_study_without_latency_ignores_the_device(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    storage = f"journal:{tmp_path / 's.journal'}"
    cfg = SearchConfig(space="multipliers", study="g", trials=1, objectives=("gmacs", "params"),
                       storage=storage, results_dir=str(tmp_path / "r"))  # fmt: skip
    open_study(cfg).set_user_attr(LATENCY_DEVICE_ATTR, "Imaginary NPU 9000")
    code, _, err = search_here(capfd, *FAST, "--study", "g", "--trials", "1", "--objectives",
                               "gmacs,params", "--results-dir", str(tmp_path / "r"),
                               "--storage", storage)  # fmt: skip
    assert code == 0, err
    assert finished_trials(open_study(cfg, create=False)) == 1


def test_the_first_latency_names_the_study_device() -> None:
    study = optuna.create_study()
    claim_latency_device(study, "CPU A")
    claim_latency_device(study, "CPU A")
    assert study.user_attrs[LATENCY_DEVICE_ATTR] == "CPU A"
    with pytest.raises(UsageError, match=r"timed its latencies on 'CPU A'.*'GPU B'"):
        claim_latency_device(study, "GPU B")


@pytest.mark.parametrize(
    "storage,launcher,refused",
    [
        (None, "slurm", True),
        ("sqlite:////shared/optuna.db", "slurm", True),
        (None, None, False),
        (None, "local", False),
        ("sqlite:///x.db", "local", False),
        ("postgresql://u@db.cluster/study", "slurm", False),
        ("journal:/shared/study.journal", "slurm", False),
        ("/shared/study.journal", "slurm", False),
    ],
)
def test_slurm_refuses_sqlite(storage: str | None, launcher: str | None, refused: bool) -> None:
    if not refused:
        check_storage_for_launcher(storage, launcher)
        return
    with pytest.raises(UsageError) as exc:
        check_storage_for_launcher(storage, launcher)
    message = str(exc.value)
    assert "\n" not in message and "SQLite" in message
    assert "postgresql://" in message and "journal:PATH" in message
    assert storage_kind(storage) == "sqlite"


@pytest.mark.parametrize(
    "storage,needle",
    [
        ("journal:", "give the journal file's path"),
        ("journal:{tmp}", "is a folder"),
        ("journal:/proc/nope/s.journal", "cannot create its folder"),
        ("{tmp}/notes.journal", "not an Optuna journal"),
        ("journal:/proc/s.journal", "--storage journal:/proc/s.journal: "),
    ],
)
def test_a_bad_journal_path_is_one_line(
    tmp_path: Path, storage: str, needle: str, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.journal").write_text("shopping list\n")
    storage = storage.format(tmp=tmp_path)
    code, _, err = search_here(capfd, "--study", "s", "--objectives", "gmacs,params",
                               "--results-dir", str(tmp_path / "r"), "--storage",
                               storage)  # fmt: skip
    assert_one_line_error(code, err, needle)
    assert (tmp_path / "notes.journal").read_text() == "shopping list\n"  # left alone
    assert not list(tmp_path.glob("*.lock")) and not Path("/proc/s.journal").exists()


# slow: two spawned worker processes, each importing torch (14 s on a quiet 2-core Xeon,
# more when the cores are shared)
@pytest.mark.slow
def test_two_worker_processes_share_a_journal(tmp_path: Path, tiny_data: str) -> None:
    journal, results = tmp_path / "s.journal", tmp_path / "r"
    out = search(*FAST, "--study", "w", "--trials", "4", "--workers", "2", "--objectives",
                 "miou,latency_ms", "--recipe", TINY_RECIPE, "--data", tiny_data,
                 "--results-dir", str(results), "--storage", str(journal))  # fmt: skip
    assert out.returncode == 0, out.stderr
    cfg = SearchConfig(space="multipliers", study="w", trials=4, storage=str(journal),
                       recipe=TINY_RECIPE, data=tiny_data, results_dir=str(results))  # fmt: skip
    study = open_study(cfg, create=False)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == S.COMPLETE for t in trials)
    assert len({t.user_attrs[WORKER_ATTR]["pid"] for t in trials}) == 2
    assert {t.user_attrs["latency_device"] for t in trials} == {device_name("cpu")}
    assert _lock_files(results) == []


# slow: a worker killed mid-training and a restart that retries its trial (about 20 s)
@pytest.mark.slow
def test_a_killed_worker_on_a_journal_is_retried_at_once(tmp_path: Path, tiny_data: str) -> None:
    import subprocess
    import sys

    from tests.test_search import ROOT

    recipe = "smoke:budget_kind=seconds,budget=6,crop_hw=64+64,batch_size=2,warmup_iters=0"
    storage, results = f"journal:{tmp_path / 's.journal'}", tmp_path / "r"
    args = [*FAST, "--study", "k", "--trials", "1", "--objectives", "miou,gmacs", "--recipe",
            recipe, "--data", tiny_data, "--results-dir", str(results), "--storage", storage]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "runners.search", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not list((results / "checkpoints").glob("*")):
        time.sleep(0.2)  # training has started once its run folder exists
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cfg = SearchConfig(space="multipliers", study="k", trials=1, objectives=("miou", "gmacs"),
                       storage=storage, recipe=recipe, data=tiny_data,
                       results_dir=str(results))  # fmt: skip
    (dead,) = open_study(cfg, create=False).get_trials(deepcopy=False)
    assert dead.state == S.RUNNING and dead.user_attrs[WORKER_ATTR]["pid"] == proc.pid
    again = search(*args)  # no wait for a grace period: the dead pid is on this host
    assert again.returncode == 0, again.stderr
    trials = open_study(cfg, create=False).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [S.FAIL, S.COMPLETE]
    assert trials[1].params == dead.params and trials[1].system_attrs["failed_trial"] == 0
    assert len(list((results / "records").rglob("*.json"))) == 1
    assert _lock_files(results) == []
