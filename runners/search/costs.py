"""What a spec costs (GMACs, params, latency) and whether the constraints allow it.

Counts come from the meta device (no memory, milliseconds). Latency belongs to the
deployed network, as in an ablation (``runners.experiment.time_networks``, the same pass):
it is timed once per deployed network and process, or taken from a stored run of the spec
when that run was timed at the study's input size on this device and host, so one
network's latency is the same number across trials and studies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from runners.env import device_name
from runners.experiment import (
    LatencyKey,
    latency_key,
    profile_metrics,
    profile_run,
    time_networks,
)
from runners.profile.complexity import build_on_meta, count_macs, count_params
from runners.runs import ProfileSettings
from runners.search.config import SearchConfig
from runners.search.setup import TrialSetup
from searchspace.atomic import HOST
from searchspace.errors import SpecError, UsageError
from searchspace.optuna_spaces import get_space

PROFILE_KEYS = ("params", "params_total", "macs", "macs_input_hw", "latency_ms")
GRID_LIMIT = 256  # spaces up to this size are checked point by point, bigger ones sampled


@dataclass(frozen=True)
class Counts:
    """A spec's size at the study's input, counted on the meta device."""

    gmacs: float
    params: float  # float: an objective value

    @classmethod
    def of(cls, spec: Any, input_hw: tuple[int, int]) -> Counts:
        meta = build_on_meta(spec)
        return cls(count_macs(meta, input_hw) / 1e9, float(count_params(meta)))


@dataclass
class LatencyMeter:
    """Latency of a spec at the study's input and device: stored, or timed once here."""

    cfg: SearchConfig
    setup: TrialSetup
    _timed: dict[LatencyKey, dict[str, Any]] = field(default_factory=dict)

    @property
    def settings(self) -> ProfileSettings:
        cfg = self.cfg
        return ProfileSettings(
            repeats=cfg.latency_repeats, threads=cfg.threads, input_hw=cfg.latency_hw
        )

    def profile(self, spec: Any) -> dict[str, Any]:
        """The record-shaped profile (params, MACs, latency) of ``spec``."""
        return self.stored(spec) or self.measure(spec)

    def measure(self, spec: Any) -> dict[str, Any]:
        """Counts, and the deployed network's latency timed once per process (a rejected
        spec may be proposed again; specs that differ only in training-only heads share)."""
        settings = self.settings
        run = self.setup.run(spec, self.cfg.train_seed)
        key = latency_key(run, settings)
        if key not in self._timed:
            self._timed.update(time_networks([run], settings, self.cfg.device, say=_quiet))
        counts = profile_metrics(
            profile_run(
                spec, self.cfg.latency_hw, replace(settings, latency=False), self.cfg.device
            )
        )
        return {**counts, "latency_ms": dict(self._timed[key])}

    def stored(self, spec: Any) -> dict[str, Any] | None:
        """A stored run's profile, when its latency was taken at this input, on this
        device and host (a record from another machine or input size is not used)."""
        record = self.setup.store.record(self.setup.key(spec, self.cfg.train_seed))
        metrics = (record or {}).get("metrics") or {}
        lat = metrics.get("latency_ms") or {}
        if (
            lat.get("median") is None
            or list(lat.get("input_hw") or []) != list(self.cfg.latency_hw)
            or lat.get("device") != self.cfg.device
            or lat.get("host", HOST) != HOST
            or lat.get("device_name", device_name(self.cfg.device)) != device_name(self.cfg.device)
        ):
            return None
        return {k: metrics.get(k) for k in PROFILE_KEYS}


def _quiet(_message: str) -> None:
    pass


def gmacs_violation(cfg: SearchConfig, gmacs: float) -> str | None:
    """Why ``--max-gmacs`` rejects this cost, or None."""
    if cfg.max_gmacs is not None and gmacs > cfg.max_gmacs:
        return f"{gmacs:.2f} GMACs > {cfg.max_gmacs}"
    return None


def latency_violation(cfg: SearchConfig, latency_ms: float) -> str | None:
    """Why ``--max-latency-ms`` rejects this latency, or None."""
    if cfg.max_latency_ms is not None and latency_ms > cfg.max_latency_ms:
        return f"{latency_ms:.1f} ms > {cfg.max_latency_ms} ms"
    return None


def precheck_constraints(cfg: SearchConfig) -> None:
    """Refuse constraints no spec of the space can meet, before any study is touched."""
    if cfg.max_gmacs is None and cfg.max_latency_ms is None:
        return
    space = get_space(cfg.space)
    if space.size_up_to(GRID_LIMIT) <= GRID_LIMIT:
        points = space.grid()
    else:
        rng = random.Random(cfg.seed)
        points = [space.cheapest_params()] + [space.random_params(rng) for _ in range(63)]
    best: tuple[float, Any] | None = None
    for params in points:
        try:
            spec = space.to_spec(params)
        except SpecError:
            continue
        gmacs = Counts.of(spec, cfg.latency_hw).gmacs
        if best is None or gmacs < best[0]:
            best = (gmacs, spec)
    assert best is not None
    if gmacs_violation(cfg, best[0]):
        raise UsageError(
            f"--max-gmacs {cfg.max_gmacs}: no spec of space {cfg.space!r} meets it "
            f"(the cheapest found costs {best[0]:.2f} GMACs at {cfg.latency_hw[0]}x{cfg.latency_hw[1]})"
        )
    if cfg.max_latency_ms is not None:
        settings = ProfileSettings(repeats=cfg.latency_repeats, threads=cfg.threads)
        lat = profile_metrics(profile_run(best[1], cfg.latency_hw, settings, cfg.device))
        fastest = lat["latency_ms"]["median"]
        if latency_violation(cfg, fastest):
            raise UsageError(
                f"--max-latency-ms {cfg.max_latency_ms}: no spec of space {cfg.space!r} meets it "
                f"(the cheapest spec takes {fastest:.1f} ms here)"
            )
