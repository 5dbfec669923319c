"""Multiply-add counts from several independent counters, so that they can be cross-checked.

The primary counter, the one every MAC number of the toolkit comes from, is
``complexity.count_primary`` (FlopCounterMode on the meta device). It counts only
matmul-like ops (convolutions here): no BN, no resize, no bias.

fvcore, thop and ptflops trace or hook a real forward pass, so they need real tensors (a
CPU zeros input is enough, since counts depend on shapes only). Each has its own rules:
fvcore adds BN and bilinear upsampling; thop counts per nn.Module (BN, ReLU, the conv
bias) and misses functional ops; ptflops' aten backend counts convolutions and their
bias. The disagreement is reported, never hidden; the conv-only counts agree exactly.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from runners.profile.complexity import IN_CHS, PRIMARY, eval_mode

CROSS_COUNTERS = ("fvcore", "thop", "ptflops")
COUNTERS = (PRIMARY, *CROSS_COUNTERS)


# --- cross-check counters: they run real arithmetic on CPU --------------------------------


def _zeros(input_hw: tuple[int, int]) -> torch.Tensor:
    return torch.zeros(1, IN_CHS, *input_hw)


def fvcore_counts(model: nn.Module, input_hw: tuple[int, int]) -> dict[str, int]:
    """fvcore's MACs by operator kind ('conv', 'batch_norm', 'upsample_bilinear2d', ...)."""
    from fvcore.nn import FlopCountAnalysis

    with eval_mode(model), torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes turned into ints
        analysis = FlopCountAnalysis(model, _zeros(input_hw))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return {str(k): int(v) for k, v in analysis.by_operator().items()}


def fvcore_activations(model: nn.Module, input_hw: tuple[int, int]) -> int:
    from fvcore.nn import ActivationCountAnalysis

    with eval_mode(model), torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = ActivationCountAnalysis(model, _zeros(input_hw))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())


def count_fvcore(model: nn.Module, input_hw: tuple[int, int]) -> int:
    return sum(fvcore_counts(model, input_hw).values())


def count_thop(model: nn.Module, input_hw: tuple[int, int]) -> int:
    import thop

    # thop attaches total_ops/total_params buffers to every module: count on a copy
    clone = copy.deepcopy(model).eval()
    with torch.inference_mode(), contextlib.redirect_stdout(io.StringIO()):
        macs, _params = thop.profile(clone, inputs=(_zeros(input_hw),), verbose=False)
    return int(macs)


def count_ptflops(model: nn.Module, input_hw: tuple[int, int]) -> int:
    from ptflops import get_model_complexity_info

    # no_grad, not inference_mode: under inference_mode aten.conv2d reaches ptflops'
    # dispatch mode undecomposed and its aten backend (which maps aten.convolution) counts 0.
    clone = copy.deepcopy(model).eval()
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        macs, _params = get_model_complexity_info(
            clone,
            (IN_CHS, *input_hw),
            as_strings=False,
            backend="aten",
            print_per_layer_stat=False,
            verbose=False,
        )
    if macs is None:
        raise RuntimeError("ptflops could not finish the count")
    return int(macs)


CROSS_COUNTER_FUNCS: dict[str, Callable[[nn.Module, tuple[int, int]], int]] = {
    "fvcore": count_fvcore,
    "thop": count_thop,
    "ptflops": count_ptflops,
}


def cross_check(
    model: nn.Module, input_hw: tuple[int, int], counters: Sequence[str] = CROSS_COUNTERS
) -> tuple[dict[str, int], dict[str, str]]:
    """Each requested cross-counter's MACs; a counter that fails is reported, not raised."""
    macs: dict[str, int] = {}
    errors: dict[str, str] = {}
    for name in counters:
        if name == PRIMARY:
            continue
        try:
            macs[name] = CROSS_COUNTER_FUNCS[name](model, input_hw)
        except ImportError as exc:
            errors[name] = f"not installed ({exc.name})"
        except Exception as exc:  # a counter's own bug must not sink the profile
            errors[name] = f"{type(exc).__name__}: {exc}"
    return macs, errors


def largest_disagreement_pct(primary: int, others: dict[str, int]) -> float | None:
    """Signed percentage of the counter furthest from the primary one (None: nothing to compare)."""
    if not others or primary <= 0:
        return None
    deltas = [100.0 * (v / primary - 1.0) for v in others.values()]
    return max(deltas, key=abs)
