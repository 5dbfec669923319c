"""Parameter and multiply-add counts of a model, without running real arithmetic.

The one MAC counter every number of the toolkit comes from (tables, search constraints,
profiles, tests) is ``count_primary``: ``torch.utils.flop_counter.FlopCounterMode`` on
the meta device (no memory, no compute, milliseconds per model), divided by 2 because it
counts a multiply-add as two FLOPs. The V2 paper's "GFLOPs" are GMACs at the 512x1024
network input, so GMACs is what we compare. ``counters.py`` cross-checks it with fvcore,
thop and ptflops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from blocks.builder import build_model

PRIMARY = "flop_counter"  # the primary counter's name in profiles
BOOSTER_PREFIX = "boosters."
IN_CHS = 3


def build_on_meta(spec: object) -> nn.Module:
    """The model with meta tensors: shapes and counts only, built in milliseconds."""
    with torch.device("meta"):
        model = build_model(spec)
    return model.eval()


def count_params(model: nn.Module, inference: bool = True) -> int:
    """All parameters, or (``inference=True``) those left once booster heads are dropped."""
    params: Iterable[tuple[str, nn.Parameter]] = model.named_parameters()
    return sum(p.numel() for n, p in params if not (inference and n.startswith(BOOSTER_PREFIX)))


def count_macs(model: nn.Module, input_hw: tuple[int, int]) -> int:
    """Multiply-adds of one eval-mode forward of one image (booster heads do not run)."""
    return count_primary(model, input_hw).macs


def count_training_macs(model: nn.Module, input_hw: tuple[int, int]) -> int:
    """Multiply-adds of one train-mode forward of one image, booster heads included: what
    a training step costs per image, up to the backward pass's roughly constant factor."""
    # two images: train-mode BatchNorm after the global pooling needs more than one value
    x = torch.empty(2, IN_CHS, *input_hw, device=_device_of(model))
    was_training = model.training
    model.train()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 4


@dataclass(frozen=True)
class PrimaryCount:
    """What FlopCounterMode (plus conv output hooks) says about one forward pass of one image."""

    macs: int
    conv_macs: int  # the part made of convolutions (all of it for these networks)
    macs_by_part: dict[str, int] = field(default_factory=dict)  # top-level children
    macs_by_op: dict[str, int] = field(default_factory=dict)
    # elements written by conv layers, fvcore's "activation count" convention
    activations: int = 0


def top_level_parts(model: nn.Module) -> list[str]:
    """Part names are the model's own top-level children (detail, semantic, fusion, ...)."""
    return [name for name, _ in model.named_children()]


def params_by_part(model: nn.Module) -> dict[str, int]:
    return {
        name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()
    }


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def count_primary(model: nn.Module, input_hw: tuple[int, int]) -> PrimaryCount:
    """MACs of one eval-mode forward of a 1-image batch, by part and by op.

    Runs on whatever device the model lives on; build it on ``meta`` to pay nothing.
    """
    x = torch.empty(1, IN_CHS, *input_hw, device=_device_of(model))
    activations = 0

    def on_conv(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal activations
        activations += out.numel()

    hooks = [m.register_forward_hook(on_conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with eval_mode(model), FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    counts = counter.get_flop_counts()
    root = type(model).__name__
    global_ops = {str(op): int(n) // 2 for op, n in counts.get("Global", {}).items()}
    by_part = {
        name: sum(int(n) for n in counts.get(f"{root}.{name}", {}).values()) // 2
        for name in top_level_parts(model)
    }
    return PrimaryCount(
        macs=int(counter.get_total_flops()) // 2,
        conv_macs=sum(n for op, n in global_ops.items() if "convolution" in op),
        macs_by_part=by_part,
        macs_by_op=global_ops,
        activations=activations,
    )
