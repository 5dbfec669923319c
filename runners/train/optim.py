"""SGD with weight decay on conv weights only, and the warm-up + poly learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn

from searchspace.recipes import Recipe


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Decay conv (and linear) weights; not BN affine parameters, not biases.

    Decaying BN's scale pulls it towards 0 and silently shrinks whole channels, which hurts
    small networks trained from scratch; biases have nothing to regularise.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            is_weight = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            (decay if is_weight else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    return torch.optim.SGD(
        param_groups(model, recipe.weight_decay),
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
        group["lr"] = lr
