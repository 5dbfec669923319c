"""Optuna search spaces: each samples a valid spec from a trial, and does nothing else.

Sampling is separate from building and training (Optuna's own examples do the same), so
a space can be listed, gridded and tested without torch. Every choice is categorical
with a fixed parameter name: the grid is explicit, a GridSampler can enumerate it, and
parameter importances are comparable across studies.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from searchspace.errors import SpecError
from searchspace.presets import get_preset
from searchspace.v2 import BOOSTER_POSITIONS, BiSeNetV2Spec


class TrialLike(Protocol):
    """The part of ``optuna.Trial`` a space uses (a FixedTrial or a stub works too)."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    choices: Mapping[str, tuple[Any, ...]]  # parameter -> its categorical choices
    to_spec: Callable[[Mapping[str, Any]], BiSeNetV2Spec]

    def sample(self, trial: TrialLike) -> BiSeNetV2Spec:
        params = {k: trial.suggest_categorical(k, list(v)) for k, v in self.choices.items()}
        return self.to_spec(params)

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the space as a parameter dict (for grid baselines)."""
        keys = list(self.choices)
        return [dict(zip(keys, vals)) for vals in itertools.product(*self.choices.values())]

    @property
    def size(self) -> int:
        n = 1
        for v in self.choices.values():
            n *= len(v)
        return n


def _multipliers(params: Mapping[str, Any]) -> BiSeNetV2Spec:
    return get_preset("bisenetv2").replace(
        width_mult=float(params["width_mult"]), depth_mult=float(params["depth_mult"])
    )


def _v2_full(params: Mapping[str, Any]) -> BiSeNetV2Spec:
    boosters = tuple(p for p in BOOSTER_POSITIONS if params[f"booster_{p}"])
    if not params["context_embedding"]:
        boosters = tuple(p for p in boosters if p != "s5_5")
    return BiSeNetV2Spec().replace(
        width_mult=float(params["width_mult"]),
        depth_mult=float(params["depth_mult"]),
        aggregation=params["aggregation"],
        head_width=int(params["head_width"]),
        booster_positions=boosters,
        **{
            "semantic.ratio": float(params["ratio"]),
            "semantic.exp_ratio": int(params["exp_ratio"]),
            "semantic.block": params["block"],
            "semantic.ge_expand": params["ge_expand"],
            "semantic.ge_gather_kernel": int(params["ge_gather_kernel"]),
            "semantic.ge_down_dw": params["ge_down_dw"],
            "semantic.context_embedding": bool(params["context_embedding"]),
        },
    )


SPACES: dict[str, SearchSpace] = {
    "multipliers": SearchSpace(
        name="multipliers",
        description="width multiplier alpha x depth multiplier d of the bisenetv2 preset",
        choices={
            "width_mult": (0.25, 0.5, 0.75, 1.0, 1.25),
            "depth_mult": (0.5, 1.0, 2.0),
        },
        to_spec=_multipliers,
    ),
    "v2-full": SearchSpace(
        name="v2-full",
        description="every BiSeNet V2 knob: alpha, d, lambda, e, GE options, fusion, heads",
        choices={
            "width_mult": (0.25, 0.5, 0.75, 1.0, 1.25, 1.5),
            "depth_mult": (0.5, 1.0, 2.0, 3.0),
            "ratio": (0.5, 0.25, 0.125, 0.0625),
            "exp_ratio": (1, 2, 4, 6, 8),
            "block": ("ge", "ib"),
            "ge_expand": ("gather", "depthwise"),
            "ge_gather_kernel": (3, 1),
            "ge_down_dw": ("3x3x2", "5x5"),
            "context_embedding": (True, False),
            "aggregation": ("bga", "sum", "concat", "ffm"),
            "head_width": (64, 128, 256, 352, 512, 1024),
            **{f"booster_{p}": (False, True) for p in BOOSTER_POSITIONS},
        },
        to_spec=_v2_full,
    ),
}


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise SpecError(f"unknown search space {name!r} (known: {', '.join(SPACES)})") from None
