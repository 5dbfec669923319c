"""Dead workers on a storage without heartbeats (Optuna's journal file): a lock per trial.

A database storage beats for each running trial (``study.make_storage``); a journal file
cannot. So while a worker runs a trial it holds a lock in the results folder's lock folder
(``runners.store.locks``: pid, host, heartbeat thread, scheduler job), and names it on the
trial (user attr ``worker``). Before each trial, a worker fails every RUNNING trial whose
lock is no longer live and queues one copy with the same parameters, at most
``MAX_RETRY`` times per original trial, as ``RetryHeartbeatStaleTrialCallback`` does for a
database. The failed trial has no ``fail_reason``, so it never counts as a result.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.search.config import HEARTBEAT_S
from runners.store.files import pid_alive
from runners.store.locks import Locks, RunLock, job_identity, read_lock
from searchspace.atomic import HOST
from searchspace.errors import StoreError

WORKER_ATTR = "worker"  # trial user attr: who runs it, and the lock that says it is alive
MAX_RETRY = 2  # copies queued for one original trial, as for a database's dead workers
# a RUNNING trial that names no lock yet (its worker is still in ``study.ask``, sampling)
# is dead only once it is this old
UNCLAIMED_GRACE_S = 120.0
# user attrs a retry does not inherit: the dead worker's identity, and verdicts of a run
# that never told the study
NOT_INHERITED = (WORKER_ATTR, "fail_reason", "rejected")


def uses_trial_locks(study: Any) -> bool:
    """True where the storage has no heartbeat of its own (a journal file, an in-memory
    study): there the trial locks tell a dead worker's trial from a live one."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return not is_heartbeat_enabled(study._storage)


@dataclass(frozen=True)
class TrialLockName:
    """What ``Locks`` needs of a key: a flat file name (``RecordKey.stem`` for runs)."""

    stem: str


def lock_stem(study_name: str, number: int) -> str:
    """``search__<study>__t<number>__<random>``: the random part keeps two storages that
    share a results folder and a study name from ever taking one lock."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", study_name)[:80]
    return f"search__{safe}__t{number}__{secrets.token_hex(4)}"


class TrialLocks:
    """The trial locks of one worker: the one it holds, and the verdicts on other trials."""

    def __init__(self, folder: Path | str, grace_s: float) -> None:
        self.folder = Path(folder)
        self.grace_s = float(grace_s)
        heartbeat = max(1.0, min(float(HEARTBEAT_S), self.grace_s / 4))
        self.locks = Locks(self.folder, self.grace_s, heartbeat)
        self.held: RunLock | None = None

    def claim(self, trial: Any) -> RunLock:
        """Take a lock for ``trial`` and name it (and this process) on the trial.

        Held until ``release``: after ``study.optimize`` has told the study the result, so
        a trial is never seen RUNNING without its lock while its worker lives.
        """
        self.release()
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = lock_stem(trial.study.study_name, trial.number)
        lock = self.locks.try_lock(TrialLockName(stem))  # type: ignore[arg-type]
        if not lock:  # a random name: only a broken lock folder gets here
            raise StoreError(f"cannot take trial lock {lock.path}")
        self.held = lock
        trial.set_user_attr(WORKER_ATTR, worker_identity(stem, self.folder))
        return lock

    def release(self) -> None:
        if self.held is not None:
            self.held.release()
            self.held = None

    def guard(self, objective: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``objective`` run under a claimed trial lock (``release`` it after optimize)."""

        def run(trial: Any) -> Any:
            self.claim(trial)
            return objective(trial)

        return run

    def is_live(self, trial: Any, holders: dict[Path, dict[str, dict[str, Any]]]) -> bool:
        """Whether a RUNNING trial's worker is alive, by its lock (``holders``: the live
        locks of each lock folder read so far, filled in as needed)."""
        info = trial.user_attrs.get(WORKER_ATTR)
        if not isinstance(info, dict) or not isinstance(info.get("lock"), str):
            return _age_s(trial.datetime_start) < max(UNCLAIMED_GRACE_S, self.grace_s)
        folder = Path(str(info.get("locks_dir") or self.folder))
        if not folder.is_dir():  # another results folder, not shared with this machine
            if info.get("host") == HOST and isinstance(info.get("pid"), int):
                return pid_alive(info["pid"])
            return True  # cannot tell from here: leave it to a worker that can
        if folder not in holders:
            holders[folder] = Locks(folder, self.grace_s, self.grace_s).live_holders()
        return info["lock"] in holders[folder]

    def fail_dead_trials(self, study: Any) -> list[int]:
        """Fail each RUNNING trial whose worker is dead and queue its retry; the numbers of
        the trials this worker failed (another worker failing one first is skipped)."""
        import optuna

        S = optuna.trial.TrialState
        holders: dict[Path, dict[str, dict[str, Any]]] = {}
        failed = []
        for trial in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
            if self.is_live(trial, holders):
                continue
            storage = study._storage  # what optuna.storages.fail_stale_trials uses too
            try:
                if not storage.set_trial_state_values(trial._trial_id, state=S.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # finished meanwhile, or failed by another worker first
            failed.append(trial.number)
            retried = queue_retry(study, storage.get_trial(trial._trial_id))
            info = trial.user_attrs.get(WORKER_ATTR) or {}
            self._remove_dead_lock(info)
            then = "queued again" if retried else f"not queued again ({MAX_RETRY} retries done)"
            print(
                f"warning: trial {trial.number}'s worker ({info.get('host', '?')} pid "
                f"{info.get('pid', '?')}) is gone: trial failed, {then}",
                file=sys.stderr,
            )
        return failed

    def _remove_dead_lock(self, info: dict[str, Any]) -> None:
        """The dead worker's lock file, which nobody would ever take again."""
        if not isinstance(info.get("lock"), str):
            return
        path = Path(str(info.get("locks_dir") or self.folder)) / f"{info['lock']}.lock"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        if self.locks.is_stale(read_lock(path), mtime):
            path.unlink(missing_ok=True)


def queue_retry(study: Any, trial: Any) -> bool:
    """Queue a WAITING copy of a dead worker's ``trial`` (same parameters, same bookkeeping
    as ``RetryHeartbeatStaleTrialCallback``: ``failed_trial``, ``retry_history``), unless it
    was retried ``MAX_RETRY`` times already. True if queued."""
    import optuna

    system_attrs: dict[str, Any] = {
        "failed_trial": trial.number,
        "retry_history": [],
        **trial.system_attrs,
    }
    system_attrs["retry_history"] = [*system_attrs["retry_history"], trial.number]
    if len(system_attrs["retry_history"]) > MAX_RETRY:
        return False
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in NOT_INHERITED}
    retry = optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params,
        distributions=trial.distributions, user_attrs=user_attrs, system_attrs=system_attrs,
    )  # fmt: skip
    study.add_trial(retry)
    return True


def worker_identity(lock: str, folder: Path) -> dict[str, Any]:
    """Who runs a trial: host, pid, scheduler job, and the lock that says it is alive."""
    return {
        "host": HOST,
        "pid": os.getpid(),
        **job_identity(),
        "lock": lock,
        "locks_dir": str(folder.resolve()),
    }


def _age_s(started: dt.datetime | None) -> float:
    """Seconds since a trial started (optuna keeps naive local times); 0 if unknown."""
    if started is None:
        return 0.0
    now = dt.datetime.now(started.tzinfo) if started.tzinfo else dt.datetime.now()
    return (now - started).total_seconds()
