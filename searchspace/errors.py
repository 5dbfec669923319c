"""The toolkit's error types.

They live in searchspace (the bottom of the dependency graph, standard library only) so
that every package can raise and catch them. Command-line entry points turn any
``ToolkitError`` into one line on stderr and exit status 2.
"""

from __future__ import annotations


class ToolkitError(Exception):
    """A user mistake: bad spec, bad flag, missing or corrupt data, incompatible file."""


class SpecError(ToolkitError, ValueError):
    """An invalid architecture spec or recipe; the message names the field and value."""


class DataError(ToolkitError):
    """A dataset that is missing, empty, inconsistent or corrupt."""


class CheckpointError(ToolkitError):
    """A checkpoint that does not match the spec or recipe it is loaded for."""


class StoreError(ToolkitError):
    """A results folder or record that cannot be used."""


class UsageError(ToolkitError):
    """A bad command-line value that argparse alone cannot catch."""


class OutputError(ToolkitError):
    """A file or folder the user named that cannot be written (read-only, full, special
    filesystem): raised by ``searchspace.outputs``, so it is told apart from a bug's OSError."""


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line (every error is reported as one), cut to ``limit``
    characters if given; its type name when it has no message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit] if limit else text
