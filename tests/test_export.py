"""ONNX export: onnxruntime agrees with PyTorch, the file appears atomically or not at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blocks.builder import build_model
from runners.cli import run_cli
from runners.export.__main__ import main as export_main
from runners.export.onnx import ExportError, export_onnx, onnxruntime_available
from runners.profile.latency import LatencyConfig, measure_onnxruntime_latency
from searchspace.presets import V2_PRESETS, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (1, 3, 64, 128)
needs_ort = pytest.mark.skipif(
    not onnxruntime_available(), reason="onnxruntime is not installed (pip install onnxruntime)"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def model_of(spec_text: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(parse_spec(spec_text)).eval()


@needs_ort
@pytest.mark.parametrize(
    "name",
    [*V2_PRESETS, "v2:bb=mobilenetv2,a=0.25", "v2:bb=shufflenetv2,bbw=0.5", "v2:bb=resnet18"],
)
def test_onnx_parity_every_preset(name: str, tmp_path: Path) -> None:
    """The legacy exporter here (fast); the dynamo one is the CLI's default, tested below."""
    path = tmp_path / f"{name}.onnx"
    result = export_onnx(model_of(name), path, SHAPE, exporter="legacy")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    assert path.stat().st_size == result.size_bytes > 0
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


@needs_ort
def test_cli_exports_with_the_default_exporter(tmp_path: Path) -> None:
    path = tmp_path / "sum.onnx"
    cmd = [sys.executable, "-m", "runners.export", "--spec", "v2:agg=sum", "--onnx", str(path)]
    out = subprocess.run(
        [*cmd, "--input-hw", "64", "128"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "dynamo exporter" in out.stdout and "max abs diff" in out.stdout
    diff = float(out.stdout.split("max abs diff: ")[1].split()[0])
    assert diff < 1e-4
    import onnx

    onnx.checker.check_model(str(path))
    assert [p.name for p in tmp_path.iterdir()] == ["sum.onnx"]


@needs_ort
def test_failed_check_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(model_of("bisenetv2_dwexp"), path, SHAPE, exporter="legacy", tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []


@needs_ort
def test_onnxruntime_latency_fields() -> None:
    cfg = LatencyConfig(warmup=1, repeats=3, threads=1)
    r = measure_onnxruntime_latency(model_of("bisenetv2_dwexp"), SHAPE, cfg)
    assert r.backend == "onnxruntime" and r.threads == 1 and len(r.samples_ms) == 3
    assert r.min_ms <= r.median_ms <= r.p95_ms <= r.max_ms


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--spec", "nope"], "unknown spec 'nope'"),
        (["--spec", "v2:agg=nowhere"], "aggregation"),
        (["--input-hw", "31", "64"], "at least 32"),
        (["--input-hw", "64", "x"], "expected two integers"),
        (["--opset", "9"], "--opset 9"),
        (["--exporter", "tf"], "--exporter tf"),
        (["--onnx-dir-missing"], "does not exist"),
    ],
    ids=lambda v: " ".join(v),
)
def test_export_cli_bad_input(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.onnx"
    if args == ["--onnx-dir-missing"]:
        args, target = [], tmp_path / "missing" / "out.onnx"
    with pytest.raises(SystemExit) as exc:
        run_cli(export_main, ["--onnx", str(target), *args])
    captured = capsys.readouterr()
    assert exc.value.code == 2
    assert captured.err.count("\n") == 1 and message in captured.err, captured.err
    assert captured.out == "" and list(tmp_path.iterdir()) == []
