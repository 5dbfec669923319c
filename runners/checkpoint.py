"""Checkpoints: written atomically, loaded safely, and refused when they belong to another run.

A checkpoint holds everything the next iteration depends on (model, optimizer, AMP scaler,
iteration, RNG states) plus the spec and recipe JSON it was made with, so resuming under a
different spec or recipe is an error naming both ids rather than a silently mixed run.
Files are read with ``weights_only=True``: a checkpoint is data, never code to execute.

``load_model`` rebuilds a checkpoint's network from the spec stored inside it. It lives
here, below every verb, because training, evaluation, profiling, export and the
experiment runner all read checkpoints, and none of them should import another for it.
"""

from __future__ import annotations

import json
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from blocks.builder import build_model
from runners.device import cuda_available, resolve_device
from searchspace.atomic import replacing
from searchspace.errors import CheckpointError, SpecError, one_line
from searchspace.presets import parse_spec
from searchspace.recipes import Recipe, recipe_from_json_dict

FORMAT = "bisenet-lab checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` through ``searchspace.atomic.replacing``: a kill at any moment leaves
    either the old complete file or the new complete file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        torch.save(obj, tmp)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint; any unreadable file is a ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"corrupt checkpoint {path}: not a torch checkpoint (zip) file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = "Unsupported global" in str(exc) or "Weights only load failed" in str(exc)
        reason = "holds objects other than tensors and plain data" if unsafe else "damaged"
        raise CheckpointError(f"corrupt checkpoint {path}: {reason}") from None
    except Exception as exc:  # torch raises many types for a damaged zip or pickle
        reason = one_line(exc, 120)
        raise CheckpointError(f"corrupt checkpoint {path}: {reason}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"not a bisenet-lab checkpoint: {path}")
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {data.get('version')!r}, expected {VERSION}"
        )
    missing = [k for k in ("spec_json", "recipe_json", "model", "iteration") if k not in data]
    if missing:
        raise CheckpointError(f"corrupt checkpoint {path}: missing {', '.join(missing)}")
    return data


def check_compatible(
    data: dict[str, Any],
    path: Path,
    spec_id: str,
    recipe_id: str,
    seed: int | None = None,
    data_id: str | None = None,
) -> None:
    """Refuse to resume a checkpoint made for another spec, recipe, seed or dataset."""
    pairs = [
        ("spec", data.get("spec_id"), spec_id),
        ("recipe", data.get("recipe_id"), recipe_id),
        ("seed", data.get("seed"), seed),
        ("dataset", data.get("data_id"), data_id),
    ]
    for what, theirs, ours in pairs:
        if ours is not None and theirs != ours:
            raise CheckpointError(
                f"checkpoint {path} is for {what} {theirs}, not {what} {ours}; "
                "use another --out folder or --no-resume"
            )


def rng_state() -> dict[str, Any]:
    """Global RNG states in plain types (``weights_only`` loading accepts no numpy objects)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if cuda_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and cuda_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def checkpoint_file(path: Path | str) -> Path:
    """A checkpoint file, or a run folder holding ``checkpoint.pt``."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_model(
    path: Path | str, device: str | torch.device = "cpu"
) -> tuple[nn.Module, object, Recipe]:
    """(model in eval mode on ``device``, spec, recipe) of a checkpoint."""
    dev = resolve_device(device)  # a bad --device fails before the file is read
    file = checkpoint_file(path)
    data = load(file)
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
