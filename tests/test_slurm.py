"""``--launcher slurm`` end to end on a real one-node SLURM (munge, slurmctld, slurmd from
Debian's packages, started by ``scripts/slurm.sh up``; no accounting daemon).

Each test submits real jobs with a recipe small enough to fit CI: a table as one array to
its report, a second call while it runs, ``--status`` against ``squeue``, ``--cancel``, a
task requeued mid-training, a task SIGKILLed mid-training, and search workers on
PostgreSQL and on a journal file with one worker killed mid-trial. The timelines are
printed (``pytest -rP`` shows them). Requeued jobs would wait out SLURM's requeue hold
(BeginTime = now + 120 s); the test moves that start time to now with ``scontrol update``,
which changes nothing of what the task does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.launch.ledger import read_launches
from runners.store.files import pid_alive
from runners.store.locks import Locks, read_lock
from runners.store.store import LOCKS_DIRNAME
from tests.test_search import postgres_url  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = os.environ.get("BISENET_LAB_TEST_SLURM") == "required"
TEST_CLUSTER = "bisenetlab"  # the ClusterName scripts/slurm.sh writes
SHORT = "smoke:budget=30,crop_hw=64+64,batch_size=2,warmup_iters=0"
MEDIUM = "smoke:budget=120,crop_hw=64+64,batch_size=2,warmup_iters=0"
SEARCH = "smoke:budget=60,crop_hw=64+64,batch_size=2,warmup_iters=0"
LONG = "smoke:budget=3000,crop_hw=64+64,batch_size=2,warmup_iters=0"


def _cannot(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (BISENET_LAB_TEST_SLURM=required)", pytrace=False)
    pytest.skip(reason)


def _cluster_name() -> str | None:
    try:
        proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"^ClusterName\s*=\s*(\S+)", proc.stdout, re.M)
    return match.group(1) if proc.returncode == 0 and match else None


@pytest.fixture(scope="module")
def cluster() -> str:
    """The one-node test cluster, started (and installed, as root) when it is not up."""
    if _cluster_name() is None:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "slurm.sh"), "up"],
                              capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
        if proc.returncode != 0:
            _cannot(f"SLURM cannot start here: {proc.stderr.strip().splitlines()[-1:]}")
    name = _cluster_name()
    if name != TEST_CLUSTER:
        _cannot(f"SLURM here is cluster {name!r}, not the test cluster scripts/slurm.sh makes")
    return name


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=check)


def ablate(*argv: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "runners.ablate", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def queue(*job_ids: str) -> dict[str, str]:
    """squeue's unfinished jobs among ``job_ids``: job -> state."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    proc = sh("squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T", check=False)
    return dict(line.split("|") for line in proc.stdout.split()) if proc.returncode == 0 else {}


def wait_until(predicate, timeout_s: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(every)


def holder(results: Path) -> dict | None:
    """The one live lock holder in the results folder (with its iteration), if any."""
    live = Locks(results / LOCKS_DIRNAME, 600, 600).live_holders()
    return next(iter(live.values()), None)


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("records/**/*.json"))]


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, what: str) -> None:
        print(f"  t={time.monotonic() - self.t0:6.1f} s  {what}")


def plan(data: str, results: Path, recipe: str, rows: str, seeds: int = 1) -> list[str]:
    return ["--table", "3a", "--rows", rows, "--recipe", recipe, "--data", data,
            "--results-dir", str(results), "--seeds", str(seeds), "--no-progress"]  # fmt: skip


SLURM = ["--launcher", "slurm", "--cpus-per-run", "1", "--time", "20"]


# --- a table as one array, a second call, status against squeue, the report -----------------


def test_table_as_one_array_to_its_report(cluster: str, tiny_data: str, tmp_path: Path) -> None:
    at = Timeline()
    res = tmp_path / "res"
    args = plan(tiny_data, res, SHORT, "lambda_1_8,lambda_1_16", seeds=2)
    # held at submission, so that status and squeue can be compared while nothing moves
    out = ablate(*args, *SLURM, "--latency-repeats", "2", "--slurm-arg", "hold").stdout
    (launch,) = read_launches(res)
    array = launch.tasks[0].job_id.split("_")[0]
    at(f"submitted array {array} (4 runs) and report job {launch.report.job_id}")
    assert "4 runs as array job(s)" in out and len(launch.tasks) == 4

    again = ablate(*args, *SLURM)
    assert "nothing to launch" in again.stdout and len(read_launches(res)) == 1
    at("second launcher call: nothing submitted")

    status = json.loads(ablate(*args, "--status", "--json").stdout)
    listed = queue(*launch.job_ids())
    for run, task in zip(status["runs"], launch.tasks, strict=True):
        assert run["state"] == "queued" and listed[task.job_id] == "PENDING"
        assert run["job"] == f"slurm {task.job_id} pending (JobHeldUser)", run
    at("status: 4 queued, each its array task held in squeue")

    sh("scontrol", "release", array, launch.report.job_id)
    seen_running = wait_until(
        lambda: [r for r in json.loads(ablate(*args, "--status", "--json").stdout)["runs"]
                 if r["state"] == "running"],
        120, "a running task", every=0.2,
    )  # fmt: skip
    for run in seen_running:  # running in the store: its job is the one squeue runs
        job = run["job"].removeprefix("slurm ")
        assert job in {t.job_id for t in launch.tasks}
    at(f"released; status shows {seen_running[0]['job']} running")

    wait_until(lambda: not queue(*launch.job_ids()), 240, "the arrays and the report job")
    at("squeue lists none of the launch's jobs")
    done = records(res)
    assert len(done) == 4 and all(r["status"] == "ok" for r in done)
    assert all((r["metrics"].get("latency_ms") or {}).get("median") for r in done)  # re-timed
    report = (res / "launches" / launch.launch_id / "report.md").read_text()
    assert "lambda_1_8" in report and "lambda_1_16" in report
    final = ablate(*args)
    assert "0 runs done now, 4 reused" in final.stdout and "| lambda_1_8 |" in final.stdout
    at("report written; the table printed from the stored records")


# --- requeue and SIGKILL mid-training -------------------------------------------------------


def _log_text(results: Path, launch_index: int = 0) -> str:
    launch = read_launches(results)[launch_index]
    folder = results / "launches" / launch.launch_id
    return "".join(p.read_text() for p in sorted(folder.glob("*/*_log.err")))


def test_requeued_task_resumes_where_it_stopped(
    cluster: str, tiny_data: str, tmp_path: Path
) -> None:
    at = Timeline()
    res, ref = tmp_path / "requeued", tmp_path / "straight"
    ablate(*plan(tiny_data, res, MEDIUM, "lambda_1_8"), *SLURM, "--no-latency")
    ablate(*plan(tiny_data, ref, MEDIUM, "lambda_1_8"), *SLURM, "--no-latency")
    job = read_launches(res)[0].tasks[0].job_id
    at(f"submitted job {job} and an uninterrupted copy of the same run")
    running = wait_until(lambda: (h := holder(res)) and (h.get("iteration") or 0) >= 10 and h,
                         120, "iteration 10")  # fmt: skip
    sh("scontrol", "requeue", job)
    at(f"scontrol requeue {job} at iteration {running['iteration']} (or a little later)")
    wait_until(lambda: queue(job).get(job.split("_")[0]) == "PENDING", 60, "the requeued job")
    sh("scontrol", "update", f"jobid={job}", "StartTime=now")  # skip the 120 s requeue hold
    at("requeued job pending; its hold moved to now")
    wait_until(lambda: not queue(job) and records(res), 300, "the requeued run's record")
    wait_until(lambda: records(ref), 300, "the uninterrupted run's record")
    at("both finished")
    log = _log_text(res)
    stopped = int(re.search(r"SIGTERM: stopping at iteration (\d+)", log).group(1))
    resumed = int(re.search(r"resumed from iteration (\d+)", log).group(1))
    print(f"  stopped at iteration {stopped}, resumed at {resumed}: "
          f"{stopped - resumed} iterations redone")  # fmt: skip
    assert stopped == resumed and stopped > 0
    (a,), (b,) = records(res), records(ref)
    assert a["train"]["iterations"] == b["train"]["iterations"] == 120
    assert a["metrics"]["miou"] == b["metrics"]["miou"], (
        a["metrics"]["miou"],
        b["metrics"]["miou"],
    )
    assert a["attempts"] == 1  # a requeue is not a failed attempt


def test_sigkilled_task_is_taken_over_and_finishes(
    cluster: str, tiny_data: str, tmp_path: Path
) -> None:
    at = Timeline()
    res = tmp_path / "res"
    args = plan(tiny_data, res, MEDIUM, "lambda_1_8")
    ablate(
        *args, *SLURM, "--no-latency", "--checkpoint-minutes", "0.01"
    )  # one at least every 0.6 s
    job = read_launches(res)[0].tasks[0].job_id
    killed = wait_until(lambda: (h := holder(res)) and (h.get("iteration") or 0) >= 15 and h,
                        120, "iteration 15")  # fmt: skip
    os.kill(killed["pid"], signal.SIGKILL)
    at(f"SIGKILL to the task's process (pid {killed['pid']}) at iteration >= {killed['iteration']}")
    wait_until(lambda: not queue(job), 60, "the killed job to end")
    status = json.loads(ablate(*args, "--status", "--json").stdout)
    assert status["runs"][0]["state"] == "missing", status  # dead holder, no record
    again = ablate(*args, *SLURM, "--no-latency")
    assert "1 to submit" in again.stdout
    at("job ended; the run shows missing; the same command submitted it again")
    wait_until(lambda: records(res), 300, "the record")
    (record,) = records(res)
    assert record["status"] == "ok" and record["train"]["iterations"] == 120
    resumed = int(re.search(r"resumed from iteration (\d+)", _log_text(res, 1)).group(1))
    print(f"  killed at iteration >= {killed['iteration']}, resumed from {resumed}")
    assert resumed >= killed["iteration"] - 5  # at most ~0.6 s of work lost
    at("finished from the checkpoint")


# --- cancel ------------------------------------------------------------------------------------


def test_cancel_leaves_nothing_running(cluster: str, tiny_data: str, tmp_path: Path) -> None:
    at = Timeline()
    res = tmp_path / "res"
    args = plan(tiny_data, res, LONG, "lambda_1_8,lambda_1_16")
    ablate(*args, *SLURM, "--no-latency")
    (launch,) = read_launches(res)
    first = wait_until(lambda: holder(res), 120, "a running task")
    at(f"submitted; {first['array_job_id']}_{first['array_task']} training")
    out = ablate(*args, "--cancel").stdout
    at(out.strip().splitlines()[-1])
    assert "cancelled" in out and not queue(*launch.job_ids())
    assert not Locks(res / LOCKS_DIRNAME, 600, 600).live_holders()
    assert not [p for p in (res / LOCKS_DIRNAME).glob("*.lock") if read_lock(p)]
    assert not pid_alive(first["pid"])
    assert read_launches(res)[0].cancelled is not None
    states = {r["state"] for r in json.loads(ablate(*args, "--status", "--json").stdout)["runs"]}
    assert states == {"missing"}


# --- search workers on the cluster ------------------------------------------------------------


def _search(
    study: str, storage: str, tiny_data: str, results: Path, *extra: str
) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "runners.search", "--study", study, "--storage", storage,
            "--trials", "4", "--space", "multipliers", "--objectives", "miou,gmacs",
            "--sampler", "random", "--recipe", SEARCH, "--data", tiny_data,
            "--results-dir", str(results), "--grace-s", "4", *extra]  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_search_workers_array_with_one_killed_mid_trial(
    cluster: str, tiny_data: str, tmp_path: Path, kind: str, request
) -> None:
    import optuna

    at = Timeline()
    storage = (str(tmp_path / "s.journal") if kind == "journal"
               else request.getfixturevalue("postgres_url"))  # fmt: skip
    results = tmp_path / "res"
    out = _search(f"s-{kind}", storage, tiny_data, results, "--launcher", "slurm", "--workers", "2",
                  "--cpus-per-run", "1", "--time", "20").stdout  # fmt: skip
    array = re.search(r"as array job\(s\) (\d+)", out).group(1)
    at(f"submitted 2 workers as array {array} on {kind}")

    def a_training_worker() -> dict | None:
        # the run locks (which note the iteration), not the journal's trial locks
        live = Locks(results / LOCKS_DIRNAME, 600, 600).live_holders().values()
        return next(
            (h for h in live
             if h.get("array_job_id") == array and (h.get("iteration") or 0) >= 5),
            None,
        )  # fmt: skip

    victim = wait_until(a_training_worker, 180, "a worker mid-trial")
    os.kill(victim["pid"], signal.SIGKILL)
    at(f"SIGKILL to worker {array}_{victim['array_task']} mid-trial")
    wait_until(lambda: not queue(array), 400, "the surviving worker to finish the study")
    at("the array has ended")
    study = optuna.load_study(study_name=f"s-{kind}", storage=(
        optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
        if kind == "journal" else storage))  # fmt: skip
    states = [t.state.name for t in study.trials]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    print(f"  trials: {states}")
    assert len(complete) >= 4 and len(failed) == 1, states  # the killed one: failed, not counted
    retried = [t for t in complete if t.system_attrs.get("failed_trial") == failed[0].number]
    assert retried and retried[0].params == failed[0].params
    at("the killed trial is failed and its copy completed with the same parameters")
