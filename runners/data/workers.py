"""Toolkit errors raised inside DataLoader worker processes reach the caller unchanged.

torch re-raises a worker's exception in the main process as ``type(exc)(report)``, where
``report`` is its "Caught DataError in DataLoader worker process 0. Original Traceback ..."
text: the right type, but a message of twenty lines where the user should read one. With
``num_workers=0`` the same error arrives as raised.

``toolkit_errors_leave_workers()`` wraps the code that reads a sample. Outside a worker it
does nothing; inside one it re-raises a ``ToolkitError`` as ``WorkerToolkitError`` whose
message carries the original's type and arguments. When torch builds the main-process
exception from its report, ``WorkerToolkitError.__new__`` finds them there and returns the
original error instead: same type, same message as with 0 workers. Other exceptions (bugs)
keep torch's report, traceback included.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from searchspace.errors import ToolkitError

_MARK = "[bisenet-lab error from a DataLoader worker] "


class WorkerToolkitError(ToolkitError):
    """A ``ToolkitError`` on its way out of a DataLoader worker (see the module docstring).

    Built from a text that holds a carried error (but does not start with the marker, i.e.
    torch's report), it returns that error. Otherwise it is an ordinary ToolkitError, so a
    report it cannot read (a future torch that formats it differently) still reaches the
    command-line entry points as a toolkit error.
    """

    def __new__(cls, *args: Any) -> Any:
        if len(args) == 1 and isinstance(args[0], str) and not args[0].startswith(_MARK):
            original = _decode(args[0])
            if original is not None:
                return original
        return super().__new__(cls, *args)


def carry(exc: ToolkitError) -> WorkerToolkitError:
    """The exception to raise in a worker in place of ``exc``."""
    args = list(exc.args) if all(isinstance(a, str) for a in exc.args) else [str(exc)]
    kind = type(exc)
    payload = json.dumps({"type": f"{kind.__module__}:{kind.__qualname__}", "args": args})
    return WorkerToolkitError(_MARK + payload)


def _decode(text: str) -> BaseException | None:
    at = text.rfind(_MARK)
    if at < 0:
        return None
    try:
        payload, _ = json.JSONDecoder().raw_decode(text, at + len(_MARK))
        module, _, qualname = payload["type"].partition(":")
        kind: Any = importlib.import_module(module)
        for part in qualname.split("."):
            kind = getattr(kind, part)
        args = payload["args"]
        if (
            not isinstance(kind, type)
            or not issubclass(kind, ToolkitError)
            or issubclass(kind, WorkerToolkitError)
            or not all(isinstance(a, str) for a in args)
        ):
            return None
        return kind(*args)
    except Exception:  # anything unexpected: keep torch's report
        return None


def in_worker() -> bool:
    """True inside a DataLoader worker process."""
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None


@contextmanager
def toolkit_errors_leave_workers() -> Iterator[None]:
    """Wrap sample reading: a ToolkitError leaves a DataLoader worker as it was raised."""
    try:
        yield
    except WorkerToolkitError:
        raise
    except ToolkitError as exc:
        if not in_worker():
            raise
        raise carry(exc) from None
