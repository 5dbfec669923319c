"""Loading a local backbone weights file, with an error that says what does not fit.

Nothing is downloaded: the toolkit trains from scratch by default, and a user who has,
say, an ImageNet ResNet-18 ``.pth`` passes its path. The file must fit exactly (apart
from the classifier and BN batch counters, which a segmentation backbone does not use),
because a silently half-loaded backbone is worse than none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from searchspace.errors import CheckpointError

# classifier weights of ImageNet checkpoints (torchvision's ``fc``); the trunk has none
IGNORED_PREFIXES = ("fc.",)
# old checkpoints predate BN's ``num_batches_tracked`` buffer; it carries no weights
OPTIONAL_SUFFIXES = (".num_batches_tracked",)
WRAPPER_KEYS = ("state_dict", "model")


def _names(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _unwrap(obj: object, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(f"{where}: expected a state dict (parameter name -> tensor)")
    # weights saved from nn.DataParallel carry a "module." prefix on every key
    if obj and all(k.startswith("module.") for k in obj):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


def load_backbone_weights(
    module: nn.Module,
    path: str | Path,
    ignore_prefixes: tuple[str, ...] = IGNORED_PREFIXES,
) -> None:
    """Load ``path`` into ``module`` (e.g. ``model.semantic.backbone``) or raise.

    Raises CheckpointError naming the missing, unexpected and shape-mismatched keys;
    the module is left unchanged when anything does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone weights {path}: file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: one clear line
        raise CheckpointError(
            f"backbone weights {path}: not a readable torch weights file ({type(exc).__name__})"
        ) from None
    state = _unwrap(raw, f"backbone weights {path}")
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in own and not k.startswith(ignore_prefixes)]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_names(mismatched)}")
    if problems:
        raise CheckpointError(
            f"backbone weights {path} do not fit {type(module).__name__}: " + "; ".join(problems)
        )
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
