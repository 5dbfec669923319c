"""What a search is asked to do: one frozen, checked config that every worker rebuilds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runners.store.run_once import DEFAULT_MAX_ATTEMPTS, check_max_attempts
from searchspace.errors import UsageError
from searchspace.optuna_spaces import get_space

OBJECTIVES = {
    "miou": "maximize",
    "latency_ms": "minimize",
    "gmacs": "minimize",
    "params": "minimize",
}
SAMPLERS = ("tpe", "nsga2", "random", "grid")
PRUNERS = ("none", "median", "hyperband")
DEFAULT_RESULTS = Path("runs") / "results"
# a worker silent for GRACE_S seconds is taken as dead: its trial fails and is retried
HEARTBEAT_S = 15
GRACE_S = 60
JOURNAL_PREFIX = "journal:"
JOURNAL_SUFFIX = ".journal"


@dataclass(frozen=True)
class SearchConfig:
    space: str
    study: str
    trials: int
    objectives: tuple[str, ...] = ("miou", "latency_ms")
    sampler: str | None = None
    seed: int = 0
    max_gmacs: float | None = None
    max_latency_ms: float | None = None
    storage: str | None = None
    workers: int = 1
    recipe: str = "smoke"
    data: str = "synth"
    results_dir: str = str(DEFAULT_RESULTS)
    device: str = "cpu"
    pruner: str = "none"
    train_seed: int = 0
    latency_hw: tuple[int, int] = (512, 1024)
    latency_repeats: int = 5
    threads: int | None = None  # torch threads per worker (default: cores // workers)
    progress: bool = False
    grace_s: int = GRACE_S  # a worker silent this long is dead: its trial is failed, retried
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # a run that failed this often is not retrained
    # --pretrained [BACKBONE=]PATH values and --backbone-lr-mult (runners/pretrained.py)
    pretrained: tuple[str, ...] = ()
    backbone_lr_mult: float | None = None

    def check(self) -> None:
        get_space(self.space)
        if not self.study or any(c in self.study for c in "/\\\n"):
            raise UsageError(f"--study {self.study!r}: give a plain name")
        if self.trials < 1:
            raise UsageError(f"--trials {self.trials}: must be >= 1")
        if not self.objectives:
            raise UsageError("--objectives: give at least one of " + ", ".join(OBJECTIVES))
        for obj in self.objectives:
            if obj not in OBJECTIVES:
                raise UsageError(f"unknown objective {obj!r} (known: {', '.join(OBJECTIVES)})")
        if len(set(self.objectives)) != len(self.objectives):
            raise UsageError(f"--objectives {','.join(self.objectives)}: listed twice")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise UsageError(f"unknown sampler {self.sampler!r} (known: {', '.join(SAMPLERS)})")
        if self.sampler == "grid" and get_space(self.space).conditional:
            raise UsageError(
                f"--sampler grid: space {self.space!r} is conditional (a knob is asked only "
                "where it applies), which Optuna's grid sampler cannot walk; use tpe or random"
            )
        if self.pruner not in PRUNERS:
            raise UsageError(f"unknown pruner {self.pruner!r} (known: {', '.join(PRUNERS)})")
        if self.pruner != "none" and len(self.objectives) != 1:
            raise UsageError(
                "--pruner needs a single objective (e.g. --objectives miou with --max-gmacs)"
            )
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers}: must be >= 1")
        check_max_attempts(self.max_attempts)
        if self.grace_s < 2:
            raise UsageError(f"--grace-s {self.grace_s}: must be >= 2 (seconds)")
        for name, value in (
            ("--max-gmacs", self.max_gmacs),
            ("--max-latency-ms", self.max_latency_ms),
        ):
            if value is not None and not value > 0:
                raise UsageError(f"{name} {value}: must be > 0")
        if self.device != "cpu":
            from runners.device import resolve_device  # torch only when a GPU is asked for

            resolve_device(self.device)

    @property
    def storage_url(self) -> str:
        """The storage as every worker opens it; a journal file by its absolute path, so
        worker processes started elsewhere (another folder, a scheduler) find the same file."""
        if self.storage:
            journal = journal_path(self.storage)
            if journal:  # an empty path is left for make_storage to refuse
                return JOURNAL_PREFIX + str(Path(journal).expanduser().resolve())
            return self.storage
        return f"sqlite:///{Path(self.results_dir).resolve() / 'optuna.db'}"

    @property
    def needs_latency(self) -> bool:
        return "latency_ms" in self.objectives or self.max_latency_ms is not None

    @property
    def needs_training(self) -> bool:
        return "miou" in self.objectives


def journal_path(storage: str) -> str | None:
    """The file of a journal storage as given (``journal:PATH``, or a bare ``PATH.journal``;
    ``""`` for ``journal:`` alone), or None for any other storage."""
    if storage.startswith(JOURNAL_PREFIX):
        return storage.removeprefix(JOURNAL_PREFIX)
    if storage.endswith(JOURNAL_SUFFIX) and "://" not in storage:
        return storage
    return None


def storage_kind(storage: str | None) -> str:
    """``sqlite`` (also the default, None), ``journal``, ``server`` (PostgreSQL, MySQL) or
    ``unknown`` (``make_storage`` refuses it)."""
    if not storage or storage.startswith("sqlite:"):
        return "sqlite"
    if journal_path(storage) is not None:
        return "journal"
    if storage.startswith(("postgresql", "mysql")):
        return "server"
    return "unknown"


def check_storage_for_launcher(storage: str | None, launcher: str | None) -> None:
    """Refuse SQLite for workers spread over a cluster's nodes (``launcher == "slurm"``).

    SQLite locks its file with fcntl, which a shared (network) filesystem breaks or
    serialises: many nodes writing one study file corrupt it or deadlock. One machine
    (launcher None or ``local``) keeps SQLite, its default.
    """
    if launcher != "slurm" or storage_kind(storage) != "sqlite":
        return
    what = f"--storage {storage}" if storage else "the default storage (SQLite in --results-dir)"
    raise UsageError(
        f"--launcher slurm cannot use {what}: SQLite's file locking over a shared network "
        "filesystem, written from many nodes, corrupts or deadlocks the study; use --storage "
        "postgresql://USER@HOST/DB, or --storage journal:PATH with PATH on a shared filesystem"
    )
