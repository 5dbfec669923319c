"""Shared pytest settings: deterministic, single-process CPU torch for speed and repeatability."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
