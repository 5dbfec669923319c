"""Shared pytest settings: deterministic, single-process CPU torch for speed and repeatability."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from runners.data.source import DataSource

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# never the user's cache (built-in data, data-check verdicts): one fresh folder per session,
# removed when the session ends (each run left about 3 MB in the temp folder before)
_CACHE = tempfile.mkdtemp(prefix="bisenet-lab-test-cache-")
os.environ["BISENET_LAB_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.pop("BISENET_DATA", None)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A 4+2-image built-in dataset at 64x128, made once per test session.

    Made in this process (0.1 s, where ``python -m runners.data synth`` took 3 s to start);
    tests/test_data.py runs that command itself."""
    from runners.data.synth import SynthConfig, ensure_synth

    out = tmp_path_factory.mktemp("synth")
    ensure_synth(out, SynthConfig(train_count=4, val_count=2, height=64, width=128))
    return f"synth:{out}"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for tests of tiny models (``pytestmark = usefixtures("one_thread")``).

    They gain nothing from a second thread, and when other processes share the two cores,
    OpenMP threads waiting on each other make them 10-30x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> DataSource:
    """An 8+4-image built-in dataset at 64x128 as a DataSource, made once per session."""
    from runners.data.source import parse_data_arg
    from runners.data.synth import SynthConfig

    config = SynthConfig(train_count=8, val_count=4, height=64, width=128)
    source = parse_data_arg(f"synth:{tmp_path_factory.mktemp('data') / 'tiny'}", config)
    source.prepare()
    return source
