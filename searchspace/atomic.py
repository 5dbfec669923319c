"""The one way this toolkit writes a file: whole or not at all, and JSON without NaN.

Every writer (result records, run results, checkpoints, profiles, reports, exported
specs, prediction PNGs, ONNX files) goes through ``replacing``: the content is written to
a temp file in the destination's folder, fsynced, then ``os.replace``d over the
destination, and the folder is fsynced so the rename survives a power cut. A kill at any
moment leaves the old file or the new one, never half of one; at worst a temp file
remains, whose name says who left it::

    .<name>~<host>~<pid>~<token>.tmp     (never matches *.json, *.pt, *.png ...)

so that the result store can remove the temp files of dead writers (``temp_owner``).

JSON: NaN and infinity are not JSON. Every JSON file is written through ``json_text``,
which turns them into ``null`` (an absent class's IoU, a diverged loss), turns tuples into
lists and numpy scalars into numbers, and refuses anything else that is not JSON data.
Files written before this rule may hold ``"nan"`` strings or bare ``NaN``; readers go
through ``finite_or_none``.

Standard library only, so runners and analysis both import it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
HOST = socket.gethostname()
_HOST_SAFE = re.sub(r"[^A-Za-z0-9.-]", "-", HOST) or "host"
_LEGACY_NON_FINITE = frozenset({"nan", "-nan", "inf", "-inf", "+inf", "infinity", "-infinity"})


# --- temp files ---------------------------------------------------------------------------


def temp_path(final: Path | str) -> Path:
    """A fresh temp file name beside ``final`` (same folder, so the rename is atomic)."""
    final = Path(final)
    token = secrets.token_hex(4)
    return final.with_name(f".{final.name}~{_HOST_SAFE}~{os.getpid()}~{token}{TEMP_SUFFIX}")


def temp_owner(path: Path) -> tuple[bool, int] | None:
    """(made on this host?, pid) of a temp file of ``temp_path``; None if it is not one."""
    if not (path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)):
        return None
    parts = path.name[1 : -len(TEMP_SUFFIX)].rsplit("~", 3)  # the name itself may hold "~"
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    return parts[1] == _HOST_SAFE, int(parts[2])


def default_file_mode() -> int:
    """What ``open()`` would have created: 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(folder: Path) -> None:
    """Make a rename durable; not every platform or filesystem supports it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """``with replacing(p) as tmp: write(tmp)`` -- ``p`` appears only once ``write`` is done.

    For writers that want a file name (``torch.save``, ``PIL``, the ONNX exporter). When
    the block ends normally the temp file is fsynced and renamed over ``path``; when it
    raises, the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns ``path``."""
    path = Path(path)
    with replacing(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
    return path


def write_text(path: Path | str, text: str) -> Path:
    """UTF-8 text, newlines as given (no platform translation), atomically."""
    return write_bytes(path, text.encode("utf-8"))


# --- JSON -------------------------------------------------------------------------------


def json_data(value: Any, where: str = "value") -> Any:
    """A JSON-ready copy: tuples -> lists, numpy scalars/arrays -> Python, NaN/inf -> None.

    Raises TypeError naming ``where`` for anything that is not data (an object, a tensor
    with a gradient ...), so a mistake shows before a file is written.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_data(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy scalar or array, torch-free duck typing
        return json_data(value.tolist(), where)
    raise TypeError(f"{where}: {type(value).__name__} is not JSON data")


_SCALAR = r'(?:-?\d[\d.eE+-]*|"(?:[^"\\\n]|\\.)*"|true|false|null)'
# an indented array whose items are all scalars: one item per line
_FLAT_ARRAY = re.compile(r"\[\n((?:[ ]*" + _SCALAR + r",?\n)+)[ ]*\]")


def _inline_flat_arrays(text: str) -> str:
    """``[1, 2, 3]`` on one line, not one number per line: per-image counts stay readable
    and a record with 500 images' counts stays a few hundred kB."""

    def join(match: re.Match[str]) -> str:
        items = [line.strip().rstrip(",") for line in match.group(1).splitlines()]
        return "[" + ", ".join(items) + "]"

    return _FLAT_ARRAY.sub(join, text)


def json_text(data: Any, *, indent: int | None = 2, sort_keys: bool = True) -> str:
    """Strict JSON (NaN/inf as null, see ``json_data``) with a final newline; indented,
    except that arrays of plain values sit on one line."""
    text = json.dumps(json_data(data), indent=indent, sort_keys=sort_keys, allow_nan=False)
    return (_inline_flat_arrays(text) if indent is not None else text) + "\n"


def write_json(
    path: Path | str, data: Any, *, indent: int | None = 2, sort_keys: bool = True
) -> Path:
    """``json_text(data)`` written atomically; returns ``path``."""
    return write_text(path, json_text(data, indent=indent, sort_keys=sort_keys))


def finite_or_none(value: Any) -> Any:
    """A number as read back: NaN/inf, and the strings older files used for them, -> None.

    Anything else is returned unchanged (the reader validates it).
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and value.strip().lower() in _LEGACY_NON_FINITE:
        return None
    return value
