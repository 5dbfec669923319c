"""The toolkit's files: a writability probe, debris of dead writers, corrupt files, and
folders built aside then renamed into place (``building_dir``: the caches).

Writing itself is ``searchspace.atomic`` (temp file + fsync + ``os.replace``), whose temp
names say which host and pid made them: that is how debris is told from a write in
progress. A folder being built is named the same way, and its builder keeps its
modification time fresh (a heartbeat), because a build can take hours.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import errno
import functools
import glob
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from searchspace.atomic import TEMP_SUFFIX, fsync_dir, temp_owner, temp_path
from searchspace.errors import StoreError

log = logging.getLogger(__name__)

TEMP_MAX_AGE_S = 3600.0  # a temp file of another host older than this is debris
HEARTBEAT_S = 60.0  # a folder being built has its mtime refreshed this often
# A dead pid is trusted only after this long without a heartbeat: a live builder in another
# PID namespace (a container sharing the host name) still beats.
DEAD_GRACE_S = 2 * HEARTBEAT_S
PARTIAL = ".partial"
# names of folders left by the builders before building_dir (removed by age only)
_LEGACY_PARTIALS = (".partial-", ".tmp-", ".old-")


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


# ------------------------------------------------------------ folders built, then renamed


def partial_dir(final: Path) -> Path:
    """A fresh name beside ``final`` for building it: ``.<name>.partial~<host>~<pid>~<token>.tmp``
    (``temp_path``'s rule, so the name says who builds it)."""
    return temp_path(final.with_name(final.name + PARTIAL))


def _partial_owner(final: Path, path: Path) -> tuple[bool, int] | None:
    """(made on this host?, pid) of a partial folder of ``final``; None for anything else
    (another target's partial, a file, a name this module never makes)."""
    base = path.name[1 : -len(TEMP_SUFFIX)].rsplit("~", 3)[0]
    return temp_owner(path) if base == final.name + PARTIAL else None


def partial_is_dead(final: Path, path: Path, now: float | None = None) -> bool:
    """Whether a partial folder of ``final`` is debris, provably or by a long silence.

    A live builder beats every ``HEARTBEAT_S``, so: debris when made on this host by a pid
    that no longer runs and silent for ``DEAD_GRACE_S``, or silent for ``TEMP_MAX_AGE_S``
    (another host, where no pid can be asked; a reused pid). A builder stopped for longer
    than that loses its partial and fails in one line when it resumes.
    """
    owner = _partial_owner(final, path)
    if owner is None:
        return False
    try:
        silent_s = (time.time() if now is None else now) - path.stat().st_mtime
    except OSError:
        return False  # gone already
    here, pid = owner
    return silent_s > TEMP_MAX_AGE_S or (here and silent_s > DEAD_GRACE_S and not pid_alive(pid))


def remove_dead_partials(final: Path) -> list[Path]:
    """Remove the partial folders of ``final`` whose builders are dead; returns them.

    A live concurrent builder's partial is never touched. Folders of the builders before
    this rule (``.<name>.partial-<pid>``, ``.tmp-*``, ``.old-*``: no host, no heartbeat)
    go only when untouched for ``TEMP_MAX_AGE_S``."""
    now, removed = time.time(), []
    pattern = glob.escape(f".{final.name}")
    for path in final.parent.glob(f"{pattern}*"):
        if path.is_symlink() or not path.is_dir():
            continue
        legacy = any(path.name.startswith(f".{final.name}{p}") for p in _LEGACY_PARTIALS)
        with contextlib.suppress(OSError):
            if partial_is_dead(final, path, now) or (
                legacy and now - path.stat().st_mtime > TEMP_MAX_AGE_S
            ):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
                log.info("removed the partial folder of a dead builder: %s", path)
    return removed


def _heartbeat(folder: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with contextlib.suppress(OSError):
            os.utime(folder)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc older than 2.28, or another libc
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``), so a
    reader of either name never finds it missing; False where the system or filesystem
    cannot (the caller then falls back to two renames)."""
    fn = _renameat2()
    at_fdcwd, rename_exchange = -100, 2
    return (
        fn is not None
        and fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    )


def _publish(tmp: Path, final: Path, keep: Callable[[Path], bool]) -> None:
    """Put the finished ``tmp`` at ``final`` (what was there ends up in ``tmp`` or in a
    partial of ours, for the caller to delete), unless ``keep(final)`` says what is there
    stays."""
    asides = []
    try:
        for _ in range(5):
            if not tmp.is_dir():
                raise FileNotFoundError(
                    errno.ENOENT, "the folder being built was removed (paused for over an hour?)",
                    str(tmp),
                )  # fmt: skip
            try:
                os.rename(tmp, final)  # atomic when final is absent (or an empty folder)
                return
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    raise
            if keep(final):
                return  # another builder's result (or something not ours): theirs stays
            if exchange(tmp, final):
                return
            # no atomic swap here: readers may miss it between these two renames
            aside = partial_dir(final)
            with contextlib.suppress(FileNotFoundError):  # another builder moved it already
                os.rename(final, aside)
                asides.append(aside)
        raise OSError(errno.EBUSY, "other builders kept replacing it", str(final))
    finally:
        fsync_dir(final.parent)
        for aside in asides:
            shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def building_dir(final: Path | str, keep: Callable[[Path], bool]) -> Iterator[Path]:
    """``with building_dir(final, keep) as tmp: write(tmp)`` -- build a folder aside, then
    publish it at ``final`` in one rename.

    Several processes may build the same ``final`` at once: each builds in its own partial
    folder (``partial_dir``) with a heartbeat, and only dead builders' partials are removed
    (``remove_dead_partials``). On success, when something is already at ``final``,
    ``keep(final)`` decides: True keeps it (another builder finished first, or it is not
    ours to replace) and ours is discarded; False replaces it by an atomic swap where the
    system has one (Linux), so a reader finds the old complete folder or the new one, never
    none and never half of one. When the block raises, the partial is removed and
    ``final`` is untouched. OSError when the folder cannot be made or published.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(final)
    tmp = partial_dir(final)
    tmp.mkdir()
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(tmp, stop), name="partial-heartbeat")
    beat.daemon = True
    beat.start()
    try:
        yield tmp
        stop.set()
        beat.join()
        _publish(tmp, final, keep)
    finally:
        stop.set()
        shutil.rmtree(tmp, ignore_errors=True)  # ours unpublished, or the old one swapped out
