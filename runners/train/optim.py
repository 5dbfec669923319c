"""SGD with weight decay on conv weights only, and the warm-up + poly learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn

from searchspace.recipes import Recipe


def param_groups(
    model: nn.Module,
    weight_decay: float,
    backbone: tuple[str, ...] = (),
    backbone_lr_mult: float = 1.0,
) -> list[dict[str, object]]:
    """Decay conv (and linear) weights; not BN affine parameters, not biases.

    Decaying BN's scale pulls it towards 0 and silently shrinks whole channels, which hurts
    small networks trained from scratch; biases have nothing to regularise.
    Parameters whose names start with a ``backbone`` prefix (what a pretrained file
    loaded) form groups of their own whose learning rate is ``backbone_lr_mult`` times
    the schedule's (``lr_mult``, which ``set_lr`` applies).
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            is_weight = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            in_backbone = bool(backbone) and f"{module_name}.{name}".startswith(backbone)
            groups.setdefault((is_weight, in_backbone), []).append(param)
    out: list[dict[str, object]] = []
    for in_backbone in (False, True):
        mult = backbone_lr_mult if in_backbone else 1.0
        for is_weight in (True, False):
            params = groups.get((is_weight, in_backbone), [])
            if params or not in_backbone:  # the two plain groups always exist
                decay = weight_decay if is_weight else 0.0
                out.append({"params": params, "weight_decay": decay, "lr_mult": mult})
    return out


def make_optimizer(
    model: nn.Module, recipe: Recipe, backbone: tuple[str, ...] = ()
) -> torch.optim.SGD:
    """SGD for ``model``; ``backbone``: prefixes of the pretrained part, whose learning
    rate is ``recipe.backbone_lr_mult`` times the rest's."""
    return torch.optim.SGD(
        param_groups(model, recipe.weight_decay, backbone, recipe.backbone_lr_mult),
        lr=recipe.lr,
        momentum=recipe.momentum,
    )


def lr_at(recipe: Recipe, iteration: int, progress: float) -> float:
    """Learning rate for the step after ``iteration`` steps, at ``progress`` in [0, 1].

    Warm-up is counted in iterations (it guards the first steps from scratch); the poly
    decay follows the budget's own progress (iterations, images or seconds done / budget),
    so a time or image budget decays to 0 exactly when it runs out.
    """
    poly = max(0.0, 1.0 - min(progress, 1.0)) ** recipe.poly_power
    if iteration < recipe.warmup_iters:
        ratio = recipe.warmup_ratio + (1.0 - recipe.warmup_ratio) * iteration / recipe.warmup_iters
        return recipe.lr * ratio * poly
    return recipe.lr * poly


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
