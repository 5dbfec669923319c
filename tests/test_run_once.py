"""The one run-once path: its failure policy, its reads, and what its locks say."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from runners import experiment
from runners.runs import PlannedRun, ProfileSettings
from runners.store import Store, run_once
from runners.store.locks import read_lock
from runners.store.run_once import attempts_of, check_max_attempts, decide
from searchspace.errors import StoreError, UsageError
from searchspace.presets import parse_spec
from searchspace.recipes import parse_recipe
from searchspace.records import RecordKey


def key(i: int) -> RecordKey:
    return RecordKey(f"spec{i:03d}", "recipe0", "synth-test", 0)


def record(k: RecordKey, status: str = "ok", reason: str | None = None, **extra) -> dict:
    if status == "failed" and reason is None:
        reason = "out of memory"
    return {"schema": 1, "key": k.to_dict(), "status": status, "reason": reason,
            "metrics": {"miou": 0.5}, **extra}  # fmt: skip


def test_the_failure_policy_table() -> None:
    ok, failed = record(key(0)), record(key(0), "failed")
    assert decide(None, 2) == "run"
    assert decide(ok, 2) == "done" and decide(ok, 2, force=True) == "run"
    assert decide(failed, 2) == "run"  # records from before the count: one attempt
    assert decide({**failed, "attempts": 2}, 2) == "exhausted"
    assert decide({**failed, "attempts": 2}, 3) == "run"
    assert decide({**failed, "attempts": 5}, 2, force=True) == "run"
    assert attempts_of(None) == 0 and attempts_of(failed) == 1
    with pytest.raises(UsageError, match="--max-attempts 0: must be >= 1"):
        check_max_attempts(0)


def test_a_failing_run_is_retried_up_to_the_cap_then_left_failed(tmp_path: Path) -> None:
    """A spec that always runs out of memory: tried max_attempts times over as many
    calls, then never again; the record counts its attempts and stays failed."""
    store, k = Store(tmp_path), key(1)
    calls: list[RecordKey] = []

    def oom(kk, _lock, _at):
        calls.append(kk)
        return record(kk, "failed", "CUDA out of memory")

    first = run_once(store, [k], oom, max_attempts=2)
    assert first.ran == [k] and first.failed == [k] and store.get(k)["attempts"] == 1
    second = run_once(store, [k], oom, max_attempts=2)
    assert second.ran == [k] and store.get(k)["attempts"] == 2
    for _ in range(3):  # a sampler proposing it again and again
        again = run_once(store, [k], oom, max_attempts=2)
        assert again.ran == [] and again.exhausted == [k] and again.failed == [k]
        assert again.ok(k) is None  # never counted as a result
    assert len(calls) == 2
    # a higher cap tries once more; a success then keeps the count of what it took
    done = run_once(store, [k], lambda kk, _l, _a: record(kk), max_attempts=3)
    assert done.ran == [k] and store.get(k)["status"] == "ok" and store.get(k)["attempts"] == 3
    # force starts afresh
    run_once(store, [k], lambda kk, _l, _a: record(kk), force=True)
    assert store.get(k)["attempts"] == 1


def test_an_exception_leaves_no_record_and_counts_no_attempt(tmp_path: Path) -> None:
    store, k = Store(tmp_path), key(2)

    def boom(_k, _lock, _at):
        raise UsageError("a mistake of the whole invocation")

    with pytest.raises(UsageError):
        run_once(store, [k], boom)
    assert store.get(k) is None and not list((tmp_path / "locks").iterdir())
    run_once(store, [k], lambda kk, _l, _a: record(kk))
    assert store.get(k)["attempts"] == 1


def test_each_record_is_read_at_most_twice_per_pass(tmp_path: Path, monkeypatch) -> None:
    """No re-reading every pending record before each run: O(n) reads for n keys."""
    store = Store(tmp_path)
    keys = [key(i) for i in range(30)]
    for k in keys[:10]:
        store.put(record(k))
    reads: list[RecordKey] = []
    real_get = Store.get

    def counting_get(self, k):
        reads.append(k)
        return real_get(self, k)

    monkeypatch.setattr(Store, "get", counting_get)
    prepared: list[list[RecordKey]] = []
    out = run_once(store, keys, lambda kk, _l, _a: record(kk), before_first=prepared.append)
    assert len(out.ran) == 20 and len(out.reused) == 10
    assert max(reads.count(k) for k in keys) <= 2 and len(reads) == 10 + 2 * 20
    assert prepared == [keys[10:]]  # once, with the keys it may still run
    monkeypatch.setattr(Store, "get", real_get)
    idle = run_once(store, keys, lambda kk, _l, _a: record(kk), before_first=prepared.append)
    assert idle.ran == [] and len(prepared) == 1  # nothing to run: nothing prepared


def test_a_wrong_key_from_work_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(StoreError, match="another key"):
        run_once(store, [key(3)], lambda _k, _l, _a: record(key(4)))
    assert store.get(key(3)) is None and store.get(key(4)) is None


def test_a_busy_key_is_waited_for_and_its_record_returned(tmp_path: Path) -> None:
    store, k = Store(tmp_path), key(5)
    other = Store(tmp_path)
    with other.lock(k) as held:
        assert held

        def finish_later() -> None:
            time.sleep(0.5)
            other.put(record(k))

        threading.Thread(target=finish_later).start()
        out = run_once(store, [k], lambda kk, _l, _a: record(kk), wait_s=20)
    assert out.ran == [] and out.busy == [] and out.ok(k) is not None
    with other.lock(key(6)) as held:
        quick = run_once(store, [key(6)], lambda kk, _l, _a: record(kk), wait_s=0)
    assert quick.busy == [key(6)] and key(6) not in quick.records


def test_a_key_whose_holder_leaves_without_a_record_is_taken_up(tmp_path: Path) -> None:
    """A holder that stops without a record (preempted and requeued, or killed) leaves the
    key to whoever waits for it: that caller runs it, once, instead of waiting on."""
    store, k = Store(tmp_path), key(7)
    other = Store(tmp_path)
    released = threading.Event()

    def hold_then_leave() -> None:
        with other.lock(k) as held:
            assert held
            released.wait(5)
            time.sleep(0.5)  # the waiter is polling by now

    holder = threading.Thread(target=hold_then_leave)
    holder.start()
    time.sleep(0.2)
    calls: list[RecordKey] = []

    def work(kk, _lock, _at):
        calls.append(kk)
        return record(kk)

    released.set()
    started = time.monotonic()
    out = run_once(store, [k], work, wait_s=30)
    holder.join()
    assert calls == [k] and out.ran == [k] and out.busy == [] and store.get(k)["status"] == "ok"
    assert time.monotonic() - started < 10  # taken up when the holder left, not at the deadline


def test_the_lock_says_who_runs_what_and_how_far(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("BISENET_LAUNCH_ID", "local-x")
    store, k = Store(tmp_path, heartbeat_s=0.1), key(7)
    seen: dict = {}

    def work(kk, lock, at):
        lock.note(iteration=12)
        time.sleep(0.3)  # a heartbeat writes the notes too
        seen.update(read_lock(store.locks.path(kk)) or {})
        seen["holders"] = store.locks.live_holders()
        return record(kk)

    run_once(store, [k], work)
    assert seen["iteration"] == 12 and seen["array_job_id"] == "4242"
    assert seen["array_task"] == "7" and seen["launch_id"] == "local-x"
    assert seen["hostname"] and isinstance(seen["pid"], int) and seen["heartbeat"] > 0
    assert list(seen["holders"]) == [k.stem]


def test_search_and_ablation_share_one_path_and_one_policy(tmp_path: Path, monkeypatch) -> None:
    """``run_planned`` (what both call): a failed run is retried by the next call, left
    failed at the cap; the latency a run gets is its deployed network's, timed once."""
    recipe = parse_recipe("smoke")
    specs = (parse_spec("v2:bst=none"), parse_spec("v2"))
    runs = [PlannedRun(RecordKey.of(sp, recipe, "data-0", 0), sp, recipe, 0) for sp in specs]
    store = Store(tmp_path)
    given: list = []

    def execute(run, *_a, latency=None, on_step=None, **_kw):
        given.append(latency)
        on_step(3)
        return record(run.key, "failed", "loss is nan at iteration 3")

    class Data:
        def prepare(self, progress: bool = False) -> None:
            pass

    monkeypatch.setattr(experiment, "execute_run", execute)
    settings = ProfileSettings(warmup=1, repeats=1, threads=1, input_hw=(32, 64))
    for attempt in (1, 2):
        out = experiment.run_planned(runs, Data(), store, "cpu", settings, max_attempts=2)  # type: ignore[arg-type]
        assert out.ran == [r.key for r in runs]
        assert all(store.get(r.key)["attempts"] == attempt for r in runs)
    assert given[0] == given[1] and given[0]["host"] and given[0]["device_name"]
    last = experiment.run_planned(runs, Data(), store, "cpu", settings, max_attempts=2)  # type: ignore[arg-type]
    assert last.ran == [] and last.exhausted == [r.key for r in runs] and len(given) == 4
    json.dumps(last.records[runs[0].key])  # plain data
