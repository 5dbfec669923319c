"""Command-line plumbing for runners (shared with analysis: see searchspace/cli.py), and
the checks every command makes on its output paths before any work."""

from __future__ import annotations

import os
from pathlib import Path

from searchspace.cli import EXIT_USAGE, ArgumentParser, run_cli
from searchspace.errors import UsageError, one_line

__all__ = ["EXIT_USAGE", "ArgumentParser", "check_output_dir", "check_output_path", "run_cli"]


def check_output_path(path: str | os.PathLike, option: str) -> Path:
    """Fail before any work if the file could not be written where asked."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {path}: folder {path.parent} does not exist")
    return path


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """Make the output folder now, so that a bad path fails before hours of work."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create the folder ({one_line(exc)})") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: folder is not writable")
    return path
