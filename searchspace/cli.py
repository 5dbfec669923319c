"""Shared command-line plumbing: the one place that makes a command's user error end in
one line on stderr, exit status 2, and nothing written.

``run_cli`` runs every ``python -m runners.X`` and ``analysis.X`` command and guarantees:

- a toolkit error (``ToolkitError``, or a bad flag through ``ArgumentParser``) prints
  ``PROG: error: MESSAGE`` as the only line on stderr and exits 2, without a traceback;
- outputs the command made (``searchspace.outputs``: files, folders) are removed again,
  so a refused command leaves nothing behind, and a write that fails (a full disk, a
  read-only folder) is such an error, naming the path;
- notes and warnings written to stderr before the error (a precision note, torch's
  warning about a refused pickle) are dropped: stderr is held while the command runs and
  shown when it ends in any other way, or from the point its real work begins
  (``work_begins``: a training's first step), so a long run's notes are seen while it
  runs. A progress bar's frames (written with ``\\r``) pass at once, so a long check
  shows that it moves.

Standard library only, so that runners/ and analysis/ (which may not import runners)
share one implementation.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from searchspace.errors import ToolkitError, one_line
from searchspace.outputs import collecting

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line (no usage dump) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _error_line(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


class _HeldStderr:
    """``sys.stderr`` while a command runs: text is held until ``release`` (the command
    succeeded, or its real work began) or dropped by ``fail`` (a user error, whose one
    line is then all that stderr shows). Once released it passes everything through."""

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self._held: list[str] = []
        self._live = False
        self._open_line = False  # a progress frame is on screen, with no newline after it
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            if self._live or "\r" in text:
                self.target.write(text)
                if not self._live:
                    self.target.flush()
                    self._open_line = not text.endswith(("\n", "\r"))
            else:
                self._held.append(text)
        return len(text)

    def writelines(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._live:
            self.target.flush()

    def release(self) -> None:
        """Show what was held, and pass everything through from now on."""
        self._end(None)

    def fail(self, line: str) -> None:
        """Drop what was held and write ``line`` alone."""
        self._end(line)

    def _end(self, line: str | None) -> None:
        if self._live and line is None:
            return  # released already (``work_begins`` is called at every training step)
        with self._lock:
            text = "".join(self._held) if line is None else line
            self._held.clear()
            if text:
                self.target.write(("\n" if self._open_line else "") + text)
            self._open_line = False
            self._live = True
            self.target.flush()

    def _live_in_child(self) -> None:
        """A forked child's copy: its own output is its own, passed through at once."""
        self._lock = threading.Lock()
        self._held.clear()
        self._live = True

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, buffer ...
        if name == "target":  # not set yet (a copy made without __init__)
            raise AttributeError(name)
        return getattr(self.target, name)


_held: list[_HeldStderr] = []  # the commands running in this process, innermost last


def _live_in_children() -> None:
    for held in _held:
        held._live_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_live_in_children)


def _error_line(line: str) -> None:
    """Write a command's error line as the only one: held notes are dropped."""
    stream = sys.stderr
    if isinstance(stream, _HeldStderr):
        stream.fail(line)
    else:
        stream.write(line)


def work_begins() -> None:
    """Show the notes held so far, and later ones at once: a command calls it where its
    checks are done and its long work starts, so that a note about that work (a
    precision fallback, a worker gone) is seen while it runs. A no-op outside ``run_cli``."""
    stream = sys.stderr
    if isinstance(stream, _HeldStderr):
        stream.release()


def run_cli(
    main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None
) -> None:
    """Run ``main`` under the guarantees of the module docstring; exit with its status."""
    module = getattr(main, "__module__", "") or ""
    if module == "__main__" or not module:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else sys.argv[0].rsplit("/", 1)[-1]
    prog = module.removesuffix(".__main__")
    held = _HeldStderr(sys.stderr)
    sys.stderr = held  # type: ignore[assignment]
    _held.append(held)
    try:
        with collecting() as made:
            try:
                code = main(argv)
            except ToolkitError as exc:
                made.discard()
                held.fail(f"{prog}: error: {one_line(exc)}\n")
                raise SystemExit(EXIT_USAGE) from None
            except SystemExit as exc:
                if exc.code == EXIT_USAGE:  # a bad flag: ArgumentParser wrote its line
                    made.discard()
                held.release()
                raise
            except KeyboardInterrupt:
                held.release()
                held.target.write("interrupted\n")
                raise SystemExit(130) from None
            except BrokenPipeError:
                # the reader (say, `| head`) went away: not an error of ours
                held.release()
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                raise SystemExit(0) from None
            except BaseException:
                held.release()  # a bug: all it said, then its traceback
                raise
            held.release()
    finally:
        _held.remove(held)
        if sys.stderr is held:
            sys.stderr = held.target
    raise SystemExit(code or 0)
