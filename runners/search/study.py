"""The study: its storage (SQLite or a database server, with worker heartbeats), sampler,
pruner, and the counts that decide when it is done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runners.search.config import GRACE_S, HEARTBEAT_S, OBJECTIVES, SearchConfig
from searchspace.errors import UsageError, one_line
from searchspace.optuna_spaces import SearchSpace, get_space


def make_storage(url: str, heartbeat: bool = True, grace_s: int = GRACE_S):
    """An RDB storage with heartbeats, so a dead worker's trial is failed and retried.

    Each worker beats every ``min(15, grace_s // 4)`` s; a RUNNING trial whose worker has
    been silent for ``grace_s`` is failed and re-queued once with the same parameters.
    """
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

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
            f"--storage {url!r}: expected sqlite:///PATH, postgresql://... or mysql://..."
        )
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, **kwargs)
    except Exception as exc:  # sqlalchemy's errors are many; all mean "cannot use this URL"
        reason = one_line(exc, 300)
        raise UsageError(f"--storage {_redact(url)}: cannot connect ({reason})") from None


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
