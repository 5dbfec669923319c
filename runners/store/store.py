"""The result store: one JSON record per run, written atomically, shared safely by processes.

Layout of a results folder::

    records/<spec_id>/<recipe_id>__<dataset_id>__s<seed>.json   one record per key
    locks/<spec_id>__<recipe_id>__<dataset_id>__s<seed>.lock    held while a key is running

Guarantees, and how:

- A record file is complete or absent: it is written by ``searchspace.atomic`` (temp file
  in the same folder, fsync, ``os.replace``). A killed run leaves at most a temp file,
  which never matches ``*.json`` and is removed at the next start (``files.py``).
- A finished ("ok") record is never recomputed unless asked (``force``); a failed one is
  retried up to a cap of attempts (``run_once.py``: the one failure policy). ``put``
  refuses to replace an ok record without ``force``.
- A corrupt record (bad JSON, another schema, key not matching its name) is reported and
  skipped, never overwritten: ``put`` raises unless ``force``, and even then moves the
  file aside to ``<name>.corrupt-<timestamp>``.
- Two processes never run one key twice: see ``locks.py``.

The record's key, layout and validation are ``searchspace/records.py``, shared with the
loader in ``analysis/records.py``. Running keys goes through ``run_once.run_once``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from runners.store.files import check_writable, move_aside, remove_dead_temp_files
from runners.store.locks import Locks, RunLock
from runners.store.records import plain
from searchspace.atomic import write_json
from searchspace.errors import StoreError
from searchspace.records import RECORDS_DIRNAME, RecordKey, check_record, iter_records, read_record

log = logging.getLogger(__name__)

LOCKS_DIRNAME = "locks"
STALE_AFTER_S = 600.0  # a lock whose heartbeat is older than this is abandoned


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
        self.locks = Locks(self.locks_dir, self.stale_after_s, self.heartbeat_s)
        self.problems: list[str] = []
        check_writable(self.root, self.records_dir, self.locks_dir)
        self._clean_debris()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # --- setup -----------------------------------------------------------------------

    def _clean_debris(self) -> None:
        """Remove temp files of dead writers and stale-lock leftovers; never records."""
        spec_folders = (p for p in self.records_dir.iterdir() if p.is_dir())
        remove_dead_temp_files([self.root, self.locks_dir, *spec_folders])
        self.locks.remove_leftovers()

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

    def record(self, key: RecordKey) -> dict[str, Any] | None:
        """The stored record (ok or failed), or None; a corrupt file is reported and counts
        as none (for readers that must not stop on one bad file)."""
        try:
            return self.get(key)
        except StoreError as exc:
            self._report(f"{exc}; skipped")
            return None

    def state(self, key: RecordKey) -> str:
        """ "absent", "ok", "failed" or "corrupt" (a file that is not a valid record)."""
        try:
            record = self.get(key)
        except StoreError:
            return "corrupt"
        return "absent" if record is None else record["status"]

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

    def put(self, record: Mapping[str, Any], force: bool = False) -> Path:
        """Write ``record`` atomically; returns its path.

        Refuses (StoreError) to replace an ok record or a corrupt file unless ``force``;
        with ``force`` a corrupt file is moved aside to ``<name>.corrupt-<timestamp>``.
        """
        record = plain(record)
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
                aside = move_aside(path)
                self._report(f"moved corrupt record {path} aside to {aside.name}")
            else:
                if existing["status"] == "ok" and not force:
                    raise StoreError(f"record {path} is already finished; pass force to replace it")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, record)
        except OSError as exc:
            raise StoreError(f"cannot write record {path}: {exc.strerror or exc}") from None
        return path

    # --- locks -----------------------------------------------------------------------

    def held(self, key: RecordKey) -> bool:
        """Whether some live process is running ``key`` now (its lock is held)."""
        return self.locks.is_held(key)

    @contextlib.contextmanager
    def lock(self, key: RecordKey) -> Iterator[RunLock]:
        """``with store.lock(key) as lock:`` -- ``lock`` is falsy if another process has it."""
        with self.locks.hold(key) as lock:
            yield lock
