"""benchmarks/gpu_bench.py runs its sections on the CPU with tiny sizes (--cpu-dry-run).

The GPU run itself needs a GPU; this keeps the script from rotting until one is lent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_benchmark_dry_run_completes(tmp_path: Path) -> None:
    out = tmp_path / "gpu.txt"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_bench.py", "--cpu-dry-run", "--skip", "2,3", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "CPU DRY RUN" in text and "## 4. End to end" in text and "## 5. Training" in text
    assert "images/s" in text and "failed" not in text


def test_the_gpu_benchmark_refuses_without_a_gpu() -> None:
    from runners.device import cuda_available

    if cuda_available():
        pytest.skip("a GPU is here")
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_bench.py"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode != 0 and "no CUDA device is available here" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
