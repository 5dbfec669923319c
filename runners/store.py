"""The result store: one JSON record per run, written atomically, shared safely by processes.

Layout of a results folder::

    records/<spec_id>/<recipe_id>__<dataset_id>__s<seed>.json   one record per key
    locks/<spec_id>__<recipe_id>__<dataset_id>__s<seed>.lock    held while a key is running

Guarantees, and how:

- A record file is complete or absent: it is written to a temp file in the same folder
  (``.<name>~<host>~<pid>~<token>.tmp``, which never matches ``*.json``), fsynced, then
  ``os.replace``d. A killed run leaves at most a temp file, removed at the next start.
- A finished ("ok") record is never recomputed unless asked (``force``); a failed one is
  retried by default. ``put`` refuses to replace an ok record without ``force``.
- A corrupt record (bad JSON, another schema, key not matching its name) is reported and
  skipped, never overwritten: ``put`` raises unless ``force``, and even then moves the
  file aside to ``<name>.corrupt-<timestamp>``.
- Two processes never run one key twice: ``claim`` creates the key's lock file with
  ``O_CREAT | O_EXCL`` (pid, hostname, token, heartbeat); a thread of the holder rewrites
  the heartbeat in place through its open descriptor, so it can never write into a lock
  that another process made. A lock whose holder is a dead pid on this host, or whose
  heartbeat is older than ``stale_after_s``, is broken by an atomic rename (only one
  breaker wins), re-checked, and put back with ``os.link`` if it proves live. A holder
  paused for longer than ``stale_after_s`` finds its claim ``lost`` and does not write.

The read side (key, layout, validation, the DataFrame loader) is ``analysis/records.py``,
which needs no torch. The usual loop is ``Store.run_keys``; see its docstring.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import platform
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.records import (
    SCHEMA,
    RecordKey,
    check_record,
    iter_records,
    load_records,
    read_record,
)
from searchspace.errors import StoreError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

LOCKS_DIRNAME = "locks"
RECORDS_DIRNAME = "records"
STALE_AFTER_S = 600.0  # a lock whose heartbeat is older than this is abandoned
TEMP_SUFFIX = ".tmp"
_HOST = socket.gethostname()
_HOST_SAFE = re.sub(r"[^A-Za-z0-9.-]", "-", _HOST) or "host"
_TEMP_MAX_AGE_S = 3600.0  # a temp file of another host older than this is debris
_UNREADABLE_LOCK_GRACE_S = 30.0  # a lock still empty after this was abandoned mid-create

__all__ = [
    "Claim",
    "RecordKey",
    "RunSummary",
    "Store",
    "build_record",
    "dataset_section",
    "environment",
    "load_records",
    "utc_now",
]


def utc_now() -> str:
    """ISO 8601 UTC timestamp with seconds, for ``timings.started_at`` / ``finished_at``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --- low-level file helpers ---------------------------------------------------------------


def _temp_path(final: Path) -> Path:
    token = secrets.token_hex(4)
    return final.with_name(f".{final.name}~{_HOST_SAFE}~{os.getpid()}~{token}{TEMP_SUFFIX}")


def _temp_owner(path: Path) -> tuple[str, int] | None:
    """(host, pid) encoded in a temp file name, or None if it is not one of ours."""
    if not (path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)):
        return None
    parts = path.name[1 : -len(TEMP_SUFFIX)].split("~")
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; not every platform or filesystem supports it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = _temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _plain(value: Any, where: str) -> Any:
    """JSON-ready copy: tuples -> lists, numpy scalars/arrays -> Python, NaN/inf -> null.

    NaN is not JSON; an absent class's IoU (NaN in numpy) is stored as null instead.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy scalar or array, torch-free duck typing
        return _plain(value.tolist(), where)
    raise StoreError(f"{where}: {type(value).__name__} is not JSON data")


# --- records -----------------------------------------------------------------------------


def dataset_section(dataset: Any) -> dict[str, Any]:
    """The record's ``dataset`` object from a ``runners.data.DataSource`` or a mapping."""
    if isinstance(dataset, Mapping):
        data = dict(dataset)
        missing = [k for k in ("id", "label", "is_builtin") if k not in data]
        if missing:
            raise StoreError(f"dataset section lacks {', '.join(missing)}")
        return data
    return {
        "id": dataset.data_id,
        "label": dataset.label,
        "is_builtin": bool(dataset.is_builtin),
        "num_classes": int(dataset.num_classes),
        "class_names": list(dataset.class_names),
    }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device: str = "cpu") -> dict[str, Any]:
    """Versions and machine of a measurement; torch is imported only here (if present)."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "hostname": _HOST,
    }
    with contextlib.suppress(OSError, AttributeError):
        # CPU timings taken while other processes compete are unreliable: say so
        env["load_avg_1m"] = round(os.getloadavg()[0], 2)
    torch = sys.modules.get("torch")
    if torch is None:
        with contextlib.suppress(ImportError):
            import torch  # only the write side needs it, and only here
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        env["numpy"] = numpy.__version__
    return env


def build_record(
    spec: Any,
    recipe: Any,
    dataset: Any,
    seed: int,
    *,
    status: str = "ok",
    reason: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    timings: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A schema-1 record for ``spec`` (BiSeNetV2Spec) under ``recipe`` (Recipe) on ``dataset``.

    ``dataset`` is a ``runners.data.DataSource`` or a mapping with id, label, is_builtin,
    num_classes, class_names. ``env`` defaults to ``environment()``. Validated here, so a
    mistake surfaces before the run's time is spent on writing it.
    """
    data = dataset_section(dataset)
    key = RecordKey.of(spec, recipe, data["id"], seed)
    record = {
        "schema": SCHEMA,
        "key": key.to_dict(),
        "status": status,
        "reason": reason,
        "spec": json.loads(spec.to_json()),
        "spec_string": spec.to_string(),
        "recipe": json.loads(recipe.to_json()),
        "recipe_name": getattr(recipe, "name", None),
        "dataset": data,
        "metrics": dict(metrics) if metrics is not None else None,
        "train": dict(train) if train is not None else None,
        "env": dict(env) if env is not None else environment(),
        "timings": dict(timings) if timings is not None else None,
        "context": dict(context) if context is not None else {},
    }
    record = _plain(record, "record")
    check_record(record, f"record {key}")
    return record


# --- claims ------------------------------------------------------------------------------


@dataclass
class Claim:
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
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_lock(path: Path) -> dict[str, Any] | None:
    """Lock contents, or None if missing, empty or unreadable (just created, or debris)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


_LOCK_BYTES = 512  # fixed size, so a rewrite in place never leaves a longer old tail


def _lock_bytes(token: str, created: float, heartbeat: float) -> bytes:
    text = json.dumps(
        {
            "pid": os.getpid(),
            "hostname": _HOST,
            "token": token,
            "created": round(created, 6),
            "heartbeat": round(heartbeat, 6),
        }
    )
    return text.ljust(_LOCK_BYTES).encode()  # JSON allows trailing whitespace


@dataclass
class RunSummary:
    """What ``Store.run_keys`` did with each key."""

    ran: list[RecordKey] = field(default_factory=list)
    skipped: list[RecordKey] = field(default_factory=list)  # already done (or corrupt)
    busy: list[RecordKey] = field(default_factory=list)  # another live process has it
    lost: list[RecordKey] = field(default_factory=list)  # lock taken over mid-run: not written


class Store:
    """A results folder. Creating one checks it is writable and removes dead temp files."""

    def __init__(
        self,
        results_dir: Path | str,
        *,
        stale_after_s: float = STALE_AFTER_S,
        heartbeat_s: float | None = None,
    ) -> None:
        self.root = Path(results_dir)
        self.records_dir = self.root / RECORDS_DIRNAME
        self.locks_dir = self.root / LOCKS_DIRNAME
        self.stale_after_s = float(stale_after_s)
        # refresh well inside the stale window so a busy machine does not lose its locks
        self.heartbeat_s = float(heartbeat_s) if heartbeat_s else self.stale_after_s / 6
        self.problems: list[str] = []
        self._check_writable()
        self._clean_debris()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # --- setup -----------------------------------------------------------------------

    def _check_writable(self) -> None:
        try:
            self.records_dir.mkdir(parents=True, exist_ok=True)
            self.locks_dir.mkdir(exist_ok=True)
            probe = _temp_path(self.root / "write-probe")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise StoreError(f"results folder {self.root} is not writable ({why})") from None

    def _clean_debris(self) -> None:
        """Remove temp files of dead writers and stale-lock leftovers; never records."""
        now = time.time()
        folders = [
            self.root,
            self.locks_dir,
            *(p for p in self.records_dir.iterdir() if p.is_dir()),
        ]
        for folder in folders:
            for path in folder.glob(f".*{TEMP_SUFFIX}"):
                owner = _temp_owner(path)
                if owner is None:
                    continue
                host, pid = owner
                with contextlib.suppress(OSError):
                    dead = host == _HOST_SAFE and not _pid_alive(pid)
                    if dead or now - path.stat().st_mtime > _TEMP_MAX_AGE_S:
                        path.unlink()
                        log.info("removed temp file of an interrupted write: %s", path)
        for path in self.locks_dir.glob("*.lock.stale-*"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > _UNREADABLE_LOCK_GRACE_S:
                    path.unlink()

    def _report(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)
            log.warning(message)

    # --- records ---------------------------------------------------------------------

    def path(self, key: RecordKey) -> Path:
        return self.records_dir / key.relpath

    def get(self, key: RecordKey) -> dict[str, Any] | None:
        """The record of ``key``, None if there is none; StoreError if its file is corrupt."""
        path = self.path(key)
        if not path.exists():
            return None
        return read_record(path)

    def exists(self, key: RecordKey) -> bool:
        """A valid record (ok or failed) exists; a corrupt file is reported and counts as no."""
        try:
            return self.get(key) is not None
        except StoreError as exc:
            self._report(f"{exc}; skipped")
            return False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every valid record; corrupt files are reported in ``problems`` and skipped."""
        problems: list[str] = []
        for _, record in iter_records(self.records_dir, problems):
            yield record
        for message in problems:
            self._report(message)

    def keys(self) -> list[RecordKey]:
        return [RecordKey.from_dict(r["key"]) for r in self]

    def frame(self) -> pd.DataFrame:
        """All records as the tidy frame of ``analysis.records.load_records``."""
        return load_records(self.root)

    def needs_run(
        self,
        key: RecordKey,
        force: bool = False,
        retry_failed: bool = True,
        *,
        fresh_since: float | None = None,
    ) -> bool:
        """Should this key be (re)computed?

        No record: yes. An ok record: only with ``force``. A failed one: if
        ``retry_failed``. A corrupt file: reported; only with ``force`` (``put`` then moves
        it aside). ``fresh_since`` (a ``time.time()``) makes a record written since then
        count as done even with ``force``, so that forced runs in two processes still run
        each key once.
        """
        path = self.path(key)
        if not path.exists():
            return True
        try:
            record = read_record(path)
        except StoreError as exc:
            if not force:
                self._report(f"{exc}; skipped (re-run with force to move it aside)")
            return force
        if fresh_since is not None:
            with contextlib.suppress(OSError):
                if path.stat().st_mtime >= fresh_since:
                    return False
        if force:
            return True
        return record["status"] == "failed" and retry_failed

    def put(self, record: Mapping[str, Any], force: bool = False) -> Path:
        """Write ``record`` atomically; returns its path.

        Refuses (StoreError) to replace an ok record or a corrupt file unless ``force``;
        with ``force`` a corrupt file is moved aside to ``<name>.corrupt-<timestamp>``.
        """
        record = _plain(dict(record), "record")
        key = check_record(record, "record to store")
        path = self.path(key)
        if path.exists():
            try:
                existing = read_record(path)
            except StoreError as exc:
                if not force:
                    raise StoreError(
                        f"{exc}; not overwriting it (use force to move it aside)"
                    ) from None
                stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
                aside = path.with_name(f"{path.name}.corrupt-{stamp}")
                os.replace(path, aside)
                self._report(f"moved corrupt record {path} aside to {aside.name}")
            else:
                if existing["status"] == "ok" and not force:
                    raise StoreError(f"record {path} is already finished; pass force to replace it")
        text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, text)
        except OSError as exc:
            raise StoreError(f"cannot write record {path}: {exc.strerror or exc}") from None
        return path

    # --- claims ----------------------------------------------------------------------

    def lock_path(self, key: RecordKey) -> Path:
        return self.locks_dir / f"{key.stem}.lock"

    def _is_stale(self, holder: dict[str, Any] | None, mtime: float) -> bool:
        now = time.time()
        if holder is None:  # created but not yet written, or its creator died in between
            return now - mtime > min(_UNREADABLE_LOCK_GRACE_S, self.stale_after_s)
        if holder.get("hostname") == _HOST:
            pid = holder.get("pid")
            if isinstance(pid, int) and not _pid_alive(pid):
                return True
        beat = holder.get("heartbeat")
        beat = max(float(beat), mtime) if isinstance(beat, (int, float)) else mtime
        return now - beat > self.stale_after_s

    def _break(self, path: Path, inode: int) -> None:
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
            holder = _read_lock(aside)
            if st.st_ino != inode or not self._is_stale(holder, st.st_mtime):
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
            else:
                log.warning("broke stale lock %s (holder %s)", path, holder)
        finally:
            with contextlib.suppress(OSError):
                aside.unlink()

    def try_claim(self, key: RecordKey) -> Claim:
        """Take the key's lock if free (or stale); the result is falsy if someone holds it."""
        path = self.lock_path(key)
        holder: dict[str, Any] | None = None
        for _ in range(5):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue  # released meanwhile; try again
                holder = _read_lock(path)
                if not self._is_stale(holder, st.st_mtime):
                    return Claim(key, path, acquired=False, holder=holder)
                self._break(path, st.st_ino)
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
            claim = Claim(key, path, True, token=token, _fd=fd, _inode=(st.st_dev, st.st_ino))
            claim._thread = threading.Thread(
                target=self._heartbeat, args=(claim, now), name=f"lock-{key.stem}", daemon=True
            )
            claim._thread.start()
            return claim
        return Claim(key, path, acquired=False, holder=holder)

    def _heartbeat(self, claim: Claim, created: float) -> None:
        """Rewrite the held lock in place (through our own descriptor, so never anyone
        else's file) until released; notice if a breaker took the path over."""
        while not claim._stop.wait(self.heartbeat_s):
            if not claim.owned():
                time.sleep(0.05)  # a breaker that misjudged us restores the lock at once
                if not claim.owned():
                    claim._lost = True
                    log.warning("lost lock %s to another process", claim.path)
                    return
            with contextlib.suppress(OSError):
                os.pwrite(claim._fd, _lock_bytes(claim.token, created, time.time()), 0)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def claim(self, key: RecordKey) -> Iterator[Claim]:
        """``with store.claim(key) as c:`` -- ``c`` is falsy if another live process has it."""
        claim = self.try_claim(key)
        try:
            yield claim
        finally:
            claim.release()

    # --- the resumable loop ----------------------------------------------------------

    def run_keys(
        self,
        keys: Iterable[RecordKey],
        work: Callable[[RecordKey], Mapping[str, Any]],
        *,
        force: bool = False,
        retry_failed: bool = True,
    ) -> RunSummary:
        """Run ``work(key) -> record`` for each key that needs it, once across processes.

        The order per key: skip if done; claim (skip if another process holds it); check
        again (it may have finished while we looked); run; put. ``work`` should return a
        failed record (``build_record(..., status="failed", reason=...)``) for an expected
        failure; an exception propagates and leaves no record (the lock is released).
        """
        summary = RunSummary()
        fresh_since = time.time() if force else None
        for key in keys:
            if not self.needs_run(key, force, retry_failed, fresh_since=fresh_since):
                summary.skipped.append(key)
                continue
            with self.claim(key) as claim:
                if not claim:
                    summary.busy.append(key)
                    continue
                if not self.needs_run(key, force, retry_failed, fresh_since=fresh_since):
                    summary.skipped.append(key)
                    continue
                record = work(key)
                got = check_record(_plain(dict(record), "record"), f"record of {key}")
                if got != key:
                    raise StoreError(f"work({key}) returned a record for another key ({got})")
                if claim.lost:
                    self._report(f"lock of {key} was taken over while running; not written")
                    summary.lost.append(key)
                    continue
                self.put(record, force=True)
                summary.ran.append(key)
        return summary
