"""Optuna search spaces: each samples a valid spec from a trial, and does nothing else.

Sampling is separate from building and training (Optuna's own examples do the same), so
a space can be listed, gridded and tested without torch. Every choice is categorical
with a fixed parameter name, so a grid is explicit and importances are comparable across
studies.

Spaces are conditional (define-by-run): a knob is suggested only when it reaches the
network given the knobs sampled before it (the GE options only for GE blocks,
``booster_s5_5`` only with the context embedding). A knob that is never suggested is
absent from the trial, so Optuna's importances (which use the parameters every trial
has) never credit a knob that changed nothing, and no knob is dropped silently: the
conditions mirror the specs' own ``inapplicable`` rules, and tests/test_canonical.py
checks every sampled spec against them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from searchspace.backbones import BACKBONE_WIDTHS, SEMANTIC_BACKBONES
from searchspace.errors import SpecError
from searchspace.presets import ArchSpec, get_preset
from searchspace.v1 import AUX_POSITIONS, BiSeNetV1Spec
from searchspace.v2 import BOOSTER_POSITIONS, BiSeNetV2Spec


class TrialLike(Protocol):
    """The part of ``optuna.Trial`` a space uses (a FixedTrial or a stub works too)."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


Params = Mapping[str, Any]


@dataclass(frozen=True)
class Knob:
    """One categorical parameter; ``when`` says, from the knobs before it, if it applies."""

    name: str
    choices: tuple[Any, ...]
    when: Callable[[Params], bool] | None = None
    why_not: str = ""  # shown when a parameter file gives the knob where it does not apply

    def applies(self, params: Params) -> bool:
        return self.when is None or self.when(params)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    knobs: tuple[Knob, ...]
    build: Callable[[Params], ArchSpec]  # the applicable knobs' values -> spec

    @property
    def choices(self) -> dict[str, tuple[Any, ...]]:
        """Every knob and its choices (a knob may not apply to every point)."""
        return {k.name: k.choices for k in self.knobs}

    @property
    def conditional(self) -> bool:
        return any(k.when is not None for k in self.knobs)

    def sample(self, trial: TrialLike) -> ArchSpec:
        params: dict[str, Any] = {}
        for knob in self.knobs:
            if knob.applies(params):
                params[knob.name] = trial.suggest_categorical(knob.name, list(knob.choices))
        return self.build(params)

    def check_params(self, params: Params) -> dict[str, Any]:
        """The parameters of one point, checked: every applicable knob given with one of
        its choices, no knob the space lacks, none given where it does not apply."""
        if not isinstance(params, Mapping):
            raise SpecError(f"space {self.name!r}: parameters must be an object of knob: value")
        known = {k.name: k for k in self.knobs}
        for name in params:
            if name not in known:
                raise SpecError(
                    f"knob {name!r}: not in space {self.name!r} (knobs: {', '.join(known)})"
                )
        out: dict[str, Any] = {}
        for knob in self.knobs:
            applies = knob.applies(out)
            if not applies:
                if knob.name in params:
                    raise SpecError(
                        f"knob {knob.name!r}={params[knob.name]!r}: does not apply here "
                        f"({knob.why_not})"
                    )
                continue
            if knob.name not in params:
                raise SpecError(f"knob {knob.name!r}: missing (choices: {list(knob.choices)})")
            value = _match(params[knob.name], knob)
            if value is _NO_MATCH:
                raise SpecError(
                    f"knob {knob.name!r}={params[knob.name]!r}: expected one of "
                    f"{list(knob.choices)}"
                )
            out[knob.name] = value
        return out

    def to_spec(self, params: Params) -> ArchSpec:
        return self.build(self.check_params(params))

    def points(self) -> Iterator[dict[str, Any]]:
        """Every point of the space (depth first); only the knobs that apply are keys."""

        def walk(i: int, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
            if i == len(self.knobs):
                yield dict(params)
                return
            knob = self.knobs[i]
            if not knob.applies(params):
                yield from walk(i + 1, params)
                return
            for value in knob.choices:
                params[knob.name] = value
                yield from walk(i + 1, params)
            del params[knob.name]

        return walk(0, {})

    def grid(self, limit: int = 100_000) -> list[dict[str, Any]]:
        """Every point as a parameter dict, or SpecError when there are more than ``limit``."""
        out = []
        for point in self.points():
            if len(out) == limit:
                raise SpecError(f"space {self.name!r} has more than {limit} points to grid")
            out.append(point)
        return out

    def size_up_to(self, limit: int) -> int:
        """The number of points, counted up to ``limit + 1`` (big spaces are not walked)."""
        n = 0
        for _ in self.points():
            n += 1
            if n > limit:
                break
        return n

    def random_params(self, rng: random.Random) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for knob in self.knobs:
            if knob.applies(params):
                params[knob.name] = rng.choice(knob.choices)
        return params

    def cheapest_params(self) -> dict[str, Any]:
        """Each applicable knob at its first choice (spaces list cheap choices first)."""
        params: dict[str, Any] = {}
        for knob in self.knobs:
            if knob.applies(params):
                params[knob.name] = knob.choices[0]
        return params


_NO_MATCH = object()


def _match(value: Any, knob: Knob) -> Any:
    """The choice equal to ``value`` (``1`` matches ``1.0``; ``True`` never matches ``1``)."""
    for choice in knob.choices:
        if choice == value and isinstance(choice, bool) == isinstance(value, bool):
            return choice
    return _NO_MATCH


def _multipliers(params: Params) -> ArchSpec:
    return get_preset("bisenetv2").replace(
        width_mult=float(params["width_mult"]), depth_mult=float(params["depth_mult"])
    )


def _v2_full(params: Params) -> ArchSpec:
    backbone = params["backbone"]
    changes: dict[str, Any] = {
        "width_mult": float(params["width_mult"]),
        "aggregation": params["aggregation"],
        "head_width": int(params["head_width"]),
        "booster_positions": tuple(p for p in BOOSTER_POSITIONS if params.get(f"booster_{p}")),
        "semantic.backbone": backbone,
        "semantic.context_embedding": bool(params["context_embedding"]),
    }
    if f"{backbone}_width" in params:
        changes["semantic.backbone_width"] = float(params[f"{backbone}_width"])
    for knob, field, kind in (
        ("depth_mult", "depth_mult", float),
        ("ratio", "semantic.ratio", float),
        ("exp_ratio", "semantic.exp_ratio", int),
        ("block", "semantic.block", str),
    ):
        if knob in params:
            changes[field] = kind(params[knob])
    for knob, field in (
        ("ge_expand", "semantic.ge_expand"),
        ("ge_gather_kernel", "semantic.ge_gather_kernel"),
        ("ge_down_dw", "semantic.ge_down_dw"),
    ):
        if knob in params:
            changes[field] = params[knob]
    return BiSeNetV2Spec().replace(**changes)


def _own_branch(p: Params) -> bool:
    return p["backbone"] == "bisenetv2"


def _is_ge(p: Params) -> bool:
    return _own_branch(p) and p["block"] == "ge"


_OWN = "the paper's own semantic branch only (backbone=bisenetv2)"
_V2_FULL_KNOBS = (
    # the paper's own branch first: a space's first choices are its cheapest point
    Knob("backbone", SEMANTIC_BACKBONES),
    *(
        Knob(f"{name}_width", widths, lambda p, n=name: p["backbone"] == n, f"{name} only")
        for name, widths in BACKBONE_WIDTHS.items()
    ),
    Knob("width_mult", (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)),
    Knob("depth_mult", (0.5, 1.0, 2.0, 3.0), _own_branch, _OWN),
    Knob("ratio", (0.5, 0.25, 0.125, 0.0625), _own_branch, _OWN),
    Knob("exp_ratio", (1, 2, 4, 6, 8), _own_branch, _OWN),
    Knob("block", ("ge", "ib"), _own_branch, _OWN),
    Knob(
        "ge_expand",
        ("gather", "depthwise"),
        lambda p: _is_ge(p) and p["exp_ratio"] > 1,
        "GE layers only, and with exp_ratio=1 both forms are one layer",
    ),
    Knob("ge_gather_kernel", (3, 1), _is_ge, "GE layers only"),
    Knob("ge_down_dw", ("3x3x2", "5x5"), _is_ge, "GE layers only"),
    Knob("context_embedding", (True, False)),
    Knob("aggregation", ("bga", "sum", "concat", "ffm")),
    Knob("head_width", (64, 128, 256, 352, 512, 1024)),
    *(Knob(f"booster_{p}", (False, True)) for p in BOOSTER_POSITIONS if p != "s5_5"),
    Knob(
        "booster_s5_5",
        (False, True),
        lambda p: bool(p["context_embedding"]),
        "s5_5 is the context embedding's output, and context_embedding is off",
    ),
)


def _v1_full(params: Params) -> ArchSpec:
    changes: dict[str, Any] = {
        "context.backbone": params["backbone"],
        "width_mult": float(params["width_mult"]),
        "depth_mult": float(params["depth_mult"]),
        "fusion": params["fusion"],
        "context.arm": bool(params["arm"]),
        "context.global_context": bool(params["global_context"]),
        "context.lateral_kernel": int(params["lateral_kernel"]),
        "context.refine": bool(params["refine"]),
        "head_width": int(params["head_width"]),
        "aux_positions": tuple(p for p in AUX_POSITIONS if params[f"aux_{p}"]),
    }
    if "spatial_form" in params:
        changes["spatial.form"] = params["spatial_form"]
    if "ffm_reduction" in params:
        changes["ffm_reduction"] = int(params["ffm_reduction"])
    return BiSeNetV1Spec().replace(**changes)


def _has_spatial(p: Params) -> bool:
    return p["fusion"] != "cp_only"


_V1_FULL_KNOBS = (
    Knob("backbone", ("xception39", "resnet18")),
    Knob("width_mult", (0.5, 0.75, 1.0, 1.25)),
    Knob("depth_mult", (0.5, 1.0, 2.0)),
    Knob("fusion", ("cp_only", "sum", "concat", "bga", "ffm")),
    Knob("spatial_form", ("paper", "authors"), _has_spatial, "fusion=cp_only has no spatial path"),
    Knob("ffm_reduction", (1, 4), lambda p: p["fusion"] == "ffm", "only the FFM has it"),
    Knob("arm", (False, True)),
    Knob("global_context", (False, True)),
    Knob("lateral_kernel", (1, 3)),
    Knob("refine", (False, True)),
    Knob("head_width", (64, 128, 256)),
    *(Knob(f"aux_{p}", (False, True)) for p in AUX_POSITIONS),
)


SPACES: dict[str, SearchSpace] = {
    "multipliers": SearchSpace(
        name="multipliers",
        description="width multiplier alpha x depth multiplier d of the bisenetv2 preset",
        knobs=(
            Knob("width_mult", (0.25, 0.5, 0.75, 1.0, 1.25)),
            Knob("depth_mult", (0.5, 1.0, 2.0)),
        ),
        build=_multipliers,
    ),
    "v2-full": SearchSpace(
        name="v2-full",
        description="every BiSeNet V2 knob: semantic backbone, alpha, d, lambda, e, GE options, fusion, heads",
        knobs=_V2_FULL_KNOBS,
        build=_v2_full,
    ),
    "v1-full": SearchSpace(
        name="v1-full",
        description="BiSeNet V1: backbone, alpha, d, spatial path, fusion, ARM, context, heads",
        knobs=_V1_FULL_KNOBS,
        build=_v1_full,
    ),
}


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise SpecError(f"unknown search space {name!r} (known: {', '.join(SPACES)})") from None
