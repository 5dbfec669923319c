"""``--launcher slurm``: a study's workers as one SLURM job array on the study's storage.

Each array task is a worker (``workers.slurm_worker``) that opens the same study and runs
trials until the study has its count (finished + running): a worker that dies or is
preempted leaves its trials to the others. The storage must be
reachable from every node: a PostgreSQL server, or a journal file on a shared filesystem
(SQLite is refused: ``config.check_storage_for_launcher``). The submitting command creates
the study, queues ``--enqueue`` points and stages the data once, then returns; running the
same command while the workers are queued or running submits nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from runners.launch import slurm
from runners.launch.ledger import launches_dir, new_launch_id
from runners.search.config import SearchConfig, check_storage_for_launcher
from runners.search.study import finished_trials, open_study
from runners.search.workers import slurm_worker


def job_name(cfg: SearchConfig) -> str:
    """All workers of a study share one job name (the study and a hash of its storage):
    squeue finds them from any machine."""
    digest = hashlib.sha1(cfg.storage_url.encode()).hexdigest()[:6]
    return f"search-{cfg.study}-{digest}"


def submit_workers(
    cfg: SearchConfig,
    options: slurm.SlurmOptions,
    enqueue: Sequence[Mapping[str, Any]] = (),
) -> int:
    """Submit ``cfg.workers`` workers as one array; print where they are and return."""
    from runners.data.source import parse_data_arg

    check_storage_for_launcher(cfg.storage, "slurm")
    slurm.check_available()
    slurm.check_partition_and_gpus(options)
    cfg = replace(cfg, device="cuda" if options.gpus_per_run else "cpu")
    name = job_name(cfg)
    alive = slurm.jobs_named(name)
    if alive:
        jobs = ", ".join(sorted({j.job.split("_")[0] for j in alive}))
        print(
            f"{len(alive)} worker(s) of study {cfg.study} still queued or running (job {jobs}): "
            f"nothing submitted (scancel {jobs} to stop them)"
        )
        return 0
    folder = launches_dir(cfg.results_dir) / new_launch_id("search")
    parse_data_arg(cfg.data).prepare()  # staged once, not raced by the workers
    study = open_study(cfg)
    for params in enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    remaining = cfg.trials - finished_trials(study)
    if remaining <= 0:
        print(f"study {cfg.study} has its {cfg.trials} finished trials: nothing submitted")
        return 0
    # every worker may run all that is left: each stops once the study has its trials
    # (finished + running), so a worker that dies leaves its share to the others
    calls = [(asdict(cfg), remaining, i) for i in range(cfg.workers)]
    jobs = slurm.submit_arrays(slurm_worker, calls, folder, options, name)
    arrays = sorted({job.split("_")[0] for job, _ in jobs}, key=int)
    print(
        f"submitted {len(jobs)} workers of study {cfg.study} ({remaining} trials to go) as "
        f"array job(s) {', '.join(arrays)} on {_storage_label(cfg)}"
    )
    print(f"  worker logs: {Path(jobs[0][1]).parent.parent}/<JOB>/<JOB>_0_log.out")
    print(f"  queue: squeue -n {name}    stop: scancel {' '.join(arrays)}")
    print(
        f"  results: once squeue -n {name} lists none, the same command without the launcher "
        "flags prints the front (and runs here any trial still missing)"
    )
    return 0


def _storage_label(cfg: SearchConfig) -> str:
    url = cfg.storage_url
    return url.split("@", 1)[-1] if url.startswith(("postgresql", "mysql")) else url
