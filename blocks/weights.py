"""Reading a weights file as a plain state dict, safely, with one-line errors.

Shared by everything that loads weights made elsewhere (a backbone ``.pth``, a peer's
checkpoint to convert): ``torch.load(weights_only=True)`` only, so a file that would run
code when unpickled is refused, never executed.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from searchspace.errors import CheckpointError

# keys under which trainers nest the weights: mmseg/mmengine "state_dict", others "model"
WRAPPER_KEYS = ("state_dict", "model")


def name_list(keys: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` names, then how many more: error messages stay one line."""
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def unwrap_state_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
    """The name -> tensor dict inside ``obj`` (a raw state dict, or one nested under
    ``state_dict``/``model``), with DataParallel's ``module.`` prefix removed."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{where}: expected a state dict (parameter name -> tensor)")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(
            f"{where}: expected a state dict (parameter name -> tensor); {bad[0]!r} is not one"
        )
    if all(k.startswith("module.") for k in obj):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


def read_state_dict(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Load ``path`` with ``weights_only=True`` and unwrap it; CheckpointError otherwise."""
    path = Path(path)
    where = f"{what} {path}"
    if not path.is_file():
        raise CheckpointError(f"{where}: file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # "Unsupported global": the pickle names a class or function to call; anything else
        # (an unknown opcode, a truncated stream) is a file that is not a torch pickle at all
        if "Unsupported global" in text:
            raise CheckpointError(
                f"{where}: holds objects other than tensors and plain data; loading it would"
                " run code, so it is refused (save its state_dict alone and convert that)"
            ) from None
        raise CheckpointError(f"{where}: not a readable torch weights file (damaged)") from None
    except Exception as exc:  # zip, pickle and torch errors alike: one clear line
        raise CheckpointError(
            f"{where}: not a readable torch weights file ({type(exc).__name__})"
        ) from None
    return unwrap_state_dict(raw, where)
