"""Launchers: where an ablation's or a search's processes start (``local``, ``slurm``),
the ledger of what was submitted, and ``--status``."""

from __future__ import annotations

from searchspace.errors import UsageError

EXTRA = "bisenet-lab[cluster]"  # the optional extra that brings submitit


def require_submitit(launcher: str) -> None:
    """One line naming the extra when submitit, which every launcher builds on, is absent."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError(f"--launcher {launcher} needs submitit: pip install '{EXTRA}'") from None
