"""Command-line plumbing for runners (shared with analysis: see searchspace/cli.py), and
the checks every command makes on its output paths before any work."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from searchspace.cli import EXIT_USAGE, ArgumentParser, run_cli
from searchspace.errors import UsageError
from searchspace.outputs import make_output_dir

__all__ = [
    "EXIT_USAGE",
    "ArgumentParser",
    "add_max_attempts_argument",
    "add_workers_argument",
    "check_input_hw",
    "check_output_dir",
    "check_output_path",
    "parse_input_hw",
    "resolve_workers",
    "run_cli",
]

MIN_INPUT_SIZE = 32  # the networks downsample by 32


def add_workers_argument(p: ArgumentParser) -> None:
    """``--workers``, as every training command takes it (resolved by resolve_workers)."""
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data-loader worker processes (default: 0 on CPU; on a GPU, the usable CPUs"
        " but one, at most 8)",
    )


def add_max_attempts_argument(p: ArgumentParser) -> None:
    """``--max-attempts``: the failure policy's cap (``runners.store.run_once``)."""
    from runners.store.run_once import DEFAULT_MAX_ATTEMPTS

    p.add_argument(
        "--max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        help="a run whose record failed this many times is left failed, not retried"
        f" (default {DEFAULT_MAX_ATTEMPTS})",
    )


def add_slurm_arguments(p: ArgumentParser) -> None:
    """The ``--launcher slurm`` flags, the same for ablate and search
    (``runners.launch.slurm.options_from_args`` checks them)."""
    g = p.add_argument_group("--launcher slurm")
    g.add_argument("--partition", default=None, help="SLURM partition (default: SLURM's)")
    g.add_argument("--gpus-per-run", type=int, default=None, help="GPUs per task (trains on cuda)")
    g.add_argument("--cpus-per-run", type=int, default=None, help="CPUs per task")
    g.add_argument(
        "--time", default=None,
        help="time limit per task (SLURM format, e.g. 8:00:00); a task that outlasts it "
        "checkpoints, requeues and goes on",
    )  # fmt: skip
    g.add_argument(
        "--slurm-arg", action="append", default=None, metavar="KEY=VALUE",
        help="any other sbatch option, as given (repeatable): qos=high, mem-per-cpu=4G",
    )  # fmt: skip
    g.add_argument(
        "--slurm-setup", action="append", default=None, metavar="CMD",
        help="a shell line run before each task (repeatable): module load ..., source venv",
    )  # fmt: skip


def resolve_workers(workers: int | None, device: str) -> int:
    """``--workers``: the default for the device when not given (``runners.cpus``), a
    warning (not an error) when more than the usable CPUs, an error when negative."""
    from runners.cpus import default_workers, workers_warning

    if workers is None:
        return default_workers(device)
    if workers < 0:
        raise UsageError(f"--workers {workers}: must be >= 0")
    warning = workers_warning(workers)
    if warning:
        print(warning, file=sys.stderr)
    return workers


def check_output_path(path: str | os.PathLike, option: str) -> Path:
    """Fail before any work if the file could not be written where asked (the write itself
    goes through ``searchspace.outputs``, which reports what this cannot foresee: a full
    disk, a special filesystem)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {path}: folder {path.parent} does not exist")
    if path.exists() and not path.is_file():  # a device or pipe: written in place
        if not os.access(path, os.W_OK):
            raise UsageError(f"{option} {path}: is not writable")
    elif not os.access(path.parent, os.W_OK):
        raise UsageError(f"{option} {path}: folder {path.parent} is not writable")
    return path


def check_output_dir(path: str | os.PathLike, option: str, create: bool = True) -> Path:
    """Fail now if the output folder could not be made, so a bad path fails before hours
    of work; make it unless ``create`` is False (check several first, then make them)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: is a file, not a folder")
    if not create:
        ancestor = path
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UsageError(f"{option} {path}: cannot create the folder ({ancestor} is a file)")
        if not os.access(ancestor, os.W_OK):
            raise UsageError(f"{option} {path}: folder {ancestor} is not writable")
        return path
    make_output_dir(path, f"{option} {path}")  # removed again if the command then fails
    if not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: folder is not writable")
    return path


def check_input_hw(input_hw: Sequence[int]) -> tuple[int, int]:
    """Two integers of at least 32 (the network downsamples by 32)."""
    if len(input_hw) != 2 or not all(isinstance(v, int) for v in input_hw):
        raise UsageError(f"--input-hw {' '.join(map(str, input_hw))}: expected two integers H W")
    h, w = input_hw
    if min(h, w) < MIN_INPUT_SIZE:
        raise UsageError(f"--input-hw {h} {w}: each size must be at least {MIN_INPUT_SIZE}")
    return (h, w)


def parse_input_hw(values: Sequence[str]) -> tuple[int, int]:
    """The command line's ``--input-hw H W`` (strings) checked like ``check_input_hw``;
    here, below every verb, so that profile and export share it without importing each
    other."""
    try:
        h, w = (int(v) for v in values)
    except ValueError:
        raise UsageError(f"--input-hw {' '.join(values)}: expected two integers H W") from None
    return check_input_hw((h, w))
