"""Loading a local backbone weights file, with an error that says what does not fit.

Nothing is downloaded: the toolkit trains from scratch by default, and a user who has,
say, an ImageNet ResNet-18 ``.pth`` passes its path. The file must fit exactly (apart
from the classifier and BN batch counters, which a segmentation backbone does not use),
because a silently half-loaded backbone is worse than none.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from blocks.weights import name_list as _names
from blocks.weights import read_state_dict
from searchspace.errors import CheckpointError

# classifier weights of ImageNet checkpoints (torchvision's ``fc``); the trunk has none
IGNORED_PREFIXES = ("fc.",)
# old checkpoints predate BN's ``num_batches_tracked`` buffer; it carries no weights
OPTIONAL_SUFFIXES = (".num_batches_tracked",)


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
    state = read_state_dict(path, "backbone weights")
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
