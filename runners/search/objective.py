"""The objective of one trial: sample a spec, check its costs, run the experiment, report.

Each step is one method with typed inputs and outputs, so a reader (or a test) can follow
a trial top to bottom: ``sample`` -> ``costs`` (may reject: the trial is pruned before any
training) -> ``train`` (through the result store: a spec already trained with the same
recipe, data and seed is reused) -> ``values`` in the study's objective order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runners.env import device_name
from runners.experiment import run_planned
from runners.runs import ProfileSettings
from runners.search.config import SearchConfig
from runners.search.costs import Counts, LatencyMeter, gmacs_violation, latency_violation
from runners.search.setup import TrialSetup
from runners.search.study import claim_latency_device
from runners.train.budget import iterations_for
from searchspace.atomic import HOST
from searchspace.errors import StoreError, ToolkitError, UsageError, one_line

# how long a trial waits for its run when another process (a worker, an ablation) has it
WAIT_FOR_OTHERS_S = 7200.0


class TrialFailed(Exception):
    """A trial that could not produce values (NaN loss, OOM, bad spec): recorded, study goes on."""


class Rejected(Exception):
    """A spec that breaks a constraint: the trial is pruned before training, with the reason."""


@dataclass
class Objective:
    """``study.optimize(Objective(cfg))``. Built once per worker; its setup is built lazily."""

    cfg: SearchConfig
    last_rejected: bool = False  # did the last call reject its spec on a constraint?
    _setup: TrialSetup | None = field(default=None, repr=False)
    _latency: LatencyMeter | None = field(default=None, repr=False)

    @property
    def setup(self) -> TrialSetup:
        if self._setup is None:
            self._setup = TrialSetup.of(self.cfg)
        return self._setup

    @property
    def latency(self) -> LatencyMeter:
        if self._latency is None:
            self._latency = LatencyMeter(self.cfg, self.setup)
        return self._latency

    def __call__(self, trial) -> tuple[float, ...] | float:
        """The trial's values; a failure of this trial alone becomes ``TrialFailed``.

        A bad spec (SpecError), a NaN loss or out-of-memory (a failed run record), or an
        error while profiling is recorded as the trial's ``fail_reason`` and the study goes
        on; a mistake of the whole invocation (UsageError, e.g. a missing dataset) stops it.
        """
        import optuna

        self.last_rejected = False
        try:
            spec = self.sample(trial)
            values, profiled = self.costs(trial, spec)
            if self.cfg.needs_training:
                values["miou"] = self.train(trial, spec, profiled)
        except Rejected as exc:
            trial.set_user_attr("rejected", str(exc))
            self.last_rejected = True
            raise optuna.TrialPruned(str(exc)) from None
        except (UsageError, TrialFailed, optuna.TrialPruned):
            raise
        except (ToolkitError, RuntimeError) as exc:
            reason = f"{type(exc).__name__}: {one_line(exc, 300)}"
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailed(reason) from exc
        return self.values(values)

    def sample(self, trial) -> Any:
        """The trial's spec, sized for the data; recorded on the trial by string and id."""
        spec = self.setup.adapt(self.setup.space.sample(trial))
        trial.set_user_attr("spec", spec.to_string())
        trial.set_user_attr("spec_id", spec.spec_id)
        return spec

    def costs(self, trial, spec: Any) -> tuple[dict[str, float], dict[str, Any] | None]:
        """(cost values by objective name, the record-shaped profile if latency was taken).

        Raises ``Rejected`` when a constraint is broken: GMACs are checked first (free),
        latency only when needed.
        """
        counts = Counts.of(spec, self.cfg.latency_hw)
        values = {"gmacs": counts.gmacs, "params": counts.params}
        trial.set_user_attr("gmacs", counts.gmacs)
        if reason := gmacs_violation(self.cfg, counts.gmacs):
            raise Rejected(reason)
        if not self.cfg.needs_latency:
            return values, None
        profiled = self.latency.profile(spec)
        latency = profiled["latency_ms"]
        values["latency_ms"] = latency["median"]
        trial.set_user_attr("latency_ms", values["latency_ms"])
        self.record_latency_device(trial, latency)
        if reason := latency_violation(self.cfg, values["latency_ms"]):
            raise Rejected(reason)
        return values, profiled

    def record_latency_device(self, trial, latency: dict[str, Any]) -> None:
        """Name the device and host the latency was timed on, on the trial; the study's
        first latency names its device for all (``study.claim_latency_device``)."""
        kind = latency.get("device_name") or device_name(self.cfg.device)
        trial.set_user_attr("latency_device", kind)
        trial.set_user_attr("latency_host", latency.get("host") or HOST)
        claim_latency_device(trial.study, kind)

    def train(self, trial, spec: Any, profiled: dict[str, Any] | None) -> float:
        """Val mIoU of the spec's run, stored or trained now (``runners.experiment``)."""
        setup, cfg = self.setup, self.cfg
        run = setup.run(spec, cfg.train_seed)
        trial.set_user_attr("record", run.key.stem)
        settings = ProfileSettings(
            latency=profiled is not None, repeats=cfg.latency_repeats, threads=cfg.threads,
            input_hw=cfg.latency_hw,
        )  # fmt: skip
        out = run_planned(
            [run], setup.data, setup.store, cfg.device, settings, max_attempts=cfg.max_attempts,
            wait_s=WAIT_FOR_OTHERS_S, progress=cfg.progress, keep_checkpoints=False,
            on_eval=self._pruning_callback(trial), profiled=profiled,
        )  # fmt: skip
        record = out.records.get(run.key)
        if record is None:
            raise StoreError(f"timed out waiting for {run.key.stem}, run by another process")
        if run.key not in out.ran:
            trial.set_user_attr("cached", True)
        if record.get("status") != "ok":
            reason = record.get("reason") or "failed"
            if run.key in out.exhausted:
                reason = f"failed {record.get('attempts', 1)} times, not retried: {reason}"
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailed(reason)
        trial.set_user_attr("train_s", (record.get("timings") or {}).get("train_s"))
        return float(record["metrics"]["miou"])

    def _pruning_callback(self, trial):
        """Report intermediate mIoU to the pruner; never prune the run's final evaluation."""
        import optuna

        if self.cfg.pruner == "none":
            return None
        last = iterations_for(self.setup.recipe)  # None for a wall-clock budget

        def on_eval(iteration: int, miou: float) -> None:
            trial.report(miou, iteration)
            if last is not None and iteration >= last:
                return  # the run is done: keep (and store) it rather than prune it
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at iteration {iteration} (mIoU {miou:.3f})")

        return on_eval

    def values(self, values: dict[str, float]) -> tuple[float, ...] | float:
        """The values in the study's objective order (a bare float for one objective)."""
        if len(self.cfg.objectives) == 1:
            return values[self.cfg.objectives[0]]
        return tuple(values[o] for o in self.cfg.objectives)
