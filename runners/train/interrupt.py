"""A request to stop training, from a signal: checkpoint at the next step, then leave.

A scheduler warns before it preempts or hits a time limit (SLURM: SIGTERM, then SIGKILL
after KillWait; submitit asks for SIGUSR2 ahead of the limit). A signal handler may run
between any two bytecodes, in the middle of a checkpoint write or a lock update, so the
handlers here only note the signal. The training loop looks after every step, saves its
checkpoint and raises ``StopRequested``; the run-once path then releases the run's lock
without a record (no attempt counted), and the task decides whether to requeue itself.
Signals are process-wide, so the request is too. Torch-free: launchers read it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from types import FrameType

_requested: str | None = None

# Besides every ``checkpoint_every`` iterations, training checkpoints at least this often:
# what a SIGKILL (a dead node, a scheduler out of patience) can lose, whatever an
# iteration costs.
CHECKPOINT_EVERY_S = 600.0


class StopRequested(Exception):
    """Training stopped on request with its checkpoint saved; not a failure of the run."""

    def __init__(self, signal_name: str, iteration: int) -> None:
        super().__init__(f"stopped by {signal_name} at iteration {iteration}, checkpoint saved")
        self.signal_name = signal_name
        self.iteration = iteration


def _note(signum: int, _frame: FrameType | None) -> None:
    global _requested
    _requested = signal.Signals(signum).name


def install(signals: Iterable[signal.Signals]) -> None:
    """From now on, each of ``signals`` asks training to stop at its next step."""
    for sig in signals:
        signal.signal(sig, _note)


def request(name: str) -> None:
    """Ask training to stop, as a signal would (tests, and callers that are not signals)."""
    global _requested
    _requested = name


def requested() -> str | None:
    """The name of the signal that asked to stop, or None."""
    return _requested


def clear() -> None:
    global _requested
    _requested = None
