"""Evaluate a saved checkpoint: rebuild the network from the spec JSON stored inside it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from blocks.builder import build_model
from runners.data.datasets import DataSource
from runners.device import resolve_device
from runners.evaluate.metrics import EvalResult
from runners.evaluate.predict import evaluate
from runners.train import checkpoint as ckpt
from searchspace.errors import CheckpointError, SpecError, UsageError
from searchspace.presets import parse_spec
from searchspace.recipes import Recipe, recipe_from_json_dict


def checkpoint_file(path: Path | str) -> Path:
    """A checkpoint file, or a run folder holding ``checkpoint.pt``."""
    path = Path(path)
    return path / ckpt.CHECKPOINT_NAME if path.is_dir() else path


def load_model(
    path: Path | str, device: str | torch.device = "cpu"
) -> tuple[nn.Module, object, Recipe]:
    """(model in eval mode on ``device``, spec, recipe) of a checkpoint."""
    dev = resolve_device(device)  # a bad --device fails before the file is read
    file = checkpoint_file(path)
    data = ckpt.load(file)
    try:
        spec = parse_spec(data["spec_json"])
        recipe = recipe_from_json_dict(json.loads(data["recipe_json"]))
    except (SpecError, ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {file}: unusable spec or recipe ({exc})") from None
    model = build_model(spec)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {file}: weights do not fit its spec ({first})") from None
    model = model.to(dev)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), spec, recipe


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
