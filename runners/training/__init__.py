"""Training: ``train(spec, recipe, data_source, seed, run_dir)`` and what it is made of."""

from __future__ import annotations

from runners.training.loop import TrainResult, train

__all__ = ["TrainResult", "train"]
