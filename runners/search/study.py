"""The study: its storage (SQLite, a database server with worker heartbeats, or a journal
file on a shared filesystem), sampler, pruner, the device its latencies are timed on, and
the counts that decide when it is done."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runners.search.config import (
    GRACE_S,
    HEARTBEAT_S,
    JOURNAL_PREFIX,
    OBJECTIVES,
    SearchConfig,
    journal_path,
)
from searchspace.errors import UsageError, one_line
from searchspace.optuna_spaces import SearchSpace, get_space

# study user attr: the device (GPU or CPU model) every latency of the study was timed on
LATENCY_DEVICE_ATTR = "latency_device"


def make_storage(url: str, heartbeat: bool = True, grace_s: int = GRACE_S):
    """An RDB storage with heartbeats, so a dead worker's trial is failed and retried; or
    a journal file (``journal:PATH``), whose dead workers ``runners.search.stale`` finds.

    Each worker beats every ``min(15, grace_s // 4)`` s; a RUNNING trial whose worker has
    been silent for ``grace_s`` is failed and re-queued with the same parameters (twice at
    most).
    """
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    journal = journal_path(url)
    if journal is not None:
        return journal_storage(journal)
    kwargs: dict[str, Any] = {}
    if heartbeat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=2)
        kwargs = dict(
            heartbeat_interval=max(1, min(HEARTBEAT_S, grace_s // 4)),
            grace_period=grace_s,
            heartbeat_stale_trial_callback=retry,
        )
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    elif url.startswith(("postgresql", "mysql")):
        kwargs["engine_kwargs"] = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    else:
        raise UsageError(
            f"--storage {url!r}: expected sqlite:///PATH, postgresql://..., mysql://... "
            "or journal:PATH"
        )
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, **kwargs)
    except Exception as exc:  # sqlalchemy's errors are many; all mean "cannot use this URL"
        reason = one_line(exc, 300)
        raise UsageError(f"--storage {_redact(url)}: cannot connect ({reason})") from None


def journal_storage(path_text: str):
    """Optuna's journal file storage: an append-only file on a shared filesystem, locked by
    ``link``/``rename`` (safe over NFS), for workers on many nodes without a server."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    where = f"--storage {JOURNAL_PREFIX}{path_text}"
    if not path_text.strip():
        raise UsageError(f"{where}: give the journal file's path (journal:PATH)")
    path = Path(path_text).expanduser()
    if path.is_dir():
        raise UsageError(f"{where}: is a folder; give a file, e.g. {path / 'study.journal'}")
    if path.exists() and not path.is_file():
        raise UsageError(f"{where}: not a regular file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or one_line(exc)
        raise UsageError(f"{where}: cannot create its folder {path.parent} ({reason})") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{where}: folder {path.parent} is not writable (the journal's lock is made there)"
        )
    _check_journal_file(path, where)
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return JournalStorage(JournalFileBackend(str(path)))
    except (OSError, ValueError) as exc:  # unwritable file, a log line that is not JSON
        raise UsageError(f"{where}: cannot be used as a journal ({one_line(exc, 300)})") from None


def _check_journal_file(path: Path, where: str) -> None:
    """Refuse an existing file that is not an Optuna journal (Optuna would append to it)."""
    try:
        with path.open("rb") as f:
            first = f.readline(1 << 20)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"{where}: cannot be read ({exc.strerror or one_line(exc)})") from None
    if not first:
        return
    try:
        entry = json.loads(first)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or "op_code" not in entry:
        raise UsageError(f"{where}: not an Optuna journal (its first line is no journal entry)")


def check_latency_device(study, kind: str) -> None:
    """Refuse a worker whose latencies would not compare with the study's: each latency
    is a number of its device, and a study's front mixes them silently."""
    stored = study.user_attrs.get(LATENCY_DEVICE_ATTR)
    if stored is None or stored == kind:
        return
    raise UsageError(
        f"study {study.study_name!r} timed its latencies on {stored!r}, this worker would "
        f"time them on {kind!r}, and the two do not compare: run every worker on one node "
        "type (e.g. --slurm-arg constraint=...), or drop latency_ms and --max-latency-ms "
        "(gmacs is the same on any device)"
    )


def claim_latency_device(study, kind: str) -> None:
    """Record ``kind`` as the study's latency device at its first latency, then check it
    (two kinds claiming at once: the last write stays and the other worker is refused)."""
    if LATENCY_DEVICE_ATTR not in study.user_attrs:
        study.set_user_attr(LATENCY_DEVICE_ATTR, kind)
    check_latency_device(study, kind)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def make_sampler(cfg: SearchConfig, space: SearchSpace):
    import optuna

    name = cfg.sampler or "tpe"  # Optuna's default for single and multi-objective studies
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=cfg.seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=cfg.seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    return optuna.samplers.GridSampler(
        {k: list(v) for k, v in space.choices.items()}, seed=cfg.seed
    )


def make_pruner(cfg: SearchConfig):
    import optuna

    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def open_study(cfg: SearchConfig, create: bool = True):
    """Create or load the study; refuse one that exists with other objectives or space."""
    import optuna

    storage = make_storage(cfg.storage_url, grace_s=cfg.grace_s)
    space = get_space(cfg.space)
    directions = [OBJECTIVES[o] for o in cfg.objectives]
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    if cfg.study in names:
        study = optuna.load_study(
            study_name=cfg.study, storage=storage, sampler=make_sampler(cfg, space),
            pruner=make_pruner(cfg),
        )  # fmt: skip
        stored = study.user_attrs
        if tuple(stored.get("objectives", ())) != cfg.objectives:
            raise UsageError(
                f"study {cfg.study!r} exists with objectives "
                f"{','.join(stored.get('objectives', ())) or '?'}, not {','.join(cfg.objectives)}"
            )
        if stored.get("space") != cfg.space:
            raise UsageError(f"study {cfg.study!r} exists for space {stored.get('space')!r}")
        if stored.get("recipe") != cfg.recipe or stored.get("data") != cfg.data:
            raise UsageError(
                f"study {cfg.study!r} exists with recipe {stored.get('recipe')!r} and data "
                f"{stored.get('data')!r}; use another --study name"
            )
        return study
    if not create:
        raise UsageError(f"no study {cfg.study!r} in {_redact(cfg.storage_url)}")
    study = optuna.create_study(
        study_name=cfg.study, storage=storage, directions=directions,
        sampler=make_sampler(cfg, space), pruner=make_pruner(cfg),
    )  # fmt: skip
    for key, value in (
        ("objectives", list(cfg.objectives)),
        ("space", cfg.space),
        ("recipe", cfg.recipe),
        ("data", cfg.data),
    ):
        study.set_user_attr(key, value)
    return study


def finished_trials(study) -> int:
    """Trials that count towards --trials: complete, pruned, or failed by the objective.

    A spec rejected by --max-gmacs / --max-latency-ms before training does not count:
    ``--trials 20`` asks for 20 evaluated architectures, however many proposals break the
    constraints on the way (the sampler sees them as pruned and learns to avoid them).
    """
    import optuna

    S = optuna.trial.TrialState
    n = 0
    for t in study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED, S.FAIL)):
        if t.state == S.FAIL and "fail_reason" not in t.user_attrs:
            continue  # a dead worker's trial: it is retried
        if t.state == S.PRUNED and "rejected" in t.user_attrs:
            continue
        n += 1
    return n


def rejected_trials(study) -> int:
    import optuna

    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    return sum("rejected" in t.user_attrs for t in pruned)
