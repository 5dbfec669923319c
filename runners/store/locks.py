"""One lock file per record key, so that two processes never run one key twice.

``Locks.try_lock`` creates ``locks/<key stem>.lock`` with ``O_CREAT | O_EXCL`` (pid,
hostname, token, heartbeat); a thread of the holder rewrites the heartbeat in place
through its open descriptor, so it can never write into a lock that another process
made. A lock whose holder is a dead pid on this host, or whose heartbeat is older than
``stale_after_s``, is broken by an atomic rename (only one breaker wins), re-checked, and
put back with ``os.link`` if it proves live. A holder paused for longer than
``stale_after_s`` finds its lock ``lost`` and must not write.

A lock also says what a status view needs: the scheduler's job and array task when one
started the holder (``job_identity``), and the iteration its run has reached
(``RunLock.note``), so ``--status`` answers from the folder alone, on any machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.store.files import pid_alive
from searchspace.atomic import HOST
from searchspace.errors import StoreError
from searchspace.records import RecordKey

log = logging.getLogger(__name__)

UNREADABLE_LOCK_GRACE_S = 30.0  # a lock still empty after this was abandoned mid-create
_LOCK_BYTES = 1024  # fixed size, so a rewrite in place never leaves a longer old tail
NOTE_EVERY_S = 5.0  # progress notes are written at most this often between heartbeats

# environment variable -> lock field: who started this process (a scheduler, a launcher)
_JOB_ENV = {
    "SLURM_ARRAY_JOB_ID": "array_job_id",
    "SLURM_ARRAY_TASK_ID": "array_task",
    "SLURM_JOB_ID": "job_id",
    "BISENET_LAUNCH_ID": "launch_id",
    "BISENET_LAUNCH_TASK": "launch_task",
}


def job_identity() -> dict[str, str]:
    """The scheduler job / launcher task this process runs as (empty when started by hand)."""
    return {name: os.environ[env] for env, name in _JOB_ENV.items() if os.environ.get(env)}


@dataclass
class RunLock:
    """The right to run one key; truthy only when acquired. Release it (``with`` does)."""

    key: RecordKey
    path: Path
    acquired: bool
    holder: dict[str, Any] | None = None  # who holds it, when not acquired
    token: str = ""
    _fd: int | None = field(default=None, repr=False)
    _inode: tuple[int, int] = field(default=(0, 0), repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lost: bool = field(default=False, repr=False)
    _created: float = field(default=0.0, repr=False)
    _notes: dict[str, Any] = field(default_factory=dict, repr=False)
    _noted_at: float = field(default=0.0, repr=False)
    _write: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __bool__(self) -> bool:
        return self.acquired

    @property
    def lost(self) -> bool:
        """True if another process broke the lock (it presumed us dead) while we held it."""
        return self._lost

    def owned(self) -> bool:
        """The lock path still names our file (a breaker renames it, then makes its own)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._inode

    def note(self, **fields: Any) -> None:
        """Progress for a status view (e.g. ``iteration=40``): kept, and written into the
        lock at most every ``NOTE_EVERY_S`` seconds (the heartbeat writes it too)."""
        self._notes.update(fields)
        now = time.time()
        if self.acquired and now - self._noted_at >= NOTE_EVERY_S:
            self._rewrite(now)

    def _rewrite(self, now: float) -> None:
        """Rewrite the held lock in place through our own descriptor (never anyone else's
        file: a breaker renames the path away, our descriptor keeps pointing at ours)."""
        with self._write:
            if self._fd is None:
                return
            self._noted_at = now
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, _lock_bytes(self.token, self._created, now, self._notes), 0)

    def release(self) -> None:
        if not self.acquired:
            return
        self.acquired = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self._lost and self.owned():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        with self._write:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read_lock(path: Path) -> dict[str, Any] | None:
    """Lock contents, or None if missing, empty or unreadable (just created, or debris)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _lock_bytes(
    token: str, created: float, heartbeat: float, notes: dict[str, Any] | None = None
) -> bytes:
    holder = {
        "pid": os.getpid(),
        "hostname": HOST,
        "token": token,
        "created": round(created, 6),
        "heartbeat": round(heartbeat, 6),
        **job_identity(),
        **(notes or {}),
    }
    data = json.dumps(holder).encode()
    if len(data) > _LOCK_BYTES:  # never cut a lock's JSON: drop the notes instead
        data = json.dumps({k: holder[k] for k in list(holder)[:5]}).encode()
    return data.ljust(_LOCK_BYTES)  # JSON allows trailing whitespace


class Locks:
    """The lock folder of a results folder."""

    def __init__(self, folder: Path, stale_after_s: float, heartbeat_s: float) -> None:
        self.folder = folder
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s

    def path(self, key: RecordKey) -> Path:
        return self.folder / f"{key.stem}.lock"

    def remove_leftovers(self) -> None:
        """Locks moved aside by a breaker that died before removing them."""
        now = time.time()
        for path in self.folder.glob("*.lock.stale-*"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > UNREADABLE_LOCK_GRACE_S:
                    path.unlink()

    def is_stale(self, holder: dict[str, Any] | None, mtime: float) -> bool:
        now = time.time()
        if holder is None:  # created but not yet written, or its creator died in between
            return now - mtime > min(UNREADABLE_LOCK_GRACE_S, self.stale_after_s)
        if holder.get("hostname") == HOST:
            pid = holder.get("pid")
            if isinstance(pid, int) and not pid_alive(pid):
                return True
        beat = holder.get("heartbeat")
        beat = max(float(beat), mtime) if isinstance(beat, (int, float)) else mtime
        return now - beat > self.stale_after_s

    def live_holders(self) -> dict[str, dict[str, Any]]:
        """Key stem -> holder of every live lock: one listing of the folder (a status view
        or a progress line asks about all keys at once, not one file per key)."""
        out: dict[str, dict[str, Any]] = {}
        try:
            paths = list(self.folder.glob("*.lock"))
        except OSError:
            return out
        for path in paths:
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile
            holder = read_lock(path)
            if holder is not None and not self.is_stale(holder, mtime):
                out[path.name.removesuffix(".lock")] = holder
        return out

    def remove_dead(self, ended: bool = False, **match: Any) -> int:
        """Remove the locks of this host whose holder process has ended and whose fields
        equal ``match`` (e.g. ``launch_id=...``: what a cancelled launch left behind); a
        live holder's lock is never touched. ``ended``: the caller knows every matching
        holder has ended (its scheduler says its jobs are gone), on any host. Returns how
        many were removed."""
        removed = 0
        for path in self.folder.glob("*.lock"):
            holder = read_lock(path)
            if not holder or (holder.get("hostname") != HOST and not ended):
                continue
            if any(holder.get(k) != v for k, v in match.items()):
                continue
            pid = holder.get("pid")
            if ended or (isinstance(pid, int) and not pid_alive(pid)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed

    def is_held(self, key: RecordKey) -> bool:
        """Whether a live process (this one included) holds the key's lock."""
        path = self.path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        return not self.is_stale(read_lock(path), st.st_mtime)

    def break_stale(self, path: Path, inode: int) -> None:
        """Move a stale lock away; put it back if it turns out to be live after all.

        Only one breaker's rename can succeed. If what we renamed is not the file we judged
        (another inode) or its heartbeat moved meanwhile, it is live: restore it with
        ``os.link`` (same inode, so its holder keeps it), which fails rather than clobber
        a lock created in between.
        """
        aside = path.with_name(f"{path.name}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return  # another process broke it first
        try:
            st = aside.stat()
            holder = read_lock(aside)
            if st.st_ino != inode or not self.is_stale(holder, st.st_mtime):
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
            else:
                log.warning("broke stale lock %s (holder %s)", path, holder)
        finally:
            with contextlib.suppress(OSError):
                aside.unlink()

    def try_lock(self, key: RecordKey) -> RunLock:
        """Take the key's lock if free (or stale); the result is falsy if someone holds it."""
        path = self.path(key)
        holder: dict[str, Any] | None = None
        for _ in range(5):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue  # released meanwhile; try again
                holder = read_lock(path)
                if not self.is_stale(holder, st.st_mtime):
                    return RunLock(key, path, acquired=False, holder=holder)
                self.break_stale(path, st.st_ino)
                continue
            except OSError as exc:
                raise StoreError(f"cannot create lock {path}: {exc.strerror or exc}") from None
            token, now = secrets.token_hex(8), time.time()
            try:
                os.pwrite(fd, _lock_bytes(token, now, now), 0)
                os.fsync(fd)
                st = os.fstat(fd)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.unlink()
                raise
            lock = RunLock(
                key, path, True, token=token, _fd=fd, _inode=(st.st_dev, st.st_ino), _created=now
            )
            lock._thread = threading.Thread(
                target=self._heartbeat, args=(lock,), name=f"lock-{key.stem}", daemon=True
            )
            lock._thread.start()
            return lock
        return RunLock(key, path, acquired=False, holder=holder)

    def _heartbeat(self, lock: RunLock) -> None:
        """Rewrite the held lock (``RunLock._rewrite``) until released; notice if a breaker
        took the path over."""
        while not lock._stop.wait(self.heartbeat_s):
            if not lock.owned():
                time.sleep(0.05)  # a breaker that misjudged us restores the lock at once
                if not lock.owned():
                    lock._lost = True
                    log.warning("lost lock %s to another process", lock.path)
                    return
            lock._rewrite(time.time())

    @contextlib.contextmanager
    def hold(self, key: RecordKey) -> Iterator[RunLock]:
        """``with locks.hold(key) as lock:`` -- ``lock`` is falsy if another process has it."""
        lock = self.try_lock(key)
        try:
            yield lock
        finally:
            lock.release()
