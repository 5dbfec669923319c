"""Profile one spec or a whole paper table: parameters, MACs (cross-checked), latency.

This is the API the experiment runner calls; the command line (``__main__``) only
parses flags, calls ``profile_spec`` / ``profile_table`` and prints. Raw numbers are kept
(MACs as integers, latency in ms with its spread); rounding happens when printing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from blocks.builder import build_real
from runners.cli import check_input_hw
from runners.env import environment
from runners.export.onnx import require_onnxruntime
from runners.profile.complexity import build_on_meta, count_params, count_primary, params_by_part
from runners.profile.counters import COUNTERS, PRIMARY, cross_check, largest_disagreement_pct
from runners.profile.inference import FoldReport, fold_bn, max_abs_diff
from runners.profile.latency import (
    LatencyConfig,
    LatencyResult,
    measure_latency,
    measure_onnxruntime_latency,
)
from searchspace.errors import UsageError
from searchspace.tables import get_table

DEFAULT_INPUT_HW = (512, 1024)


def check_counters(counters: Sequence[str]) -> tuple[str, ...]:
    unknown = [c for c in counters if c not in COUNTERS]
    if unknown:
        raise UsageError(f"--counters {unknown[0]}: unknown counter (known: {', '.join(COUNTERS)})")
    return (PRIMARY, *(c for c in dict.fromkeys(counters) if c != PRIMARY))


@dataclass(frozen=True)
class ProfileResult:
    """Everything measured about one network at one input size, in raw units."""

    label: str
    spec_string: str
    spec_id: str
    spec: dict[str, Any]  # canonical JSON of the spec
    input_hw: tuple[int, int]
    params_total: int
    params_inference: int  # booster heads excluded
    params_by_part: dict[str, int]
    macs: int  # primary counter (FlopCounterMode / 2), one image
    conv_macs: int
    macs_by_part: dict[str, int]
    macs_by_op: dict[str, int]
    activations: int  # conv output elements, one image
    counter_macs: dict[str, int]  # every counter that ran, the primary included
    counter_errors: dict[str, str] = field(default_factory=dict)
    macs_disagreement_pct: float | None = None  # largest signed deviation from the primary
    table: str | None = None
    row: str | None = None
    paper_gmacs: float | None = None
    paper_input_hw: tuple[int, int] | None = None
    latency: LatencyResult | None = None
    onnxruntime_latency: LatencyResult | None = None
    fold: dict[str, Any] | None = None  # BN folding check when latency folds BN
    environment: dict[str, Any] = field(default_factory=dict)
    count_s: float = 0.0  # wall time spent counting (all counters)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        """GFLOPs = 2 x GMACs (one multiply-add is two floating-point operations)."""
        return 2 * self.macs / 1e9

    @property
    def counter_gmacs(self) -> dict[str, float]:
        return {k: v / 1e9 for k, v in self.counter_macs.items()}

    @property
    def paper_delta_pct(self) -> float | None:
        """Measured vs paper GMACs, only when measured at the paper's input size."""
        if self.paper_gmacs is None or self.paper_input_hw != self.input_hw:
            return None
        return 100.0 * (self.gmacs / self.paper_gmacs - 1.0)

    def to_dict(self, include_samples: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("latency", "onnxruntime_latency")
        }
        d["input_hw"] = list(self.input_hw)
        d["paper_input_hw"] = list(self.paper_input_hw) if self.paper_input_hw else None
        d["gmacs"] = self.gmacs
        d["gflops"] = self.gflops
        d["counter_gmacs"] = self.counter_gmacs
        d["paper_delta_pct"] = self.paper_delta_pct
        d["latency"] = self.latency.to_dict(include_samples) if self.latency else None
        d["onnxruntime_latency"] = (
            self.onnxruntime_latency.to_dict(include_samples) if self.onnxruntime_latency else None
        )
        return d


def count_spec(
    spec: Any,
    input_hw: tuple[int, int] = DEFAULT_INPUT_HW,
    counters: Sequence[str] = COUNTERS,
    real_model: nn.Module | None = None,
) -> dict[str, Any]:
    """Parameters and MACs only (the fast part); the fields of ``ProfileResult``."""
    start = time.perf_counter()
    meta = build_on_meta(spec)
    primary = count_primary(meta, input_hw)
    counter_macs = {PRIMARY: primary.macs}
    errors: dict[str, str] = {}
    others = [c for c in counters if c != PRIMARY]
    if others:
        model = real_model if real_model is not None else build_real(spec)
        more, errors = cross_check(model, input_hw, others)
        counter_macs.update(more)
    return {
        "params_total": count_params(meta, inference=False),
        "params_inference": count_params(meta, inference=True),
        "params_by_part": params_by_part(meta),
        "macs": primary.macs,
        "conv_macs": primary.conv_macs,
        "macs_by_part": primary.macs_by_part,
        "macs_by_op": primary.macs_by_op,
        "activations": primary.activations,
        "counter_macs": counter_macs,
        "counter_errors": errors,
        "macs_disagreement_pct": largest_disagreement_pct(
            primary.macs, {k: v for k, v in counter_macs.items() if k != PRIMARY}
        ),
        "count_s": time.perf_counter() - start,
    }


def check_fold(model: nn.Module, input_hw: tuple[int, int]) -> dict[str, Any]:
    """Fold BN on a copy and report how far its output moves (it should not, within fp32)."""
    import copy

    folded = copy.deepcopy(model).eval()
    report: FoldReport = fold_bn(folded)
    x = torch.randn(1, 3, *input_hw, generator=torch.Generator().manual_seed(0))
    return {
        "folded": report.folded,
        "left": list(report.left),
        "max_abs_diff": max_abs_diff(model, folded, x),
    }


def profile_spec(
    spec: Any,
    input_hw: tuple[int, int] = DEFAULT_INPUT_HW,
    counters: Sequence[str] = COUNTERS,
    latency: LatencyConfig | None = None,
    *,
    batch: int = 1,
    onnxruntime: bool = False,
    label: str | None = None,
    model: nn.Module | None = None,
) -> ProfileResult:
    """Count and (optionally) time one spec. MACs are per image, whatever ``batch`` is.
    ``model``: the spec's network with its weights (a checkpoint's), else seeded ones."""
    input_hw = check_input_hw(tuple(input_hw))
    counters = check_counters(counters)
    if batch < 1:
        raise UsageError(f"--batch {batch}: must be >= 1")
    if latency is not None:
        latency.check()
    if onnxruntime:
        require_onnxruntime("--onnxruntime")
    needs_real = latency is not None or onnxruntime or len(counters) > 1
    real = model.cpu().eval() if model is not None else build_real(spec) if needs_real else None
    counts = count_spec(spec, input_hw, counters, real_model=real)
    lat = ort = fold = None
    shape = (batch, 3, *input_hw)
    if latency is not None:
        assert real is not None
        if latency.fold_bn:
            fold = check_fold(real, input_hw)
        lat = measure_latency(real, shape, latency)
    if onnxruntime:
        assert real is not None
        ort = measure_onnxruntime_latency(real, shape, latency or LatencyConfig())
    return ProfileResult(
        label=label or spec.to_string(),
        spec_string=spec.to_string(),
        spec_id=spec.spec_id,
        spec=json.loads(spec.to_json()),
        input_hw=input_hw,
        latency=lat,
        onnxruntime_latency=ort,
        fold=fold,
        environment=environment(latency.device if latency else "cpu"),
        **counts,
    )


@dataclass(frozen=True)
class TableProfile:
    table: str
    title: str
    results: tuple[ProfileResult, ...]
    skipped: tuple[tuple[str, str], ...]  # (row, why the toolkit cannot run it)

    def to_dict(self, include_samples: bool = True) -> dict[str, Any]:
        return {
            "table": self.table,
            "title": self.title,
            "results": [r.to_dict(include_samples) for r in self.results],
            "skipped": [{"row": r, "reason": why} for r, why in self.skipped],
        }


def profile_table(
    table: str,
    input_hw: tuple[int, int] = DEFAULT_INPUT_HW,
    counters: Sequence[str] = COUNTERS,
    latency: LatencyConfig | None = None,
    *,
    batch: int = 1,
    onnxruntime: bool = False,
    progress: Callable[[str], None] | None = None,
) -> TableProfile:
    """Every runnable row of a paper table; rows that share a spec are measured once."""
    paper = get_table(table)
    input_hw = check_input_hw(tuple(input_hw))
    check_counters(counters)
    done: dict[str, ProfileResult] = {}
    results = []
    for row in paper.runnable:
        spec = row.spec
        assert spec is not None
        if progress:
            progress(f"{row.key}: {spec.to_string()}")
        if spec.spec_id not in done:
            done[spec.spec_id] = profile_spec(
                spec, input_hw, counters, latency, batch=batch, onnxruntime=onnxruntime
            )
        results.append(
            dataclasses.replace(
                done[spec.spec_id],
                label=row.key,
                table=row.table,
                row=row.row,
                paper_gmacs=row.paper_gmacs,
                paper_input_hw=row.input_hw,
            )
        )
    skipped = tuple((r.row, r.unsupported or "") for r in paper.rows if r.spec is None)
    return TableProfile(
        table=paper.table, title=paper.title, results=tuple(results), skipped=skipped
    )
