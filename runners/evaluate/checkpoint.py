"""Evaluate a saved checkpoint: rebuild the network from the spec JSON stored inside it
(``runners.checkpoint.load_model``) and score it under its recipe's protocol."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from runners.checkpoint import checkpoint_file, load_model
from runners.data.source import DataSource
from runners.evaluate.metrics import EvalResult
from runners.evaluate.predict import evaluate
from searchspace.errors import UsageError


def evaluate_checkpoint(
    path: Path | str,
    data_source: DataSource,
    split: str = "val",
    input_hw: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    max_images: int | None = None,
    save_predictions: Path | str | None = None,
    workers: int = 0,
    progress: bool = False,
) -> EvalResult:
    """``evaluate`` on a checkpoint; ``input_hw`` defaults to its recipe's ``eval_hw``."""
    model, spec, recipe = load_model(path, device)
    num_classes = getattr(spec, "num_classes", None)
    if num_classes != data_source.num_classes:
        raise UsageError(
            f"checkpoint {checkpoint_file(path)} predicts {num_classes} classes but "
            f"{data_source.label} has {data_source.num_classes}"
        )
    return evaluate(
        model,
        data_source,
        split,
        input_hw=input_hw if input_hw is not None else recipe.eval_hw,
        device=device,
        scales=scales,
        flip=flip,
        max_images=max_images,
        save_predictions=save_predictions,
        workers=workers,
        amp=recipe.amp,
        channels_last=recipe.channels_last,
        progress=progress,
        normalize=(recipe.input_mean, recipe.input_std),
    )
