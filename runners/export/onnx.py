"""ONNX export checked against onnxruntime, written atomically.

torch 2.13 has two exporters: the dynamo one (``torch.export`` + onnxscript, the default
and maintained path) and the legacy TorchScript tracer. Both export every spec here; the
dynamo one is the default, the legacy one is faster and is kept as an option because
the dynamo exporter's output has changed between torch releases.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from searchspace.errors import ToolkitError, UsageError
from searchspace.outputs import output_file

EXPORTERS = ("dynamo", "legacy")
DEFAULT_OPSET = 18
PARITY_TOLERANCE = 1e-4


class ExportError(ToolkitError):
    """An export that failed or whose onnxruntime output does not match PyTorch's."""


@dataclass(frozen=True)
class ExportResult:
    path: str
    exporter: str
    opset: int
    input_shape: tuple[int, ...]
    size_bytes: int
    max_abs_diff: float | None  # onnxruntime vs PyTorch on a random input; None: unchecked


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def require_onnxruntime(option: str) -> None:
    if not onnxruntime_available():
        raise UsageError(f"{option}: onnxruntime is not installed (pip install onnxruntime)")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and warnings; keep the command's output readable."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_to_file(
    model: nn.Module, path: str | os.PathLike, input_shape: Sequence[int], opset: int, exporter: str
) -> None:
    """Export the eval-mode model with a fixed input shape (the profile's shape)."""
    if exporter not in EXPORTERS:
        raise UsageError(f"--exporter {exporter}: expected one of {', '.join(EXPORTERS)}")
    model = model.eval()
    x = torch.zeros(*input_shape)
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=exporter == "dynamo",
                opset_version=opset,
                input_names=["image"],
                output_names=["logits"],
                external_data=False,
            )
    except Exception as exc:
        raise ExportError(f"{exporter} ONNX export failed: {type(exc).__name__}: {exc}") from exc


def ort_session(path: str | os.PathLike, threads: int | None = None):  # -> ort.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_parity(model: nn.Module, path: str | os.PathLike, input_shape: Sequence[int]) -> float:
    """Max abs difference of onnxruntime (CPU) vs PyTorch on a seeded random input."""
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model.eval()(x).float().numpy()
    session = ort_session(path)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    if out.shape != ref.shape:
        raise ExportError(f"onnxruntime output shape {out.shape} != PyTorch's {ref.shape}")
    return float(np.abs(out - ref).max())


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
    check: bool = True,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Export, check against onnxruntime, then rename into place; nothing is left on failure."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UsageError(f"--onnx {path}: folder {path.parent} does not exist")
    if check:
        require_onnxruntime("ONNX check")
    shape = tuple(int(s) for s in input_shape)
    with output_file(path, f"--onnx {path}") as tmp:
        export_to_file(model, tmp, shape, opset, exporter)
        diff = onnx_parity(model, tmp, shape) if check else None
        if diff is not None and not diff <= tolerance:
            raise ExportError(
                f"onnxruntime output differs from PyTorch by {diff:.3g} (tolerance {tolerance:g})"
            )
        size = tmp.stat().st_size
    return ExportResult(
        path=str(path),
        exporter=exporter,
        opset=opset,
        input_shape=shape,
        size_bytes=size,
        max_abs_diff=diff,
    )
