"""The one path that runs a set of record keys: each at most once across processes and
machines, under one failure policy. Ablation, search and every launcher's task call it.

Per key, in order: read its record (once); decide; take its lock (skip it if another live
process holds it); read the record again (it may have finished meanwhile); run; write the
record atomically, unless the lock was lost while running. Each key's record is read at
most twice per pass, so a pass over n keys costs O(n), however many copies share it.

The failure policy, for every caller:

- no record: run it;
- an ok record: reuse it (``force`` runs it again, but only once per invocation even
  when several processes force the same plan);
- a failed record with fewer than ``max_attempts`` attempts: run it again (the new
  record's ``attempts`` is one more); with ``max_attempts`` or more: leave it failed and
  report it, never retrain it (a spec that always runs out of memory would otherwise be
  retrained every time a sampler proposes it) and never count it as a result; ``force``
  starts its count afresh;
- a corrupt file: report it and skip it (``force`` moves it aside and runs).

An exception from ``work`` (a mistake of the whole invocation, say) propagates, leaves no
record and counts no attempt; so does a process killed mid-run, whose lock goes stale and
whose run a later pass resumes from its checkpoint. A caller waiting for keys others hold
takes up, in a new pass, any whose holder is gone without a record. Only failures the run itself reports
(a failed record: NaN loss, out of memory, an error while profiling) count as attempts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runners.store.locks import RunLock
from runners.store.records import plain
from runners.store.store import Store
from searchspace.errors import StoreError, UsageError
from searchspace.records import RecordKey, check_record

DEFAULT_MAX_ATTEMPTS = 2
POLL_S = 2.0  # how often a waiting caller looks for the records of busy keys


def attempts_of(record: Mapping[str, Any] | None) -> int:
    """How many runs a record took (records written before the count existed: 1)."""
    if record is None:
        return 0
    value = record.get("attempts")
    return value if isinstance(value, int) and value >= 1 else 1


def decide(record: Mapping[str, Any] | None, max_attempts: int, force: bool = False) -> str:
    """ "run", "done" (ok) or "exhausted" (failed ``max_attempts`` times) for one record."""
    if record is None or force:
        return "run"
    if record["status"] == "ok":
        return "done"
    return "run" if attempts_of(record) < max_attempts else "exhausted"


def check_max_attempts(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"--max-attempts {value}: must be >= 1")
    return value


@dataclass
class Progress:
    """Where a pass stands, for the work function's progress line."""

    position: int  # 1-based, among the keys this pass runs or reaches
    total: int
    pending: list[RecordKey]  # keys after this one this pass has not reached yet


@dataclass
class RunOnceOutcome:
    """What one pass did with each key; ``records`` holds the final record of every key
    that has one (ok or failed), whether run here, by another process, or stored before."""

    records: dict[RecordKey, dict[str, Any]] = field(default_factory=dict)
    ran: list[RecordKey] = field(default_factory=list)  # run here (ok or failed)
    reused: list[RecordKey] = field(default_factory=list)  # ok before, or by another process
    exhausted: list[RecordKey] = field(default_factory=list)  # failed max_attempts times
    busy: list[RecordKey] = field(default_factory=list)  # another process still runs it
    corrupt: list[RecordKey] = field(default_factory=list)
    lost: list[RecordKey] = field(default_factory=list)  # lock taken over mid-run: not written

    @property
    def failed(self) -> list[RecordKey]:
        """Keys whose final record is failed (run here or left failed)."""
        return [k for k, r in self.records.items() if r.get("status") == "failed"]

    def ok(self, key: RecordKey) -> dict[str, Any] | None:
        record = self.records.get(key)
        return record if record is not None and record.get("status") == "ok" else None


Work = Callable[[RecordKey, RunLock, Progress], Mapping[str, Any]]


def run_once(
    store: Store,
    keys: Iterable[RecordKey],
    work: Work,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    force: bool = False,
    wait_s: float = 0.0,
    before_first: Callable[[list[RecordKey]], None] | None = None,
) -> RunOnceOutcome:
    """Run ``work(key, lock, progress) -> record`` for each key that needs it (see the
    module docstring for the policy); then wait up to ``wait_s`` for keys other processes
    hold. ``before_first(keys)`` runs once, before the first key that this process will
    run, with the keys it may still run (to prepare data and time their networks): a pass
    with nothing to run skips it."""
    check_max_attempts(max_attempts)
    keys = list(dict.fromkeys(keys))
    out = RunOnceOutcome()
    started = time.time()

    def look(key: RecordKey) -> tuple[str, dict[str, Any] | None]:
        try:
            record = store.get(key)
        except StoreError as exc:
            if not force:
                store._report(f"{exc}; skipped (re-run with force to move it aside)")
                return "corrupt", None
            return "run", None
        if force and record is not None and _written_since(store, key, started):
            return "done", record  # another process forced it during this invocation
        return decide(record, max_attempts, force), record

    first = [look(k) for k in keys]
    todo = [k for k, (what, _) in zip(keys, first) if what == "run"]
    for key, (what, record) in zip(keys, first):
        if what == "done":
            out.records[key] = record  # type: ignore[assignment]
            out.reused.append(key)
        elif what == "exhausted":
            out.records[key] = record  # type: ignore[assignment]
            out.exhausted.append(key)
        elif what == "corrupt":
            out.corrupt.append(key)
    prepared = False
    deadline = time.monotonic() + wait_s
    while True:
        for position, key in enumerate(todo, 1):
            with store.locks.hold(key) as lock:
                if not lock:
                    out.busy.append(key)
                    continue
                what, previous = look(key)
                if what != "run":
                    if previous is not None:
                        out.records[key] = previous
                    (out.reused if what == "done" else out.exhausted).append(key)
                    continue
                if not prepared and before_first is not None:
                    before_first(todo[position - 1 :])
                prepared = True
                progress = Progress(position, len(todo), todo[position:])
                record = plain(work(key, lock, progress))
                got = check_record(record, f"record of {key}")
                if got != key:
                    raise StoreError(f"work({key}) returned a record for another key ({got})")
                prior = (
                    0
                    if force or previous is None or previous["status"] == "ok"
                    else (attempts_of(previous))
                )
                record["attempts"] = prior + 1
                if lock.lost:
                    store._report(f"lock of {key} was taken over while running; not written")
                    out.lost.append(key)
                    continue
                store.put(record, force=True)
                out.records[key] = record
                out.ran.append(key)
        # keys other processes held: wait for their records; a key whose holder is gone
        # without one (killed, or stopped to be requeued) is taken up here, in a new pass
        out.busy, todo = _wait_for_busy(store, out, deadline)
        if not todo:
            return out


def _written_since(store: Store, key: RecordKey, since: float) -> bool:
    with contextlib.suppress(OSError):
        return store.path(key).stat().st_mtime >= since
    return False


def _wait_for_busy(
    store: Store, out: RunOnceOutcome, deadline: float
) -> tuple[list[RecordKey], list[RecordKey]]:
    """Collect the records of keys other processes held, polling only those keys, until
    each has one or ``deadline`` has passed. Returns (keys still busy, keys left with no
    record and no live holder: orphaned, for the caller to run)."""
    busy: list[RecordKey] = list(out.busy)
    while busy:
        still, orphaned = [], []
        for key in busy:
            try:
                record = store.get(key)
            except StoreError:
                record = None
            held = store.held(key)
            if record is not None and record.get("status") == "ok":
                out.records[key] = record  # final: its holder is only releasing the lock
                out.reused.append(key)
            elif record is not None and not held:
                out.records[key] = record  # failed, and nobody is retrying it now
            elif record is None and not held:
                orphaned.append(key)
            else:
                still.append(key)
        if orphaned:
            return still, orphaned
        busy = still
        if not busy or time.monotonic() >= deadline:
            break
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
    return busy, []
