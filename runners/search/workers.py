"""Running a study to its target: one process, or a pool of worker processes.

Every worker opens the same study and takes a share of the trials. A worker that dies has
its trial failed and retried with the same parameters: found by the heartbeats of a
database storage, or by the trial locks of ``stale`` on a journal file.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runners.cpus import usable_cpus
from runners.env import device_name
from runners.search.config import SearchConfig
from runners.search.costs import precheck_constraints
from runners.search.objective import Objective, TrialFailed
from runners.search.stale import HOST, WORKER_ATTR, TrialLocks, uses_trial_locks
from runners.search.study import check_latency_device, finished_trials, open_study
from runners.store.store import LOCKS_DIRNAME
from runners.train.interrupt import StopRequested

# consecutive proposals that all break the constraints before a worker gives up
MAX_REJECTED_IN_A_ROW = 200


def optimize_share(study, cfg: SearchConfig, n_trials: int) -> None:
    """Run up to ``n_trials`` trials, stopping once the whole study reaches ``cfg.trials``.

    The shares split one machine's remaining trials exactly; the check before each trial
    (finished + running, across every worker of the study) stops machines that started
    with the same remaining count, so a multi-machine study overshoots by at most the
    number of workers that ask at the same moment.
    """
    import optuna

    objective = Objective(cfg)
    trial_locks = None  # a storage without heartbeats: trial locks tell the dead workers
    if uses_trial_locks(study):
        trial_locks = TrialLocks(Path(cfg.results_dir) / LOCKS_DIRNAME, cfg.grace_s)
    run = objective if trial_locks is None else trial_locks.guard(objective)
    current: list[Any] = []  # the trial being run, for a stop request to hand on

    def tracked(trial: Any) -> Any:
        current[:] = [trial]
        return run(trial)

    done = rejected_in_a_row = 0
    waited = 0.0
    while done < n_trials:
        if rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
            print(
                f"warning: stopping: the last {rejected_in_a_row} proposals all broke the "
                "constraints (loosen --max-gmacs / --max-latency-ms)",
                file=sys.stderr,
            )
            break
        if cfg.needs_latency:  # another worker may have timed the study's first latency
            check_latency_device(study, device_name(cfg.device))
        # a dead worker's RUNNING trial must not count as under way: fail it now, and a
        # copy is queued (the storage's retry callback, or the trial locks) for a next trial
        if trial_locks is not None:
            trial_locks.fail_dead_trials(study)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        under_way = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        running = len(under_way)
        # this process's own trials cannot die while it waits: only others' are waited for
        others = [t for t in under_way if not _mine(t)]
        if finished_trials(study) + running >= cfg.trials:
            # The rest are under way in other workers. One of them may have just died: its
            # trial looks alive until its last heartbeat (at most a quarter grace period
            # apart) is a grace period old. Leave only after that long, so a dead worker's
            # trial is failed above and retried here.
            if others and waited <= 1.25 * cfg.grace_s + 1:
                step = min(1.0, cfg.grace_s / 4)
                time.sleep(step)
                waited += step
                continue
            break
        waited = 0.0
        try:
            study.optimize(tracked, n_trials=1, catch=(TrialFailed,))
        except StopRequested:
            # the scheduler wants the node back: Optuna failed the trial (no fail_reason:
            # not a result), its run is checkpointed; a copy takes it up where it stopped
            if current:
                trial = current[0]
                study.enqueue_trial(dict(trial.params), user_attrs={"resumes_trial": trial.number})
            raise
        finally:  # after the study was told: a live worker's trial always has its lock
            if trial_locks is not None:
                trial_locks.release()
        if objective.last_rejected:
            rejected_in_a_row += 1
        else:
            rejected_in_a_row = 0
            done += 1


def _mine(trial: Any) -> bool:
    """Whether this process runs ``trial`` (the identity its trial lock recorded)."""
    info = trial.user_attrs.get(WORKER_ATTR) or {}
    return info.get("pid") == os.getpid() and info.get("host") == HOST


def _worker(cfg_dict: dict[str, Any], n_trials: int, threads: int, index: int) -> None:
    """One worker process: its own torch threads, its own share of the trials.

    Each worker's sampler gets its own seed (seed + index): with one seed, independent
    samplers would propose the same points and the workers would queue on each other.
    """
    import optuna
    import torch

    torch.set_num_threads(threads)
    cfg = SearchConfig(
        **{
            **cfg_dict,
            "latency_hw": tuple(cfg_dict["latency_hw"]),
            "objectives": tuple(cfg_dict["objectives"]),
            "seed": cfg_dict["seed"] + index,
        }
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(cfg, create=False)
    optimize_share(study, cfg, n_trials)


def slurm_worker(cfg_dict: dict[str, Any], n_trials: int, index: int) -> dict[str, Any]:
    """One search worker as a SLURM array task (``runners.search.launch``): a scheduler's
    signal stops the trial's training at its next step with a checkpoint, queues the trial
    again, and on submitit's time-limit warning (USR2) requeues this task."""
    import signal

    import torch

    from runners.launch.slurm import requeue_this_job, task_cpus
    from runners.train import interrupt

    interrupt.install((signal.SIGTERM, signal.SIGUSR2))
    torch.set_num_threads(task_cpus())
    print(
        f"search worker {index}: up to {n_trials} trials of study {cfg_dict['study']}", flush=True
    )
    try:
        _worker(cfg_dict, n_trials, torch.get_num_threads(), index)
    except StopRequested as stop:
        print(f"{stop}; the trial is queued again", flush=True)
        requeued = stop.signal_name == "SIGUSR2" and requeue_this_job()
        return {"stopped": stop.signal_name, "requeued": requeued}
    return {"stopped": None}


def split_trials(total: int, workers: int) -> list[int]:
    base, extra = divmod(total, workers)
    return [
        base + (1 if i < extra else 0) for i in range(workers) if base + (1 if i < extra else 0)
    ]


def run_search(cfg: SearchConfig, enqueue: Sequence[Mapping[str, Any]] = ()) -> Any:
    """Bring the study to ``cfg.trials`` finished trials; returns the study.

    ``enqueue``: checked points of the space to try before the sampler's own (a point
    the study already has is not queued twice)."""
    cfg.check()
    precheck_constraints(cfg)
    study = open_study(cfg)
    if cfg.needs_latency:  # one line here, not one traceback per worker process
        check_latency_device(study, device_name(cfg.device))
    for params in enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    remaining = cfg.trials - finished_trials(study)
    if remaining <= 0:
        return study
    cores = usable_cpus()
    threads = cfg.threads or max(1, cores // cfg.workers)
    shares = split_trials(remaining, cfg.workers)
    if len(shares) == 1:
        import torch

        torch.set_num_threads(threads)
        optimize_share(study, cfg, shares[0])
        return study
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(asdict(cfg), n, threads, i)) for i, n in enumerate(shares)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        print(
            f"warning: {len(bad)} worker(s) exited with {bad}; their trials are retried on restart",
            file=sys.stderr,
        )
    return open_study(cfg, create=False)
