"""Shared pytest settings: deterministic, single-process CPU torch for speed and repeatability."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A 4+2-image built-in dataset at 64x128, made once per test session."""
    out = tmp_path_factory.mktemp("synth")
    subprocess.run(
        [sys.executable, "-m", "runners.data", "synth", "--out", str(out), "--train", "4",
         "--val", "2", "--height", "64", "--width", "128"],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    return f"synth:{out}"
