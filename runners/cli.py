"""Command-line plumbing for runners (shared with analysis: see searchspace/cli.py)."""

from searchspace.cli import EXIT_USAGE, ArgumentParser, run_cli

__all__ = ["EXIT_USAGE", "ArgumentParser", "run_cli"]
