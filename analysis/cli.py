"""Command-line plumbing for analysis (shared with runners: see searchspace/cli.py)."""

from searchspace.cli import EXIT_USAGE, ArgumentParser, run_cli

__all__ = ["EXIT_USAGE", "ArgumentParser", "run_cli"]
