"""Latency measured the way DESIGN.md asks: eval, inference_mode, warm-up, synchronised.

Two scopes. ``forward`` times the network alone on a fixed input. ``end2end`` times the
V2 paper's protocol: a 2048x1024 uint8 camera image already on the device is converted,
normalised, resized to the network input, run, and its logits are upsampled back to
2048x1024 and arg-maxed into a label map. Timing is per call: ``perf_counter`` on CPU;
on CUDA the device is synchronised before each call and CUDA events bracket it, so a
queue of asynchronous launches can never make a call look free.

Absolute numbers are only comparable on one machine; compare variants by ratios measured
in one run (see ``benchmarks/profile_bench.py``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from runners.cpus import OthersBusy
from runners.device import autocast, resolve_device
from runners.export.onnx import DEFAULT_OPSET, export_to_file, ort_session, require_onnxruntime
from runners.profile.inference import fold_bn
from searchspace.errors import UsageError

DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
SCOPES = ("forward", "end2end")
# The paper's camera image (H, W); the network sees it resized to the profile's input.
RAW_HW = (1024, 2048)
# ImageNet statistics in 0..255 units; any constants cost the same, these are the usual ones.
_MEAN = (123.675, 116.28, 103.53)
_STD = (58.395, 57.12, 57.375)
K = TypeVar("K")


@dataclass(frozen=True)
class LatencyConfig:
    """How to time a model. Static checks run at construction, device checks in ``check``."""

    device: str = "cpu"
    dtype: str = "fp32"  # fp16 / bf16 run under autocast (weights stay fp32)
    warmup: int = 10
    repeats: int = 50
    threads: int | None = None  # CPU intra-op threads; None keeps torch's current setting
    channels_last: bool = False
    fold_bn: bool = False
    compile: bool = False  # torch.compile with default options
    cuda_graphs: bool = False  # capture one call in a CUDA graph and time its replay
    scope: str = "forward"
    raw_hw: tuple[int, int] = RAW_HW  # end2end only: the camera image size

    def __post_init__(self) -> None:
        kind = self.device.split(":", 1)[0]
        if kind not in ("cpu", "cuda"):
            raise UsageError(f"--device {self.device}: expected cpu or cuda (cuda:N)")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype {self.dtype}: expected one of {', '.join(DTYPES)}")
        if kind == "cpu" and self.dtype == "fp16":
            raise UsageError(
                "--dtype fp16: CPU autocast runs bf16, not fp16; use --dtype bf16 or --device cuda"
            )
        if self.scope not in SCOPES:
            raise UsageError(f"--scope {self.scope}: expected one of {', '.join(SCOPES)}")
        if self.warmup < 0:
            raise UsageError(f"--warmup {self.warmup}: must be >= 0")
        if self.repeats < 1:
            raise UsageError(f"--repeats {self.repeats}: must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads}: must be >= 1")
        if self.cuda_graphs and kind != "cuda":
            raise UsageError("--cuda-graphs: needs --device cuda")
        if len(self.raw_hw) != 2 or min(self.raw_hw) < 32:
            raise UsageError(f"raw image size {self.raw_hw}: needs two sizes of at least 32")

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def check(self) -> None:
        """Raise UsageError if this machine cannot run the configuration."""
        dev = resolve_device(self.device)
        if dev.type == "cuda" and self.dtype == "bf16" and not torch.cuda.is_bf16_supported():
            raise UsageError(f"--dtype bf16: {torch.cuda.get_device_name(dev)} has no bf16")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["raw_hw"] = list(self.raw_hw)
        return d


@dataclass(frozen=True)
class LatencyResult:
    """Raw timings in ms with their spread; ``images_per_s`` = batch * 1000 / median."""

    backend: str  # "torch" or "onnxruntime"
    scope: str
    device: str
    dtype: str
    input_shape: tuple[int, ...]  # the network input, NCHW
    warmup: int
    repeats: int
    threads: int
    timer: str  # "perf_counter" or "cuda_events"
    median_ms: float
    p95_ms: float
    q1_ms: float
    q3_ms: float
    iqr_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    images_per_s: float
    options: dict[str, Any] = field(default_factory=dict)  # channels_last, fold_bn, ...
    samples_ms: tuple[float, ...] = ()
    # CPUs other processes kept busy while this was timed (runners.cpus.OthersBusy); a
    # CPU timing with >= 0.5 of them is flagged as contended wherever it is shown
    others_busy_cpus: float | None = None

    @property
    def contended(self) -> bool:
        return (
            not self.device.startswith("cuda")
            and self.others_busy_cpus is not None
            and self.others_busy_cpus >= OthersBusy.CONTENDED
        )

    @property
    def batch(self) -> int:
        return int(self.input_shape[0])

    def to_dict(self, include_samples: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["batch"] = self.batch
        d["samples_ms"] = list(self.samples_ms) if include_samples else None
        return d


def summarize(
    samples_ms: Sequence[float],
    *,
    batch: int,
    **fields: Any,
) -> LatencyResult:
    """Median, p95, quartiles and throughput of per-call times."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    q1, median, q3, p95 = np.percentile(arr, [25, 50, 75, 95])
    return LatencyResult(
        median_ms=float(median),
        p95_ms=float(p95),
        q1_ms=float(q1),
        q3_ms=float(q3),
        iqr_ms=float(q3 - q1),
        min_ms=float(arr.min()),
        max_ms=float(arr.max()),
        mean_ms=float(arr.mean()),
        images_per_s=batch * 1000.0 / float(median) if median > 0 else math.inf,
        samples_ms=tuple(float(s) for s in arr),
        **fields,
    )


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for a block and restore it afterwards."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def prepare_model(model: nn.Module, cfg: LatencyConfig) -> nn.Module:
    """An eval-mode copy on the device with the requested transforms (caller's model intact)."""
    out = copy.deepcopy(model).eval()
    if cfg.fold_bn:
        fold_bn(out)
    out = out.to(cfg.device)
    if cfg.channels_last:
        out = out.to(memory_format=torch.channels_last)
    if cfg.compile:
        out = torch.compile(out)  # type: ignore[assignment]
    return out


def _make_step(
    model: nn.Module, input_shape: tuple[int, ...], cfg: LatencyConfig
) -> Callable[[], torch.Tensor]:
    """The timed callable; its input is created once, outside the timed region."""
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    if cfg.scope == "forward":
        x = torch.randn(*input_shape, generator=gen).to(cfg.device, memory_format=memory_format)
        return lambda: model(x)
    n, c, h, w = input_shape
    raw = torch.randint(0, 256, (n, c, *cfg.raw_hw), dtype=torch.uint8, generator=gen)
    raw = raw.to(cfg.device)
    mean = torch.tensor(_MEAN, device=cfg.device).view(1, 3, 1, 1)
    inv_std = 1.0 / torch.tensor(_STD, device=cfg.device).view(1, 3, 1, 1)

    def end2end() -> torch.Tensor:
        x = (raw.float() - mean) * inv_std
        x = nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        logits = model(x.contiguous(memory_format=memory_format))
        logits = nn.functional.interpolate(
            logits, size=cfg.raw_hw, mode="bilinear", align_corners=False
        )
        return logits.argmax(dim=1)

    return end2end


def _capture_cuda_graph(step: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """Warm up on a side stream (as torch requires), capture one call, return its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def _time_cpu(step: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def _time_cuda(step: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    samples = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(repeats):
        torch.cuda.synchronize()  # nothing queued before the start event
        start.record()
        step()
        end.record()
        end.synchronize()
        samples.append(float(start.elapsed_time(end)))
    return samples


def measure_latency(
    model: nn.Module, input_shape: Sequence[int], cfg: LatencyConfig
) -> LatencyResult:
    """Time ``model`` on an NCHW ``input_shape`` (the network input) as ``cfg`` says."""
    return measure_latency_interleaved({"model": model}, input_shape, cfg, rounds=1)["model"]


def measure_latency_interleaved(
    models: Mapping[K, nn.Module], input_shape: Sequence[int], cfg: LatencyConfig, rounds: int
) -> dict[K, LatencyResult]:
    """Time several models in turns: ``rounds`` rounds, each giving every model untimed
    calls (``cfg.warmup`` in the first round, one after) and its share of ``cfg.repeats``
    timed ones, the order rotated each round.

    Why: a shared CPU drifts over minutes. Timed one after the other over a 7-minute pass,
    one network measured anywhere from 572 to 754 ms (median of 10), enough to reorder a
    table's rows; in turns, drift falls on every model alike. ``rounds=1`` is one model
    after the other (``cfg.warmup`` untimed calls, then ``cfg.repeats`` timed).
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or min(shape) < 1:
        raise UsageError(f"input shape {shape}: expected N, C, H, W")
    if rounds < 1:
        raise UsageError(f"rounds {rounds}: must be >= 1")
    cfg.check()
    per_round = math.ceil(cfg.repeats / rounds)
    keys = list(models)
    if not keys:
        return {}
    samples: dict[K, list[float]] = {k: [] for k in keys}
    # events, streams and graphs belong to the current CUDA device: make it cfg's (cuda:N)
    on_device = (
        torch.cuda.device(torch.device(cfg.device)) if cfg.is_cuda else contextlib.nullcontext()
    )
    with cpu_threads(cfg.threads if not cfg.is_cuda else None) as threads, on_device:
        prepared = {k: prepare_model(models[k], cfg) for k in keys}
        dtype = DTYPES[cfg.dtype]
        mixed = autocast(cfg.device, dtype is not None, dtype, cuda_graph=cfg.cuda_graphs)
        with torch.inference_mode(), mixed:
            steps = {}
            for k in keys:
                steps[k] = _make_step(prepared[k], shape, cfg)
                if cfg.cuda_graphs:
                    steps[k] = _capture_cuda_graph(steps[k])
            timer = _time_cuda if cfg.is_cuda else _time_cpu
            with OthersBusy() as others:
                for r in range(rounds):
                    for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
                        left = cfg.repeats - len(samples[k])
                        if left > 0:
                            warm = cfg.warmup if r == 0 else 1
                            samples[k] += timer(steps[k], warm, min(per_round, left))
    return {
        k: summarize(
            samples[k],
            batch=shape[0],
            backend="torch",
            scope=cfg.scope,
            device=cfg.device,
            dtype=cfg.dtype,
            input_shape=shape,
            warmup=cfg.warmup,
            repeats=cfg.repeats,
            threads=threads,
            timer="cuda_events" if cfg.is_cuda else "perf_counter",
            options={
                "channels_last": cfg.channels_last,
                "fold_bn": cfg.fold_bn,
                "compile": cfg.compile,
                "cuda_graphs": cfg.cuda_graphs,
                "raw_hw": list(cfg.raw_hw) if cfg.scope == "end2end" else None,
                "rounds": rounds,
            },
            others_busy_cpus=others.cpus,
        )
        for k in keys
    }


def measure_onnxruntime_latency(
    model: nn.Module, input_shape: Sequence[int], cfg: LatencyConfig, exporter: str = "legacy"
) -> LatencyResult:
    """Forward latency of the model exported to ONNX and run by onnxruntime on CPU (fp32).

    Uses ``cfg``'s warm-up, repeats and thread count; dtype, scope and the torch-side
    transforms do not apply (onnxruntime folds BN and picks its own layouts itself).
    """
    require_onnxruntime("--onnxruntime")
    shape = tuple(int(s) for s in input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_to_file(model, path, shape, DEFAULT_OPSET, exporter)
        # the same thread count as the torch timing, so the two columns compare
        threads = cfg.threads if cfg.threads is not None else torch.get_num_threads()
        session = ort_session(path, threads=threads)
        name = session.get_inputs()[0].name
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        for _ in range(cfg.warmup):
            session.run(None, {name: x})
        samples = []
        for _ in range(cfg.repeats):
            t0 = time.perf_counter()
            session.run(None, {name: x})
            samples.append((time.perf_counter() - t0) * 1000.0)
    return summarize(
        samples,
        batch=shape[0],
        backend="onnxruntime",
        scope="forward",
        device="cpu",
        dtype="fp32",
        input_shape=shape,
        warmup=cfg.warmup,
        repeats=cfg.repeats,
        threads=threads,
        timer="perf_counter",
        options={"exporter": exporter},
    )
