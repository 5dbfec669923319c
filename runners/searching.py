"""Optuna architecture search over a search space, from 1 process to many machines.

Each trial samples a spec (searchspace.optuna_spaces), checks the hard constraints
before any training (MACs on the meta device, then latency), and trains through the
result store, so a spec already trained with the same recipe, data and seed is reused.
The study lives in SQLite in the results folder by default, or on a database server
(``--storage postgresql://...``) shared by workers on many machines.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from searchspace.errors import SpecError, ToolkitError, UsageError, one_line
from searchspace.optuna_spaces import SearchSpace, get_space

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


class TrialFailed(Exception):
    """A trial that could not produce values (NaN loss, OOM, bad spec): recorded, study goes on."""


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
        if self.pruner not in PRUNERS:
            raise UsageError(f"unknown pruner {self.pruner!r} (known: {', '.join(PRUNERS)})")
        if self.pruner != "none" and len(self.objectives) != 1:
            raise UsageError(
                "--pruner needs a single objective (e.g. --objectives miou with --max-gmacs)"
            )
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers}: must be >= 1")
        if self.grace_s < 2:
            raise UsageError(f"--grace-s {self.grace_s}: must be >= 2 (seconds)")
        for name, value in (
            ("--max-gmacs", self.max_gmacs),
            ("--max-latency-ms", self.max_latency_ms),
        ):
            if value is not None and not value > 0:
                raise UsageError(f"{name} {value}: must be > 0")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise UsageError("--device cuda: no CUDA device is available here")

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{Path(self.results_dir).resolve() / 'optuna.db'}"

    @property
    def needs_latency(self) -> bool:
        return "latency_ms" in self.objectives or self.max_latency_ms is not None

    @property
    def needs_training(self) -> bool:
        return "miou" in self.objectives


# --- storage and study ---------------------------------------------------------------


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


# consecutive proposals that all break the constraints before a worker gives up
MAX_REJECTED_IN_A_ROW = 200


def optimize_share(study, cfg: SearchConfig, n_trials: int) -> None:
    """Run up to ``n_trials`` trials, stopping once the whole study reaches ``cfg.trials``.

    The shares split one machine's remaining trials exactly; the check before each trial
    (finished + running, across every worker of the study) stops machines that started
    with the same remaining count, so a multi-machine study overshoots by at most the
    number of workers that ask at the same moment.
    """
    import warnings

    import optuna

    objective = Objective(cfg)
    done = rejected_in_a_row = 0
    while done < n_trials:
        if rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
            print(
                f"warning: stopping: the last {rejected_in_a_row} proposals all broke the "
                "constraints (loosen --max-gmacs / --max-latency-ms)",
                file=sys.stderr,
            )
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # a dead worker's RUNNING trial must not count as under way: fail it now, and
            # the storage's retry callback queues a copy that the next trial picks up
            optuna.storages.fail_stale_trials(study)
        running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
        if finished_trials(study) + running >= cfg.trials:
            break
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        if objective.last_rejected:
            rejected_in_a_row += 1
        else:
            rejected_in_a_row = 0
            done += 1


# --- the objective ---------------------------------------------------------------------


@dataclass
class Objective:
    """Sample -> constraints -> (reuse or train) -> values. Built once per worker."""

    cfg: SearchConfig
    _ctx: dict[str, Any] = field(default_factory=dict)
    last_rejected: bool = False  # did the last call reject its spec on a constraint?
    _measured: dict[str, dict[str, Any]] = field(default_factory=dict)  # spec_id -> profile

    def _setup(self) -> dict[str, Any]:
        if not self._ctx:
            from runners.data.datasets import parse_data_arg
            from runners.store import Store
            from searchspace.recipes import parse_recipe

            recipe = parse_recipe(self.cfg.recipe)
            if self.cfg.pruner != "none" and recipe.eval_every == 0:
                recipe = recipe.replace(eval_every=max(1, _budget_iterations(recipe) // 4))
            self._ctx = {
                "space": get_space(self.cfg.space),
                "recipe": recipe,
                "data": parse_data_arg(self.cfg.data),
                "store": Store(self.cfg.results_dir),
            }
        return self._ctx

    def __call__(self, trial) -> tuple[float, ...] | float:
        """The trial's values; a failure of this trial alone becomes ``TrialFailed``.

        A bad spec (SpecError), a NaN loss or out-of-memory (a failed run record), or an
        error while profiling is recorded as the trial's ``fail_reason`` and the study goes
        on; a mistake of the whole invocation (UsageError, e.g. a missing dataset) stops it.
        """
        self.last_rejected = False
        try:
            return self._values(trial)
        except (UsageError, TrialFailed):
            raise
        except (ToolkitError, RuntimeError) as exc:
            reason = f"{type(exc).__name__}: {one_line(exc, 300)}"
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailed(reason) from exc

    def _values(self, trial) -> tuple[float, ...] | float:
        import optuna

        from analysis.records import RecordKey
        from runners.ablation import PlannedRun, execute_run
        from runners.complexity import build_on_meta, count_macs, count_params

        ctx = self._setup()
        spec = ctx["space"].sample(trial)
        if spec.num_classes != ctx["data"].num_classes:
            spec = spec.replace(num_classes=ctx["data"].num_classes)
        trial.set_user_attr("spec", spec.to_string())
        trial.set_user_attr("spec_id", spec.spec_id)
        meta = build_on_meta(spec)
        macs = count_macs(meta, self.cfg.latency_hw)
        values = {"gmacs": macs / 1e9, "params": float(count_params(meta))}
        trial.set_user_attr("gmacs", values["gmacs"])
        if self.cfg.max_gmacs is not None and values["gmacs"] > self.cfg.max_gmacs:
            trial.set_user_attr("rejected", f"{values['gmacs']:.2f} GMACs > {self.cfg.max_gmacs}")
            self.last_rejected = True
            raise optuna.TrialPruned(trial.user_attrs["rejected"])
        profiled = None
        if self.cfg.needs_latency:
            profiled = self._stored_profile(ctx, spec) or self._measure(spec)
            values["latency_ms"] = profiled["latency_ms"]["median"]
            trial.set_user_attr("latency_ms", values["latency_ms"])
            if (
                self.cfg.max_latency_ms is not None
                and values["latency_ms"] > self.cfg.max_latency_ms
            ):
                reason = f"{values['latency_ms']:.1f} ms > {self.cfg.max_latency_ms} ms"
                trial.set_user_attr("rejected", reason)
                self.last_rejected = True
                raise optuna.TrialPruned(reason)
        if self.cfg.needs_training:
            values["miou"] = self._train(
                trial, spec, ctx, profiled, RecordKey, PlannedRun, execute_run
            )
        return (
            tuple(values[o] for o in self.cfg.objectives)
            if len(self.cfg.objectives) > 1
            else values[self.cfg.objectives[0]]
        )

    def _measure(self, spec) -> dict[str, Any]:
        """Profile once per spec and process (a rejected spec may be proposed again)."""
        from runners.ablation import ProfileSettings, profile_metrics, profile_run

        if spec.spec_id not in self._measured:
            settings = ProfileSettings(repeats=self.cfg.latency_repeats, threads=self.cfg.threads)
            self._measured[spec.spec_id] = profile_metrics(
                profile_run(spec, self.cfg.latency_hw, settings, self.cfg.device)
            )
        return self._measured[spec.spec_id]

    def _stored_profile(self, ctx: dict[str, Any], spec) -> dict[str, Any] | None:
        """A stored run's profile, when its latency was taken at this input and device.

        Reusing it keeps one spec's latency identical across trials and studies (and
        saves the measurement); a record from another device or input size is not used.
        """
        from analysis.records import RecordKey

        key = RecordKey.of(spec, ctx["recipe"], ctx["data"].data_id, self.cfg.train_seed)
        record = self._finished(ctx["store"], key)
        metrics = (record or {}).get("metrics") or {}
        lat = metrics.get("latency_ms") or {}
        if (
            lat.get("median") is None
            or list(lat.get("input_hw") or []) != list(self.cfg.latency_hw)
            or lat.get("device") != self.cfg.device
        ):
            return None
        keys = ("params", "params_total", "macs", "macs_input_hw", "latency_ms")
        return {k: metrics.get(k) for k in keys}

    def _train(self, trial, spec, ctx, profiled, RecordKey, PlannedRun, execute_run) -> float:
        import optuna

        from runners.ablation import ProfileSettings

        store = ctx["store"]
        recipe, data = ctx["recipe"], ctx["data"]
        key = RecordKey.of(spec, recipe, data.data_id, self.cfg.train_seed)
        trial.set_user_attr("record", key.stem)
        record = self._finished(store, key)
        if record is None:
            data.prepare()
            run = PlannedRun(key, spec, recipe, self.cfg.train_seed)

            last = _budget_iterations(recipe) if recipe.budget_kind != "seconds" else None

            def on_eval(iteration: int, miou: float) -> None:
                if self.cfg.pruner == "none":
                    return
                trial.report(miou, iteration)
                if last is not None and iteration >= last:
                    return  # the run is done: keep (and store) it rather than prune it
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at iteration {iteration} (mIoU {miou:.3f})")

            with store.claim(key) as claim:
                if not claim:
                    record = self._wait_for(store, key)
                else:
                    record = self._finished(store, key)
                    if record is None:
                        settings = ProfileSettings(
                            latency=profiled is not None, repeats=self.cfg.latency_repeats,
                            threads=self.cfg.threads, input_hw=self.cfg.latency_hw,
                        )  # fmt: skip
                        record = execute_run(
                            run, data, store.root, self.cfg.device, settings,
                            progress=self.cfg.progress, keep_checkpoints=False,
                            on_eval=on_eval, profiled=profiled,
                        )  # fmt: skip
                        if not claim.lost:
                            store.put(record, force=True)
        else:
            trial.set_user_attr("cached", True)
        if record.get("status") != "ok":
            trial.set_user_attr("fail_reason", record.get("reason") or "failed")
            raise TrialFailed(record.get("reason") or "failed")
        trial.set_user_attr("train_s", (record.get("timings") or {}).get("train_s"))
        return float(record["metrics"]["miou"])

    @staticmethod
    def _finished(store, key) -> dict | None:
        """The stored record (ok or failed: a failure is a result too), or None."""
        try:
            return store.get(key)
        except ToolkitError:
            return None  # corrupt: reported by the store, treated as not run

    @staticmethod
    def _wait_for(store, key, timeout_s: float = 7200) -> dict:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            record = Objective._finished(store, key)
            if record is not None:
                return record
            time.sleep(2)
        raise TrialFailed(f"timed out waiting for {key.stem} run by another process")


def _budget_iterations(recipe) -> int:
    if recipe.budget_kind == "iterations":
        return recipe.budget
    if recipe.budget_kind == "images":
        return max(1, recipe.budget // recipe.batch_size)
    return 100


# --- running ---------------------------------------------------------------------------


def precheck_constraints(cfg: SearchConfig) -> None:
    """Refuse constraints no spec of the space can meet, before any study is touched."""
    if cfg.max_gmacs is None and cfg.max_latency_ms is None:
        return
    import random

    from runners.complexity import build_on_meta, count_macs

    space = get_space(cfg.space)
    if space.size <= 256:
        points = space.grid()
    else:
        rng = random.Random(cfg.seed)
        lowest = {k: v[0] for k, v in space.choices.items()}
        points = [lowest] + [
            {k: rng.choice(v) for k, v in space.choices.items()} for _ in range(63)
        ]
    best: tuple[float, Any] | None = None
    for params in points:
        try:
            spec = space.to_spec(params)
        except SpecError:
            continue
        gmacs = count_macs(build_on_meta(spec), cfg.latency_hw) / 1e9
        if best is None or gmacs < best[0]:
            best = (gmacs, spec)
    assert best is not None
    if cfg.max_gmacs is not None and best[0] > cfg.max_gmacs:
        raise UsageError(
            f"--max-gmacs {cfg.max_gmacs}: no spec of space {cfg.space!r} meets it "
            f"(the cheapest found costs {best[0]:.2f} GMACs at {cfg.latency_hw[0]}x{cfg.latency_hw[1]})"
        )
    if cfg.max_latency_ms is not None:
        from runners.ablation import ProfileSettings, profile_metrics, profile_run

        settings = ProfileSettings(repeats=cfg.latency_repeats, threads=cfg.threads)
        lat = profile_metrics(profile_run(best[1], cfg.latency_hw, settings, cfg.device))
        fastest = lat["latency_ms"]["median"]
        if fastest > cfg.max_latency_ms:
            raise UsageError(
                f"--max-latency-ms {cfg.max_latency_ms}: no spec of space {cfg.space!r} meets it "
                f"(the cheapest spec takes {fastest:.1f} ms here)"
            )


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


def split_trials(total: int, workers: int) -> list[int]:
    base, extra = divmod(total, workers)
    return [
        base + (1 if i < extra else 0) for i in range(workers) if base + (1 if i < extra else 0)
    ]


def run_search(cfg: SearchConfig) -> Any:
    """Bring the study to ``cfg.trials`` finished trials; returns the study."""
    cfg.check()
    precheck_constraints(cfg)
    study = open_study(cfg)
    remaining = cfg.trials - finished_trials(study)
    if remaining <= 0:
        return study
    cores = os.cpu_count() or 1
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


# --- results ---------------------------------------------------------------------------


def trials_frame(study):
    """A tidy DataFrame of the study's trials with values named by objective."""
    import pandas as pd

    objectives = study.user_attrs.get("objectives", [])
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {
            "number": t.number,
            "state": t.state.name,
            **t.user_attrs,
            **{f"param_{k}": v for k, v in t.params.items()},
        }
        if t.values is not None:
            row.update(dict(zip(objectives, t.values)))
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_specs(study) -> list[tuple[Any, dict[str, float]]]:
    """(spec, values) of the study's best trials (the Pareto front, or the best one)."""
    from searchspace.presets import parse_spec

    objectives = study.user_attrs.get("objectives", [])
    out = []
    seen = set()
    for t in study.best_trials:
        if t.user_attrs.get("spec_id") in seen:
            continue
        seen.add(t.user_attrs.get("spec_id"))
        out.append((parse_spec(t.user_attrs["spec"]), dict(zip(objectives, t.values))))
    return out


def export_best(study, out_dir: Path) -> list[Path]:
    """Write the front's specs as JSON files that every command accepts as --spec."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for rank, (spec, values) in enumerate(pareto_specs(study)):
        path = out_dir / f"{study.study_name}_{rank:02d}_{spec.spec_id}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(spec.to_json(indent=2) + "\n")
        os.replace(tmp, path)
        paths.append(path)
        (out_dir / f"{path.stem}.values.json").write_text(json.dumps(values, indent=2) + "\n")
    return paths


REFERENCE_PRESETS = ("bisenetv2", "bisenetv2_l")


def reference_points(
    cfg: SearchConfig, presets: Sequence[str] = REFERENCE_PRESETS
) -> dict[str, dict[str, float]]:
    """The paper presets' values on the study's objectives, for the plots.

    Cost objectives are computed here (latency measured at the study's input and device
    unless a stored run has it); mIoU only when the store holds a finished run of the
    preset under the study's recipe, data and seed, so a preset is a point when it was
    trained like the trials and a line at its cost otherwise. The paper's own mIoU is on
    Cityscapes under another recipe, so it is never mixed in.
    """
    from analysis.records import RecordKey
    from runners.complexity import build_on_meta, count_macs, count_params
    from searchspace.presets import get_preset

    objective = Objective(cfg)
    ctx = objective._setup()
    out: dict[str, dict[str, float]] = {}
    for name in presets:
        spec = get_preset(name)
        if spec.num_classes != ctx["data"].num_classes:
            spec = spec.replace(num_classes=ctx["data"].num_classes)
        meta = build_on_meta(spec)
        vals = {
            "gmacs": count_macs(meta, cfg.latency_hw) / 1e9,
            "params": float(count_params(meta)),
        }
        key = RecordKey.of(spec, ctx["recipe"], ctx["data"].data_id, cfg.train_seed)
        record = objective._finished(ctx["store"], key) or {}
        if record.get("status") == "ok":
            vals["miou"] = float(record["metrics"]["miou"])
        if "latency_ms" in cfg.objectives:
            profiled = objective._stored_profile(ctx, spec) or objective._measure(spec)
            vals["latency_ms"] = float(profiled["latency_ms"]["median"])
        out[name] = vals
    return out


def write_plots(
    study, out_dir: Path, reference: dict[str, dict[str, float]] | None = None
) -> list[Path]:
    """Pareto front, hypervolume history and parameter importances (matplotlib)."""
    from analysis.study_plots import plot_study

    return plot_study(study, trials_frame(study), out_dir, reference or {})


def hypervolume(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """2-D hypervolume for (maximise mIoU, minimise latency) against ``ref`` (miou, latency)."""
    pts = sorted((lat, miou) for miou, lat in points if miou > ref[0] and lat < ref[1])
    hv, base = 0.0, ref[0]
    # non-dominated points, fastest first: each dominates [lat, next lat) x [ref, miou]
    front: list[tuple[float, float]] = []
    for lat, miou in pts:
        if not front or miou > front[-1][1]:
            front.append((lat, miou))
    for i, (lat, miou) in enumerate(front):
        next_lat = front[i + 1][0] if i + 1 < len(front) else ref[1]
        hv += (next_lat - lat) * (miou - base)
    return hv
