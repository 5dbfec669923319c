"""The result store: atomic writes under SIGKILL, one run per key across processes, stale
locks, corrupt records that are reported and never overwritten, unwritable folders."""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from analysis.records import load_records
from runners.store import Store, build_record, run_once
from runners.store.run_once import decide
from searchspace.errors import StoreError
from searchspace.presets import V2_PRESETS
from searchspace.recipes import get_recipe
from searchspace.records import RecordKey, read_record, record_paths

ROOT = Path(__file__).resolve().parent.parent


def make_record(key, status="ok", miou=0.5, marker=""):
    """A minimal valid record (also exec'd in the child processes, see ``run_child``)."""
    return {
        "schema": 1,
        "key": key.to_dict(),
        "status": status,
        "reason": None if status == "ok" else "fake failure",
        "metrics": {"miou": miou if status == "ok" else None, "macs": 1000, "params": 10},
        "context": {"marker": marker},
    }


def key(i: int, seed: int = 0) -> RecordKey:
    return RecordKey(f"spec{i:03d}", "recipe0", "synth-test", seed)


def run_child(code: str, *args: str) -> subprocess.Popen:
    header = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
    script = header + inspect.getsource(make_record) + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- records --------------------------------------------------------------------------


def test_put_get_and_the_failure_policy(tmp_path: Path) -> None:
    store = Store(tmp_path)
    k = key(1)
    assert decide(store.get(k), 2) == "run" and not store.exists(k) and store.get(k) is None
    path = store.put(make_record(k))
    assert path == tmp_path / "records" / "spec001" / "recipe0__synth-test__s0.json"
    assert store.exists(k) and store.get(k)["metrics"]["miou"] == 0.5
    assert decide(store.get(k), 2) == "done"
    assert decide(store.get(k), 2, force=True) == "run"
    with pytest.raises(StoreError, match="already finished"):
        store.put(make_record(k, miou=0.6))
    store.put(make_record(k, miou=0.6), force=True)
    assert store.get(k)["metrics"]["miou"] == 0.6

    f = key(2)
    store.put(make_record(f, status="failed"))
    assert decide(store.get(f), 2) == "run" and decide(store.get(f), 1) == "exhausted"
    store.put(make_record(f))  # a failed record may be replaced without force
    assert [r["key"]["spec_id"] for r in store] == ["spec001", "spec002"]
    assert store.keys() == [k, f]


def test_records_are_plain_json_with_nan_as_null(tmp_path: Path) -> None:
    store = Store(tmp_path)
    k = key(1)
    rec = make_record(k)
    rec["metrics"]["per_class_iou"] = {"road": 0.9, "train": float("nan")}
    rec["metrics"]["macs_input_hw"] = (512, 1024)
    path = store.put(rec)
    data = json.loads(path.read_text())  # strict JSON: no NaN, tuples as lists
    assert data["metrics"]["per_class_iou"] == {"road": 0.9, "train": None}
    assert data["metrics"]["macs_input_hw"] == [512, 1024]
    with pytest.raises(StoreError, match="miou"):
        store.put(make_record(key(2), miou=73.4))  # percent instead of 0..1
    with pytest.raises(StoreError, match="dataset_id"):
        RecordKey("abc", "def", "../escape", 0)


def test_legacy_nan_spellings_read_back_as_null(tmp_path: Path) -> None:
    """Files written before NaN became null ("nan" strings, bare NaN) still load."""
    store = Store(tmp_path)
    path = store.put(make_record(key(1)))
    text = path.read_text().replace('"miou": 0.5', '"miou": NaN')
    data = json.loads(text)
    data["train"] = {"final_loss": "nan", "seconds": 1.5}
    data["metrics"]["per_class_iou"] = {"road": 0.9, "train": "-inf"}
    path.write_text(json.dumps(data))  # json.dumps writes the bare NaN back
    record = read_record(path)
    assert record["metrics"]["miou"] is None and record["train"]["final_loss"] is None
    assert record["metrics"]["per_class_iou"] == {"road": 0.9, "train": None}
    assert record["train"]["seconds"] == 1.5 and record["context"]["marker"] == ""
    assert load_records(tmp_path)["miou"].isna().all()


def test_the_one_writer_is_atomic_and_writes_strict_json(tmp_path: Path) -> None:
    from searchspace.atomic import replacing, temp_owner, write_json

    path = write_json(tmp_path / "a.json", {"loss": float("nan"), "hw": (2, 3), "p": tmp_path})
    assert json.loads(path.read_text()) == {"hw": [2, 3], "loss": None, "p": str(tmp_path)}
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        tmp.write_text("half")
        assert temp_owner(tmp) == (True, os.getpid())
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text())["hw"] == [2, 3]  # the old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left
    with pytest.raises(TypeError, match=r"value\.bad: object"):
        write_json(tmp_path / "b.json", {"bad": object()})
    assert not (tmp_path / "b.json").exists()


def test_build_record_from_spec_and_recipe(tmp_path: Path) -> None:
    spec, recipe = V2_PRESETS["bisenetv2"], get_recipe("smoke")
    dataset = {"id": "synth-abc", "label": "synthetic", "is_builtin": True, "num_classes": 19}
    rec = build_record(spec, recipe, dataset, 3, metrics={"miou": 0.25}, env={"device": "cpu"})
    assert rec["key"] == {
        "spec_id": spec.spec_id,
        "recipe_id": recipe.recipe_id,
        "dataset_id": "synth-abc",
        "seed": 3,
    }
    assert rec["spec"] == json.loads(spec.to_json()) and rec["spec_string"] == "v2"
    assert rec["recipe_name"] == "smoke"
    path = Store(tmp_path).put(rec)
    frame = load_records(tmp_path)
    assert frame.loc[0, "spec_id"] == spec.spec_id and frame.loc[0, "miou"] == 0.25
    assert read_record(path) == rec


# --- atomicity and resume under SIGKILL ------------------------------------------------

WRITER = """
    import os, stat, time
    from runners.store import Store
    from searchspace.records import RecordKey
    real_fsync = os.fsync
    def slow_fsync(fd):  # widen the window between "temp file written" and "renamed"
        if stat.S_ISREG(os.fstat(fd).st_mode):
            time.sleep(0.01 if len(os.listdir(sys.argv[1] + "/records")) < 5 else 0.2)
        real_fsync(fd)
    os.fsync = slow_fsync
    store = Store(sys.argv[1])
    for i in range(40):
        k = RecordKey(f"spec{i:03d}", "recipe0", "synth-test", 0)
        if store.get(k) is None:
            store.put(make_record(k, marker="first"))
"""


def test_sigkill_mid_write_leaves_only_whole_records_and_resume_completes(tmp_path: Path) -> None:
    child = run_child(WRITER, str(tmp_path))
    deadline = time.monotonic() + 30
    # kill while a temp file exists, after a few records are complete
    while len(record_paths(tmp_path)) < 5 or not list(tmp_path.glob("records/*/.*.tmp")):
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "writer made no progress"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL

    done = record_paths(tmp_path)
    assert 5 <= len(done) < 40, "the kill should land mid-run"
    before = {p: p.read_bytes() for p in done}
    for path in done:
        read_record(path)  # every record file is whole and valid
    debris = list(tmp_path.glob("records/*/.*.tmp"))
    assert debris, "the kill should land between writing a temp file and renaming it"
    assert not set(debris) & set(done)  # temp files never look like records
    assert load_records(tmp_path).shape[0] == len(done)

    store = Store(tmp_path)  # a new start removes the dead writer's temp files
    assert not list(tmp_path.glob("records/*/.*.tmp"))
    keys = [key(i) for i in range(40)]
    summary = run_once(store, keys, lambda k, _lock, _at: make_record(k, marker="second"))
    assert len(summary.ran) == 40 - len(done) and len(summary.reused) == len(done)
    final = record_paths(tmp_path)
    assert len(final) == 40
    assert sorted(RecordKey.from_dict(read_record(p)["key"]) for p in final) == keys
    assert all(p.read_bytes() == data for p, data in before.items())  # not recomputed


# --- two processes on one folder -------------------------------------------------------

WORKER = """
    import json, os, time
    from pathlib import Path
    from runners.store import Store, run_once
    from searchspace.records import RecordKey
    results, logs, force, go = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", Path(sys.argv[4])
    store = Store(results)
    keys = [RecordKey(f"spec{i:03d}", "recipe0", "synth-test", 0) for i in range(20)]
    def work(k, _lock, _at):
        fd = os.open(logs / f"{k.spec_id}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, f"{os.getpid()}\\n".encode())
        os.close(fd)
        time.sleep(0.04)
        return make_record(k, marker=str(os.getpid()))
    while not go.exists():
        time.sleep(0.005)
    s = run_once(store, keys, work, force=force)
    print(json.dumps({"ran": len(s.ran), "busy": len(s.busy), "skipped": len(s.reused)}))
"""


@pytest.mark.parametrize("force", [False, True], ids=["fresh", "forced-rerun"])
def test_two_processes_run_each_key_exactly_once(tmp_path: Path, force: bool) -> None:
    results, logs, go = tmp_path / "results", tmp_path / "logs", tmp_path / "go"
    logs.mkdir()
    if force:  # a finished folder, re-run with --force by two processes at once
        store = Store(results)
        for i in range(20):
            store.put(make_record(key(i), marker="old"))
    procs = [run_child(WORKER, str(results), str(logs), str(int(force)), str(go)) for _ in range(2)]
    time.sleep(0.3)
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    stats = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]

    runs = {p.stem: p.read_text().split() for p in logs.glob("*.log")}
    assert len(runs) == 20
    assert all(len(pids) == 1 for pids in runs.values()), runs
    assert sum(s["ran"] for s in stats) == 20
    # whichever worker got which keys (a loaded machine may hand one of them all 20),
    # each record was written by the process that ran its key, and by no other
    workers = {str(p.pid) for p in procs}
    for path in record_paths(results):
        record = read_record(path)
        (runner,) = runs[record["key"]["spec_id"]]
        assert record["context"]["marker"] == runner and runner in workers
    assert len(record_paths(results)) == 20
    assert not list((results / "locks").iterdir())  # every lock released


# --- locks and stale locks ------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(store: Store, k: RecordKey, **holder: object) -> Path:
    path = store.locks.path(k)
    path.write_text(json.dumps({"token": "theirs", **holder}))
    return path


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    store = Store(tmp_path)
    k = key(1)
    with store.lock(k) as first:
        assert first and store.locks.path(k).exists()
        with store.lock(k) as second:  # our own live pid holds it
            assert not second
            assert second.holder["pid"] == os.getpid()
    assert not store.locks.path(k).exists()


def test_held_says_whether_a_live_process_runs_a_key(tmp_path: Path) -> None:
    """What the ablation's ETA counts as copies at work: live locks, not stale ones."""
    store = Store(tmp_path)
    now, host = time.time(), socket.gethostname()
    assert not store.held(key(1))
    with store.lock(key(1)):
        assert store.held(key(1))
    assert not store.held(key(1))
    _write_lock(store, key(2), pid=_dead_pid(), hostname=host, heartbeat=now)
    assert not store.held(key(2))
    _write_lock(store, key(3), pid=1, hostname="elsewhere", heartbeat=now)
    assert store.held(key(3))


def test_stale_locks_are_broken(tmp_path: Path) -> None:
    store = Store(tmp_path)
    now, host = time.time(), socket.gethostname()

    dead = _write_lock(store, key(1), pid=_dead_pid(), hostname=host, heartbeat=now)
    with store.lock(key(1)) as lock:
        assert lock, "a lock of a dead pid on this host is stale"
        assert json.loads(dead.read_text())["token"] == lock.token

    old = _write_lock(store, key(2), pid=1, hostname="elsewhere", heartbeat=now - 3600)
    os.utime(old, (now - 3600, now - 3600))
    with store.lock(key(2)) as lock:
        assert lock, "a lock whose heartbeat is older than the timeout is stale"

    _write_lock(store, key(3), pid=1, hostname="elsewhere", heartbeat=now)
    with store.lock(key(3)) as lock:
        assert not lock, "a fresh heartbeat from another host is live"
        assert lock.holder["hostname"] == "elsewhere"

    _write_lock(store, key(4), pid=os.getppid(), hostname=host, heartbeat=now - 60)
    with store.lock(key(4)) as lock:
        assert not lock, "a live pid on this host holds it"

    empty = store.locks.path(key(5))
    empty.touch()  # created, not yet written: live for a grace period
    with store.lock(key(5)) as lock:
        assert not lock
    os.utime(empty, (now - 120, now - 120))
    with store.lock(key(5)) as lock:
        assert lock
    assert not list(store.locks_dir.glob("*.stale-*"))
    assert (store.locks.path(key(3))).exists() and store.locks.path(key(4)).exists()


def test_heartbeat_refreshes_and_detects_a_takeover(tmp_path: Path) -> None:
    store = Store(tmp_path, heartbeat_s=0.05)
    k = key(1)
    with store.lock(k) as lock:
        first = json.loads(store.locks.path(k).read_text())["heartbeat"]
        time.sleep(0.25)
        assert json.loads(store.locks.path(k).read_text())["heartbeat"] > first
        assert not lock.lost
        # what a breaker does: rename the lock away, create its own
        store.locks.path(k).rename(tmp_path / "aside")
        store.locks.path(k).write_text(json.dumps({"token": "usurper", "pid": 1}))
        time.sleep(0.3)
        assert lock.lost
    assert json.loads(store.locks.path(k).read_text())["token"] == "usurper"  # not deleted


def test_breaking_a_live_lock_puts_it_back(tmp_path: Path) -> None:
    holder, breaker = Store(tmp_path, heartbeat_s=0.05), Store(tmp_path)
    with holder.lock(key(1)) as lock:
        path = holder.locks.path(key(1))
        breaker.locks.break_stale(path, inode=-1)  # judged stale from an outdated look
        assert lock.owned() and json.loads(path.read_text())["token"] == lock.token
        time.sleep(0.15)
        assert not lock.lost
    assert not path.exists() and not list(holder.locks_dir.iterdir())


# --- corrupt records -------------------------------------------------------------------


def test_corrupt_records_are_reported_skipped_and_never_overwritten(tmp_path: Path) -> None:
    store = Store(tmp_path)
    good, bad_json, moved, old_schema = key(1), key(2), key(3), key(4)
    store.put(make_record(good))
    for k in (bad_json, moved, old_schema):
        store.path(k).parent.mkdir(parents=True, exist_ok=True)
    store.path(bad_json).write_text('{"schema": 1, "key": ')
    store.path(moved).write_text(store.path(good).read_text())  # key does not match the name
    store.path(old_schema).write_text(json.dumps({**make_record(old_schema), "schema": 0}))

    assert [r["key"]["spec_id"] for r in store] == ["spec001"]
    reported = "\n".join(store.problems)
    for k in (bad_json, moved, old_schema):
        assert str(store.path(k)) in reported
    assert "bad JSON" in reported and "does not match" in reported and "schema=0" in reported
    problems: list[str] = []
    frame = load_records(tmp_path, problems)
    assert len(frame) == 1 and len(problems) == 3
    assert not store.exists(bad_json)

    out = run_once(store, [bad_json], lambda k, _lock, _at: make_record(k))
    assert out.corrupt == [bad_json] and not out.ran  # skipped, not silently recomputed
    with pytest.raises(StoreError, match=str(store.path(bad_json))):
        store.put(make_record(bad_json))
    assert store.path(bad_json).read_text() == '{"schema": 1, "key": '

    store.put(make_record(bad_json), force=True)
    assert store.get(bad_json)["status"] == "ok"
    (aside,) = store.path(bad_json).parent.glob("*.corrupt-*")
    assert aside.read_text() == '{"schema": 1, "key": '  # moved aside, not deleted
    assert aside not in record_paths(tmp_path)


# --- unwritable folders ----------------------------------------------------------------


def test_unwritable_results_folder_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: chmod does not make a folder unwritable")
        with pytest.raises(StoreError, match=f"results folder {folder} is not writable"):
            Store(folder)
    finally:
        folder.chmod(0o700)


def test_results_folder_below_a_file_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="is not writable") as err:
        Store(blocker / "results")
    assert "\n" not in str(err.value)


def test_json_keeps_arrays_of_plain_values_on_one_line() -> None:
    from searchspace.atomic import json_text

    data = {"per_image": {"union": [[1, 2], [3, 4]], "ids": ["a, b", 'q"]']}, "x": [0.5, None]}
    text = json_text(data)
    assert json.loads(text) == data
    assert '"x": [0.5, null]' in text and "[1, 2]," in text and '["a, b", "q\\"]"]' in text
    assert text.count("\n") == 10  # objects and nested arrays still indented
