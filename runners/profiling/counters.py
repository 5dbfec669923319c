"""Multiply-add counts from several independent counters, so that they can be cross-checked.

The primary counter is ``torch.utils.flop_counter.FlopCounterMode`` on the meta device: no
memory, no arithmetic, milliseconds per model, and a per-module breakdown. It counts a
multiply-add as 2 FLOPs, so MACs are its FLOPs / 2. It counts only matmul-like ops
(convolutions here): no BN, no resize, no bias.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PRIMARY = "flop_counter"
CROSS_COUNTERS = ("fvcore", "thop", "ptflops")
COUNTERS = (PRIMARY, *CROSS_COUNTERS)
IN_CHS = 3


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
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
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
        with _eval_mode(model), FlopCounterMode(display=False) as counter, torch.no_grad():
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


# --- cross-check counters: they run real arithmetic on CPU --------------------------------


def _zeros(input_hw: tuple[int, int]) -> torch.Tensor:
    return torch.zeros(1, IN_CHS, *input_hw)


def fvcore_counts(model: nn.Module, input_hw: tuple[int, int]) -> dict[str, int]:
    """fvcore's MACs by operator kind ('conv', 'batch_norm', 'upsample_bilinear2d', ...)."""
    from fvcore.nn import FlopCountAnalysis

    with _eval_mode(model), torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes turned into ints
        analysis = FlopCountAnalysis(model, _zeros(input_hw))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return {str(k): int(v) for k, v in analysis.by_operator().items()}


def fvcore_activations(model: nn.Module, input_hw: tuple[int, int]) -> int:
    from fvcore.nn import ActivationCountAnalysis

    with _eval_mode(model), torch.inference_mode(), warnings.catch_warnings():
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
