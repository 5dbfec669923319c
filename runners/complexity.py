"""Parameter and multiply-add counts of a spec, without running real arithmetic.

The primary MAC counter is ``torch.utils.flop_counter.FlopCounterMode`` on the meta device
(no memory, no compute), divided by 2 because it counts a multiply-add as two FLOPs. The
V2 paper's "GFLOPs" are GMACs at the 512x1024 network input, so GMACs is what we compare.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from blocks.builder import build_model

BOOSTER_PREFIX = "boosters."


def build_on_meta(spec: object) -> nn.Module:
    """The model with meta tensors: shapes and counts only, built in milliseconds."""
    with torch.device("meta"):
        model = build_model(spec)
    return model.eval()


def count_macs(model: nn.Module, input_hw: tuple[int, int], batch: int = 1) -> int:
    """Multiply-adds of one eval-mode forward pass (booster heads do not run in eval)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.empty(batch, 3, *input_hw, device=device)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def spec_macs(spec: object, input_hw: tuple[int, int] = (512, 1024)) -> int:
    return count_macs(build_on_meta(spec), input_hw)


def count_params(model: nn.Module, inference: bool = True) -> int:
    """All parameters, or (``inference=True``) those left once booster heads are dropped."""
    params: Iterable[tuple[str, nn.Parameter]] = model.named_parameters()
    return sum(p.numel() for n, p in params if not (inference and n.startswith(BOOSTER_PREFIX)))
