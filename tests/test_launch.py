"""The local launcher, the ledger, ``--status`` and ``--cancel``: real processes through
submitit, on the tiny built-in dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.ablate.plan import plan_runs, resolve_tables
from runners.data.source import parse_data_arg
from runners.launch.ledger import Launch, Task, read_launches, write_launch
from runners.launch.status import collect_status, format_status
from runners.store import Store
from runners.store.files import pid_alive
from searchspace.atomic import HOST
from searchspace.cli import run_cli
from searchspace.recipes import parse_recipe

ROOT = Path(__file__).resolve().parent.parent
TINY = "smoke:budget=3,crop_hw=64+64,batch_size=2,warmup_iters=0"
LONG = "smoke:budget=2000,crop_hw=64+64,batch_size=2,warmup_iters=0"


def ablate(capsys, *argv: str) -> tuple[int, str, str]:
    from runners.ablate.__main__ import main

    with pytest.raises(SystemExit) as done:
        run_cli(main, list(argv))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def plan(data: str, recipe: str, rows: list[str], seeds: int):
    source = parse_data_arg(data, check=())
    runs, _ = plan_runs(resolve_tables(["3a"]), rows, parse_recipe(recipe), source, seeds)
    return runs


def fake_record(run, status: str = "ok", **extra) -> dict:
    return {
        "schema": 1, "key": run.key.to_dict(), "status": status,
        "reason": "loss is nan at iteration 2\nmore" if status == "failed" else None,
        "metrics": {"miou": 0.25}, "train": {"seconds": 100.0}, **extra,
    }  # fmt: skip


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


# --- bad input: one line, exit 2, nothing started ------------------------------------------

BAD = [
    (["--max-running", "0", "--launcher", "local"], "--max-running 0: must be >= 1"),
    (["--max-attempts", "0"], "--max-attempts 0: must be >= 1"),
    (["--launcher", "cluster9"], "--launcher 'cluster9': unknown (known: local, slurm)"),
    (["--launcher", "local", "--remeasure-latency"], "--launcher with --remeasure-latency"),
    (["--max-running", "2"], "--max-running needs --launcher"),
    (["--status", "--cancel"], "give one of them"),
    (["--json"], "--json goes with --status"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD)
def test_bad_launcher_input_is_one_line_and_starts_nothing(
    argv: list[str], needle: str, tmp_path: Path, capsys
) -> None:
    res = tmp_path / "res"
    code, _, err = ablate(capsys, "--table", "3a", "--results-dir", str(res), *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not res.exists()


def test_a_dry_run_launch_prints_the_tasks_and_starts_nothing(
    tmp_path: Path, tiny_data: str, capsys
) -> None:
    res = tmp_path / "res"
    code, out, _ = ablate(
        capsys, "--table", "3a", "--rows", "lambda_1_8,lambda_1_16", "--recipe", TINY,
        "--data", tiny_data, "--results-dir", str(res), "--launcher", "local",
        "--max-running", "2", "--dry-run",
    )  # fmt: skip
    assert code == 0
    assert "would start 2 local process(es), nothing started" in out
    assert "task 0: device cpu" in out and "task 1: device cpu" in out
    assert "3a/lambda_1_16 seed 0" in out
    assert not (res / "launches").exists() and not list(res.glob("records/*/*.json"))


# --- status ------------------------------------------------------------------------------


def test_status_of_a_missing_or_empty_folder_is_empty_not_an_error(tmp_path: Path, capsys) -> None:
    gone = tmp_path / "never"
    code, out, err = ablate(capsys, "--table", "3a", "--status", "--results-dir", str(gone))
    assert code == 0 and err == ""
    assert "5 runs: 0 stored, 0 running, 0 failed, 0 queued, 5 missing" in out
    assert not gone.exists()  # status never writes
    code, out, _ = ablate(capsys, "--table", "3a", "--cancel", "--results-dir", str(gone))
    assert code == 0 and "nothing to cancel" in out and not gone.exists()


def test_status_names_every_state(tmp_path: Path, tiny_data: str, capsys) -> None:
    runs = plan(tiny_data, TINY, ["lambda_1_8", "lambda_1_16"], 3)
    store = Store(tmp_path)
    stored, failed, retry, running, queued, _missing = runs
    store.put(fake_record(stored, attempts=2))
    store.put(fake_record(failed, "failed", attempts=2))
    store.put(fake_record(retry, "failed", attempts=1))
    write_launch(tmp_path, Launch(
        launch_id="local-test", launcher="local", host=HOST, created=time.time(),
        command=["x"], keys=[queued.key.stem],
        tasks=[Task(index=0, job_id=str(os.getpid()), log="x.log")],
    ))  # fmt: skip
    with store.locks.hold(running.key) as lock:
        lock.note(iteration=2)
        time.sleep(0.01)
        lock._rewrite(time.time())
        report = collect_status(runs, tmp_path, max_attempts=2, stale_after_s=600)
        _, out, _ = ablate(
            capsys, "--table", "3a", "--rows", "lambda_1_8,lambda_1_16", "--seeds", "3",
            "--recipe", TINY, "--data", tiny_data, "--results-dir", str(tmp_path),
            "--status", "--json",
        )  # fmt: skip
    states = {r.key: r for r in report.runs}
    assert [states[r.key.stem].state for r in runs] == [
        "stored",
        "failed",
        "failed",
        "running",
        "queued",
        "missing",
    ]
    assert states[stored.key.stem].miou == 0.25 and states[stored.key.stem].attempts == 2
    f, r = states[failed.key.stem], states[retry.key.stem]
    assert f.retry is False and r.retry is True and f.reason == "loss is nan at iteration 2"
    run = states[running.key.stem]
    assert run.pid == os.getpid() and run.host == HOST and run.iteration == 2
    assert run.iterations == 3 and run.heartbeat_age_s is not None and run.heartbeat_age_s < 60
    assert states[queued.key.stem].launch_id == "local-test"
    # compute: 100 s stored; left: the running run's third and the missing, queued and
    # retried runs at the median stored run (no own seeds stored for their specs... the
    # lambda_1_8 rows have one: 100 s)
    assert report.spent_s == 100.0 and report.left_s is not None and report.left_s > 0
    text = format_status(report)
    assert "2 attempts, gave up: loss is nan at iteration 2" in text
    assert "1 attempt, will retry" in text and "iteration 2/3" in text
    assert "submitted by local-test, not started" in text
    assert "6 runs: 1 stored, 1 running, 2 failed, 1 queued, 1 missing" in text
    data = json.loads(out)
    assert [r["state"] for r in data["runs"]] == [states[r.key.stem].state for r in runs]
    assert data["counts"]["failed"] == 2


def test_status_never_loads_torch(tmp_path: Path, tiny_data: str) -> None:
    code = (
        "import sys\n"
        "from runners.ablate.__main__ import main\n"
        "main(sys.argv[1:])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "--table", "2,3a", "--seeds", "2", "--data", tiny_data,
         "--results-dir", str(tmp_path), "--status"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "runs: 0 stored" in out.stdout


# --- the local launcher, for real ------------------------------------------------------


def test_local_launcher_runs_each_key_once_then_times_in_one_pass(
    tmp_path: Path, tiny_data: str, capsys
) -> None:
    args = ["--table", "3a", "--rows", "lambda_1_8,lambda_1_16", "--recipe", TINY,
            "--data", tiny_data, "--results-dir", str(tmp_path), "--latency-repeats", "1",
            "--threads", "1"]  # fmt: skip
    code, out, _ = ablate(capsys, *args, "--launcher", "local", "--max-running", "2")
    assert code == 0 and "launched local-" in out and out.count("    log: ") == 2
    (launch,) = read_launches(tmp_path)
    assert len(launch.keys) == 2 and [t.cpus for t in launch.tasks] in ([[0], [1]], [[0], [0]])
    runs = plan(tiny_data, TINY, ["lambda_1_8", "lambda_1_16"], 1)
    store = Store(tmp_path)

    def all_timed() -> bool:
        records = [store.record(r.key) for r in runs]
        return all(r and (r["metrics"] or {}).get("latency_ms") for r in records)

    wait_until(all_timed, 240, "two trained and timed runs")
    wait_until(lambda: not any(pid_alive(int(t.job_id)) for t in launch.tasks), 60, "tasks to exit")
    records = [store.get(r.key) for r in runs]
    assert all(r["status"] == "ok" and r["attempts"] == 1 for r in records)
    lat = [r["metrics"]["latency_ms"] for r in records]
    assert all(x["host"] == HOST and x["device_name"] for x in lat)
    # trained in the tasks (each pinned to its CPUs), timed by the last one out
    assert len({r["env"]["hostname"] for r in records}) == 1
    logs = "".join(Path(t.log).read_text() for t in launch.tasks)
    assert logs.count("last task out: timing") == 1
    assert not list((tmp_path / "locks").glob("*.lock"))
    code, out, _ = ablate(capsys, *args, "--launcher", "local", "--max-running", "2")
    assert code == 0 and "nothing to launch" in out and len(read_launches(tmp_path)) == 1
    code, out, _ = ablate(capsys, *args, "--status")
    assert "2 runs: 2 stored" in out


def test_cancel_stops_the_tasks_releases_their_locks_and_keeps_records(
    tmp_path: Path, tiny_data: str, capsys
) -> None:
    args = ["--table", "3a", "--rows", "lambda_1_4,lambda_1_8,lambda_1_16", "--recipe", LONG,
            "--data", tiny_data, "--results-dir", str(tmp_path), "--no-latency"]  # fmt: skip
    runs = plan(tiny_data, LONG, ["lambda_1_4", "lambda_1_8", "lambda_1_16"], 1)
    store = Store(tmp_path)
    kept = store.put(fake_record(runs[0]))
    before = kept.read_bytes()
    code, out, _ = ablate(capsys, *args, "--launcher", "local", "--max-running", "2")
    assert code == 0 and "2 to submit" in out
    (launch,) = read_launches(tmp_path)
    wait_until(lambda: len(store.locks.live_holders()) == 2, 120, "both tasks to start a run")
    holders = store.locks.live_holders()
    assert {h["launch_id"] for h in holders.values()} == {launch.launch_id}
    code, out, _ = ablate(capsys, *args, "--cancel")
    assert code == 0 and f"cancelled {launch.launch_id}" in out
    pids = [h["pid"] for h in holders.values()] + [int(t.job_id) for t in launch.tasks]
    wait_until(lambda: not any(pid_alive(p) for p in pids), 30, "cancelled processes to end")
    assert not list((tmp_path / "locks").glob("*.lock"))
    assert kept.read_bytes() == before
    code, out, _ = ablate(capsys, *args, "--status")
    assert "3 runs: 1 stored, 0 running, 0 failed, 0 queued, 2 missing" in out
    assert read_launches(tmp_path)[0].cancelled is not None
