"""What a command writes because the user named it: whole or not at all, one error line
when it cannot be written, and nothing left behind when the command fails.

A command's outputs (``--json``, ``--csv``, ``--out``, the figures and tables beside a
report, saved predictions, an ONNX file, a converted checkpoint, a run folder) are
written through here, not through ``searchspace.atomic`` directly, because:

- the write is atomic (``atomic.replacing``): a write that fails leaves no partial file;
- an ``OSError`` becomes an ``OutputError`` naming the path and the reason, which
  ``run_cli`` prints as one line. That is how a full disk or a read-only folder is told
  apart from a bug: an ``OSError`` raised anywhere else is a bug, and keeps its traceback;
- inside ``run_cli`` each file and folder made here is remembered (``collecting``), and a
  command that ends in a user error removes them again (``Made.discard``): the files it
  created, then the folders it created, each folder only if empty, so finished work that
  other code put there (a checkpoint, a record) is never lost. A file that existed
  before is replaced, not restored.

A destination that exists and is a device or a pipe (``/dev/null``, ``/dev/stdout``) is
written in place: renaming a temp file over it would replace the device node itself.

Records, locks and checkpoints are work, not outputs: a later failure must not remove
them, so they stay with ``searchspace.atomic``. Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from searchspace.atomic import json_text, replacing, write_bytes
from searchspace.errors import OutputError, one_line

__all__ = [
    "Made",
    "collecting",
    "make_output_dir",
    "output_file",
    "write_output",
    "write_output_json",
]


@dataclass
class Made:
    """The files and folders one command created, in order."""

    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)

    def discard(self) -> None:
        """Remove what the command made: files first, then folders deepest first, each
        folder only if it is empty (``rmdir``), so nothing that other code wrote goes."""
        for path in reversed(self.files):
            with contextlib.suppress(OSError):
                path.unlink()
        for folder in reversed(self.folders):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.files.clear()
        self.folders.clear()


_collecting: list[Made] = []  # a stack: a command run inside another keeps its own list


@contextlib.contextmanager
def collecting() -> Iterator[Made]:
    """Remember what the outputs written in this block create (``run_cli`` wraps each
    command in it); outside such a block nothing is remembered."""
    made = Made()
    _collecting.append(made)
    try:
        yield made
    finally:
        _collecting.remove(made)


def _remember(kind: str, path: Path) -> None:
    if _collecting:
        getattr(_collecting[-1], kind).append(path)


def _reason(exc: OSError) -> str:
    return exc.strerror or one_line(exc)


def _is_special(path: Path) -> bool:
    """An existing destination that is neither a file nor a folder: a device, a pipe."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def make_output_dir(path: Path | str, label: str | None = None) -> Path:
    """Make the folder ``path`` (and missing parents), remembering the ones made here;
    ``OutputError`` ("LABEL: cannot create the folder (reason)") if it cannot be."""
    path = Path(path)
    label = label or f"folder {path}"
    try:
        missing = []
        folder = path
        while not folder.exists() and folder.parent != folder:
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    raise
                continue  # made meanwhile by another process: not ours to remove
            _remember("folders", folder)
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    except OSError as exc:
        raise OutputError(f"{label}: cannot create the folder ({_reason(exc)})") from None
    return path


@contextlib.contextmanager
def output_file(path: Path | str, label: str | None = None) -> Iterator[Path]:
    """``with output_file(p) as tmp: write(tmp)``, for writers that want a file name
    (``torch.save``, PIL, matplotlib, the ONNX exporter): ``atomic.replacing``, with an
    ``OSError`` of the write turned into ``OutputError``."""
    path = Path(path)
    label = label or str(path)
    if _is_special(path):
        raise OutputError(f"{label}: cannot write (not a regular file)")
    new = not path.exists()
    try:
        with replacing(path) as tmp:
            yield tmp
    except OSError as exc:
        raise OutputError(f"{label}: cannot write ({_reason(exc)})") from None
    if new:
        _remember("files", path)


def write_output(path: Path | str, data: str | bytes, label: str | None = None) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` as one whole file; ``OutputError``
    ("LABEL: cannot write (reason)", LABEL defaulting to the path) if it cannot be."""
    path = Path(path)
    label = label or str(path)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if _is_special(path):
            with path.open("wb") as fh:
                fh.write(blob)
            return path
        new = not path.exists()
        write_bytes(path, blob)
    except OSError as exc:
        raise OutputError(f"{label}: cannot write ({_reason(exc)})") from None
    if new:
        _remember("files", path)
    return path


def write_output_json(path: Path | str, data: object, label: str | None = None) -> Path:
    """``write_output`` of ``atomic.json_text(data)`` (strict JSON, NaN as null)."""
    return write_output(path, json_text(data), label)
