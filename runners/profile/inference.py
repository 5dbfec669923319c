"""An inference-ready copy of a model: BN folded into the convs, channels_last memory.

In eval mode a BatchNorm after a conv is an affine map per output channel, so it can be
absorbed into the conv's weight and bias: one memory pass less per layer, which is most
of the CPU speed-up. Only a BN that directly follows a conv inside an ``nn.Sequential``
(every ``ConvBN``, and any bare conv + BN pair) is folded; a BN on anything else, such as
the context embedding's BN on a pooled vector, stays as it is and is listed.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_BN_TYPES = (nn.BatchNorm2d,)


@dataclass(frozen=True)
class FoldReport:
    folded: int
    left: tuple[str, ...]  # qualified names of BN layers that had no conv to fold into


def fold_bn(model: nn.Module) -> FoldReport:
    """Fold, in place, every BN that follows a conv in a Sequential, and the (conv, BN)
    attribute pairs a module declares in ``FOLD_PAIRS`` (torchvision-named blocks such as
    ResNet's, whose BNs are attributes); the model must be in eval.

    The BN is replaced by ``nn.Identity`` (so module names and the Sequential's length stay)
    and the conv gains the bias that carries the BN shift.
    """
    if model.training:
        raise ValueError("fold_bn needs an eval-mode model (running statistics are folded)")
    folded_ids: set[int] = set()
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            pairs = list(itertools.pairwise(seq._modules))
        else:
            pairs = list(getattr(seq, "FOLD_PAIRS", ()))
        for a, b in pairs:
            conv, bn = seq._modules[a], seq._modules[b]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, _BN_TYPES)
                and bn.track_running_stats
                and bn.num_features == conv.out_channels
            ):
                folded_ids.add(id(bn))
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    left = tuple(
        name
        for name, m in model.named_modules()
        if isinstance(m, _BN_TYPES) and id(m) not in folded_ids
    )
    return FoldReport(folded=len(folded_ids), left=left)


def make_inference_model(
    model: nn.Module, fold: bool = True, channels_last: bool = True
) -> nn.Module:
    """A new eval-mode model ready for deployment; the given model is left untouched."""
    out = copy.deepcopy(model).eval()
    if fold:
        fold_bn(out)
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    return out


@torch.no_grad()
def calibrate_batchnorm_(
    model: nn.Module, input_shape: tuple[int, ...], steps: int = 2, seed: int = 0
) -> nn.Module:
    """Give every BN realistic, non-trivial statistics and affine parameters, in place.

    A freshly built model has running mean 0 and variance 1, where folding is almost the
    identity and a folding bug would pass unseen. Random affine parameters plus running
    statistics gathered on random inputs make the test (and the benchmark) meaningful while
    keeping activations of order one.
    """
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration steps
        if m.affine:
            m.weight.copy_(torch.empty(m.num_features).uniform_(0.5, 1.5, generator=gen))
            m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    model.train()
    n = input_shape[0]
    for _ in range(steps):
        # per-image brightness and contrast, so statistics of pooled features (the context
        # embedding's BN) have a realistic spread instead of the ~0 of i.i.d. noise means
        scale = torch.empty(n, 1, 1, 1).uniform_(0.5, 1.5, generator=gen)
        shift = torch.randn(n, 1, 1, 1, generator=gen)
        x = torch.randn(*input_shape, generator=gen) * scale + shift
        model(x.to(device))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return model.eval()


@torch.no_grad()
def max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """Largest absolute difference between two eval-mode models' outputs on one input."""
    ya, yb = a.eval()(x), b.eval()(x)
    return float((ya.float() - yb.float()).abs().max())
