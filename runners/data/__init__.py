"""Datasets, augmentation and the built-in synthetic street scenes.

Submodules: ``labels`` (Cityscapes id tables), ``synth`` (generator and cache),
``source`` (the ``--data`` argument: ``DataSource``, ``parse_data_arg``; torch-free),
``datasets`` (Cityscapes, folder layout, the checks done when data is opened), ``transforms``, ``cache`` (the cache folder and remembered check verdicts),
``workers`` (toolkit errors out of DataLoader workers unchanged).
The names below are imported lazily so that ``runners.data.synth`` (also run in generator
worker processes) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CityscapesDataset": "datasets",
    "FolderDataset": "datasets",
    "PairedDataset": "datasets",
    "DataSource": "source",
    "parse_data_arg": "source",
    "check_split": "datasets",
    "RUN_SPLITS": "source",
    "cache_root": "cache",
    "SynthConfig": "synth",
    "ensure_synth": "synth",
    "default_synth_root": "synth",
    "train_transform": "transforms",
    "eval_transform": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
