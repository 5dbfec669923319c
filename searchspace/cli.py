"""Shared command-line plumbing: one-line errors and exit status 2 for user mistakes.

Standard library only, so that runners/ and analysis/ (which may not import runners)
share one implementation.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from searchspace.errors import ToolkitError, one_line

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line (no usage dump) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def run_cli(
    main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None
) -> None:
    """Run ``main`` and turn toolkit errors into one line on stderr and exit status 2."""
    module = getattr(main, "__module__", "") or ""
    if module == "__main__" or not module:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else sys.argv[0].rsplit("/", 1)[-1]
    prog = module.removesuffix(".__main__")
    try:
        code = main(argv)
    except ToolkitError as exc:
        sys.stderr.write(f"{prog}: error: {one_line(exc)}\n")
        raise SystemExit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    except BrokenPipeError:
        # the reader (say, `| head`) went away: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0) from None
    raise SystemExit(code or 0)
