"""The results folder's files: a writability probe, debris of dead writers, corrupt files.

Writing itself is ``searchspace.atomic`` (temp file + fsync + ``os.replace``), whose temp
names say which host and pid made them: that is how debris is told from a write in
progress.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from searchspace.atomic import TEMP_SUFFIX, temp_owner, temp_path
from searchspace.errors import StoreError

log = logging.getLogger(__name__)

TEMP_MAX_AGE_S = 3600.0  # a temp file of another host older than this is debris


def pid_alive(pid: int) -> bool:
    """A process of this id runs on this machine; a zombie (exited, not yet reaped by its
    parent, e.g. a launcher's task seen from the process that started it) does not."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux), or it ended just now: the signal said it exists
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def check_writable(root: Path, *folders: Path) -> None:
    """Create ``folders`` and prove ``root`` takes a new file; one StoreError line if not."""
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path(root / "write-probe")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise StoreError(f"results folder {root} is not writable ({why})") from None


def remove_dead_temp_files(folders: Iterable[Path]) -> None:
    """Temp files of writers that died (a dead pid here, or old ones of another host)."""
    now = time.time()
    for folder in folders:
        for path in folder.glob(f".*{TEMP_SUFFIX}"):
            owner = temp_owner(path)
            if owner is None:
                continue
            here, pid = owner
            with contextlib.suppress(OSError):
                dead = here and not pid_alive(pid)
                if dead or now - path.stat().st_mtime > TEMP_MAX_AGE_S:
                    path.unlink()
                    log.info("removed temp file of an interrupted write: %s", path)


def move_aside(path: Path) -> Path:
    """Rename a corrupt record to ``<name>.corrupt-<timestamp>``: kept, never read again."""
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    return aside
