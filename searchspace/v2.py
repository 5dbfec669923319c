"""BiSeNet V2 as data: a frozen spec tree and its resolution into per-stage numbers.

Every design choice the V2 paper ablates is a field here; ``resolve`` expands a spec
(multipliers included) into the explicit channel and layer counts the builder needs,
pycls-style, so that validation and the builder agree on one set of numbers.
Defaults are the paper-faithful ``bisenetv2`` preset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from searchspace.backbones import BACKBONE_WIDTHS, SEMANTIC_BACKBONES, tap_widths
from searchspace.checks import check, check_dropout, check_multipliers, check_positions
from searchspace.errors import SpecError
from searchspace.serialize import (
    SpecViews,
    added_field,
    check_applicable,
    normalise_numbers,
    parse_overrides,
)

KIND = "bisenetv2"
BOOSTER_POSITIONS = ("stem", "s3", "s4", "s5_4", "s5_5")
AGGREGATIONS = ("bga", "sum", "concat", "ffm", "detail_only", "semantic_only")

SemanticBlock = Literal["ge", "ib"]
SemanticBackbone = Literal["bisenetv2", "mobilenetv2", "shufflenetv2", "resnet18"]
GEExpand = Literal["gather", "depthwise"]
DownDW = Literal["3x3x2", "5x5"]
Aggregation = Literal["bga", "sum", "concat", "ffm", "detail_only", "semantic_only"]
Upsample = Literal["bilinear", "nearest"]
BoosterForm = Literal["single", "double", "up2"]
DropoutKind = Literal["element", "channel"]
BOOSTER_FORMS = ("single", "double", "up2")
# each booster tap's output stride: the "double" and "up2" forms size convs by stride^2.
# On an ImageNet backbone (semantic.backbone) stem, s3, s4 and s5_4 are its last features
# at strides 4, 8, 16 and 32 (the 1x1 conv to 1280 or 1024 included); s5_5 is the
# context embedding on the last one.
TAP_STRIDES = {"stem": 4, "s3": 8, "s4": 16, "s5_4": 32, "s5_5": 32}


_check = check


@dataclass(frozen=True)
class DetailBranchSpec:
    """Plain conv-BN-ReLU stages; the first conv of each stage has stride 2."""

    widths: tuple[int, ...] = (64, 64, 128)
    # conv layers per stage, the stride-2 one included (Table 1: 2, 3, 3)
    depths: tuple[int, ...] = (2, 3, 3)

    def __post_init__(self) -> None:
        normalise_numbers(self)
        _check(len(self.widths) >= 1, "detail.widths", self.widths, "needs at least one stage")
        _check(
            len(self.depths) == len(self.widths),
            "detail.depths",
            self.depths,
            f"needs one layer count per stage ({len(self.widths)})",
        )
        for w in self.widths:
            _check(w > 0, "detail.widths", self.widths, "every width must be > 0")
        for d in self.depths:
            _check(d >= 1, "detail.depths", self.depths, "every stage needs at least 1 layer")


@dataclass(frozen=True)
class SemanticBranchSpec:
    """Stem + three stages of GE (or inverted-bottleneck) layers + context embedding, or
    an ImageNet backbone in place of the stem and stages (Table 6)."""

    # lambda: stem width = ratio x detail S1 width, S3 width = ratio x detail S3 width
    # (Table 3a scales only the stem and S3; S4 and S5 keep their widths below).
    ratio: float = 0.25
    s4_s5_widths: tuple[int, int] = (64, 128)
    # layers per stage S3, S4, S5 (the first of each has stride 2), multiplied by depth_mult
    depths: tuple[int, int, int] = (2, 2, 4)
    exp_ratio: int = 6
    block: SemanticBlock = "ge"
    # "gather": the 3x3 gather conv expands C -> e*C (the paper's text); "depthwise": the
    # gather conv keeps C and a grouped conv with channel multiplier e expands (open code).
    ge_expand: GEExpand = "gather"
    ge_gather_kernel: int = 3
    # the stride-2 GE layer's depthwise part: two 3x3 convs (paper) or one 5x5 (Table 3b)
    ge_down_dw: DownDW = "3x3x2"
    context_embedding: bool = True
    # ReLU after the GE layer's last depthwise conv: both open reimplementations have it
    # (marked "not shown in paper"); the paper's Fig. 5 has none
    ge_dw_act: bool = added_field(False)
    # "bisenetv2": the paper's own stem and GE stages; otherwise an ImageNet backbone
    # (searchspace/backbones.py) whose stride 4/8/16/32 features stand in for the stem,
    # S3, S4 and S5_4 outputs. The context embedding, the detail branch, the aggregation
    # and the heads stay; lambda, the stage widths and depths, e, the GE options and d
    # do not apply (``BiSeNetV2Spec.inapplicable``).
    backbone: SemanticBackbone = added_field("bisenetv2")
    # the backbone's own width multiplier (MobileNetV2: 0.35-1.4, ShuffleNetV2: 0.5-2.0,
    # the published ones); alpha (width_mult) leaves a backbone as published
    backbone_width: float = added_field(1.0)

    def __post_init__(self) -> None:
        normalise_numbers(self)
        _check(
            self.backbone in SEMANTIC_BACKBONES,
            "semantic.backbone",
            self.backbone,
            f"expected one of {', '.join(SEMANTIC_BACKBONES)}",
        )
        widths = BACKBONE_WIDTHS.get(self.backbone)
        if widths is not None:
            _check(
                self.backbone_width in widths,
                "semantic.backbone_width",
                self.backbone_width,
                f"{self.backbone} comes in widths {', '.join(f'{w:g}' for w in widths)}",
            )
        _check(
            isinstance(self.ratio, (int, float)) and 0 < self.ratio <= 4,
            "semantic.ratio",
            self.ratio,
            "lambda must be in (0, 4]",
        )
        for w in self.s4_s5_widths:
            _check(w > 0, "semantic.s4_s5_widths", self.s4_s5_widths, "widths must be > 0")
        for d in self.depths:
            _check(d >= 1, "semantic.depths", self.depths, "every stage needs at least 1 layer")
        _check(
            1 <= self.exp_ratio <= 16, "semantic.exp_ratio", self.exp_ratio, "must be in [1, 16]"
        )
        _check(self.block in ("ge", "ib"), "semantic.block", self.block, "expected 'ge' or 'ib'")
        _check(
            self.ge_expand in ("gather", "depthwise"),
            "semantic.ge_expand",
            self.ge_expand,
            "expected 'gather' or 'depthwise'",
        )
        _check(
            self.ge_gather_kernel in (1, 3),
            "semantic.ge_gather_kernel",
            self.ge_gather_kernel,
            "expected 1 or 3",
        )
        _check(
            self.ge_down_dw in ("3x3x2", "5x5"),
            "semantic.ge_down_dw",
            self.ge_down_dw,
            "expected '3x3x2' or '5x5'",
        )


# Short names for the compact string; the keys are the dotted field paths.
ALIASES: dict[str, str] = {
    "detail.widths": "dw",
    "detail.depths": "dd",
    "semantic.ratio": "lam",
    "semantic.s4_s5_widths": "sw",
    "semantic.depths": "sd",
    "semantic.exp_ratio": "e",
    "semantic.block": "blk",
    "semantic.ge_expand": "gex",
    "semantic.ge_gather_kernel": "gk",
    "semantic.ge_down_dw": "ddw",
    "semantic.context_embedding": "ce",
    "semantic.ge_dw_act": "gact",
    "semantic.backbone": "bb",
    "semantic.backbone_width": "bbw",
    "aggregation": "agg",
    "head_width": "hw",
    "booster_positions": "bst",
    "booster_width": "bw",
    "width_mult": "a",
    "depth_mult": "d",
    "num_classes": "nc",
    "bga_upsample": "bup",
    "bga_out_act": "bact",
    "bga_bias": "bbias",
    "head_dropout": "hdo",
    "booster_form": "bf",
    "booster_dropout": "bdo",
    "dropout_kind": "dok",
}


@dataclass(frozen=True)
class BiSeNetV2Spec(SpecViews):
    """A whole BiSeNet V2 variant. Defaults: the paper's model, head width inferred."""

    KIND: ClassVar[str] = KIND
    PREFIX: ClassVar[str] = "v2"
    ALIASES: ClassVar[Mapping[str, str]] = ALIASES

    detail: DetailBranchSpec = field(default_factory=DetailBranchSpec)
    semantic: SemanticBranchSpec = field(default_factory=SemanticBranchSpec)
    aggregation: Aggregation = "bga"
    # Seg head mid width C_t: the paper gives none. 352 makes the paper-faithful model
    # 21.15 GMACs at 512x1024 (see searchspace/presets.py for the derivation).
    head_width: int = 352
    booster_positions: tuple[str, ...] = ("stem", "s3", "s4", "s5_4")
    booster_width: int = 128
    # alpha scales every channel count (both branches, fusion, heads; an ImageNet backbone
    # keeps its published widths: semantic.backbone_width is its own); see scale_width
    width_mult: float = 1.0
    # d multiplies each semantic stage's layer count; the added layers have stride 1
    depth_mult: float = 1.0
    num_classes: int = 19
    # --- where the open reimplementations differ from the paper (docs/peer-forms.md) ---
    # BGA's x4 upsampling of the semantic gate and of the low branch (CoinCheung: nearest)
    bga_upsample: Upsample = added_field("bilinear")
    # ReLU after BGA's final 3x3 conv-BN (both reimplementations; the paper shows none)
    bga_out_act: bool = added_field(False)
    # a bias on BGA's two pointwise convs (mmsegmentation's DepthwiseSeparableConvModule)
    bga_bias: bool = added_field(False)
    # dropout between the seg head's 3x3 conv and its classifier (both use 0.1)
    head_dropout: float = added_field(0.0)
    # booster head form: "single" 3x3 conv (booster_width) -> 1x1; "double" two 3x3 convs
    # of S^2 channels (S the tap's stride: 16/64/256/1024; mmsegmentation's FCN heads);
    # "up2" 3x3 conv (booster_width) -> nearest x2 -> 3x3 conv (S^2) -> 1x1 (CoinCheung)
    booster_form: BoosterForm = added_field("single")
    booster_dropout: float = added_field(0.0)
    # nn.Dropout ("element", CoinCheung) or nn.Dropout2d ("channel", mmsegmentation)
    dropout_kind: DropoutKind = added_field("element")

    def __post_init__(self) -> None:
        normalise_numbers(self)
        check_dropout(self, ("head_dropout", "booster_dropout"))
        _check(
            self.bga_upsample in ("bilinear", "nearest"),
            "bga_upsample",
            self.bga_upsample,
            "expected 'bilinear' or 'nearest'",
        )
        _check(
            self.booster_form in BOOSTER_FORMS,
            "booster_form",
            self.booster_form,
            f"expected one of {', '.join(BOOSTER_FORMS)}",
        )
        _check(
            self.aggregation in AGGREGATIONS,
            "aggregation",
            self.aggregation,
            f"expected one of {', '.join(AGGREGATIONS)}",
        )
        _check(self.head_width > 0, "head_width", self.head_width, "must be > 0")
        _check(self.num_classes >= 2, "num_classes", self.num_classes, "must be >= 2")
        check_multipliers(self.width_mult, self.depth_mult)
        check_positions("booster_positions", self.booster_positions, BOOSTER_POSITIONS)
        # one set of heads, one spec: the order they are listed in changes nothing
        ordered = tuple(p for p in BOOSTER_POSITIONS if p in self.booster_positions)
        object.__setattr__(self, "booster_positions", ordered)
        if self.booster_positions:
            _check(self.booster_width > 0, "booster_width", self.booster_width, "must be > 0")
        check_applicable(self)
        if "s5_5" in self.booster_positions:
            _check(
                self.semantic.context_embedding,
                "booster_positions",
                "s5_5",
                "s5_5 is the context embedding output; semantic.context_embedding is off",
            )
        resolve(self)  # every width/depth after the multipliers must be positive

    @staticmethod
    def inapplicable(data: dict) -> list[tuple[str, str, object]]:
        """(field, why, the value it must hold) for every field this spec's switches turn
        off; ``data`` is the nested dict form. The one statement of which knob reaches
        the network under which switches: validation, ``replace`` and the search spaces
        all read it, and tests/test_canonical.py proves it against built networks."""
        out: list[tuple[str, str, object]] = []
        agg, sem = data["aggregation"], data["semantic"]
        semantic_fields = [f"semantic.{k}" for k in _SEMANTIC_DEFAULTS]
        if agg == "detail_only":
            why = "when aggregation='detail_only' (there is no semantic branch)"
            out += [(path, why, _SEMANTIC_DEFAULTS[path[9:]]) for path in semantic_fields]
            out.append(("depth_mult", why + "; d scales only semantic stages", 1.0))
            out.append(("booster_positions", why + "; booster heads sit on it", ()))
        else:
            if agg == "semantic_only":
                why = (
                    "when aggregation='semantic_only' (the detail branch is dropped; lambda"
                    " is relative to the default detail widths)"
                )
                out += [(f"detail.{k}", why, v) for k, v in _DETAIL_DEFAULTS.items()]
            if sem["backbone"] != "bisenetv2":
                why = (
                    f"when semantic.backbone={sem['backbone']!r} (an ImageNet backbone"
                    " replaces the stem and the GE stages)"
                )
                out += [(f"semantic.{k}", why, _SEMANTIC_DEFAULTS[k]) for k in _OWN_BRANCH]
                out.append(("depth_mult", why + "; d scales only GE stages", 1.0))
            elif sem["block"] == "ib":
                why = "when semantic.block='ib' (only GE layers have it)"
                out += [(f"semantic.{k}", why, _SEMANTIC_DEFAULTS[k]) for k in _GE_KNOBS]
            elif sem["exp_ratio"] == 1:
                why = "when semantic.exp_ratio=1 (both expansion forms build the same layer)"
                out.append(("semantic.ge_expand", why, _SEMANTIC_DEFAULTS["ge_expand"]))
            if sem["backbone"] not in BACKBONE_WIDTHS:
                why = (
                    f"when semantic.backbone={sem['backbone']!r} (only "
                    f"{' and '.join(BACKBONE_WIDTHS)} have width multipliers)"
                )
                out.append(("semantic.backbone_width", why, 1.0))
        boosters = agg != "detail_only" and bool(data["booster_positions"])
        if not boosters:
            why = "without booster heads"
            out += [(k, why, _V2_DEFAULTS[k]) for k in _BOOSTER_KNOBS]
        elif data["booster_form"] == "double":
            why = "when booster_form='double' (its convs are S^2 wide, S the tap's stride)"
            out.append(("booster_width", why, _V2_DEFAULTS["booster_width"]))
        if agg != "bga":
            why = f"when aggregation={agg!r} (only BGA has it)"
            out += [(k, why, _V2_DEFAULTS[k]) for k in _BGA_KNOBS]
        if data["head_dropout"] == 0 and (not boosters or data["booster_dropout"] == 0):
            why = "without dropout (head_dropout and booster_dropout are 0)"
            out.append(("dropout_kind", why, _V2_DEFAULTS["dropout_kind"]))
        return out

    def deployed(self) -> BiSeNetV2Spec:
        """The network that runs at inference: booster heads and dropout are training-only,
        so every spec that differs from this one only in them times and deploys alike
        (``runners.ablate`` times each deployed network once)."""
        return self.replace(booster_positions=(), head_dropout=0.0)


_DETAIL_DEFAULTS = {"widths": DetailBranchSpec.widths, "depths": DetailBranchSpec.depths}
_SEMANTIC_DEFAULTS = {
    f: getattr(SemanticBranchSpec, f) for f in SemanticBranchSpec.__dataclass_fields__
}
_GE_KNOBS = ("ge_expand", "ge_gather_kernel", "ge_down_dw", "ge_dw_act")
# what an ImageNet backbone replaces: every field of the paper's own branch but the CE
_OWN_BRANCH = ("ratio", "s4_s5_widths", "depths", "exp_ratio", "block", *_GE_KNOBS)
_BOOSTER_KNOBS = ("booster_width", "booster_form", "booster_dropout")
_BGA_KNOBS = ("bga_upsample", "bga_out_act", "bga_bias")
_V2_DEFAULTS = {
    f: getattr(BiSeNetV2Spec, f)
    for f in (*_BOOSTER_KNOBS, *_BGA_KNOBS, "dropout_kind", "head_dropout")
}


def parse_v2_overrides(text: str) -> dict[str, object]:
    return parse_overrides(text, BiSeNetV2Spec, ALIASES)


# --- resolution ------------------------------------------------------------------------


def scale_width(chs: float, alpha: float) -> int:
    """Channels after the width multiplier: nearest integer, at least 1 when positive.

    The V2 paper does not say how it rounds under alpha (its Table 5a sits 1.5-6% above
    plain alpha^2 scaling); nearest-integer rounding is the simplest rule that keeps
    alpha = 1 exact and lambda = 1/16 (4 channels) expressible.
    """
    return math.floor(chs * alpha + 0.5)


def scale_depth(layers: int, d: float) -> int:
    """Layers after the depth multiplier, rounded half up (Table 5b: 8 GE layers -> 8d)."""
    return math.floor(layers * d + 0.5)


@dataclass(frozen=True)
class V2Plan:
    """Explicit numbers for the builder: what every module is constructed with."""

    detail_widths: tuple[int, ...]
    detail_depths: tuple[int, ...]
    stem_width: int
    semantic_widths: tuple[int, int, int]  # S3, S4, S5 (a backbone: strides 8, 16, 32)
    semantic_depths: tuple[int, ...]  # GE stages only: () for an ImageNet backbone
    fusion_width: int
    head_width: int
    booster_width: int
    booster_in_widths: dict[str, int] = field(default_factory=dict)
    # the 3x3 convs of each booster head, in order (one for "single", two otherwise)
    booster_conv_widths: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def has_detail(self) -> bool:
        return bool(self.detail_widths)

    @property
    def has_semantic(self) -> bool:
        return bool(self.semantic_widths)


def resolve(spec: BiSeNetV2Spec) -> V2Plan:
    """Apply lambda, alpha and d; raise SpecError when anything rounds to zero."""
    a, d = spec.width_mult, spec.depth_mult
    det, sem = spec.detail, spec.semantic

    def width(name: str, chs: float) -> int:
        out = scale_width(chs, a)
        if out < 1:
            raise SpecError(f"width_mult={a!r}: {name} ({chs:g} channels) rounds to {out} channels")
        return out

    def depth(name: str, layers: int) -> int:
        out = scale_depth(layers, d)
        if out < 1:
            raise SpecError(f"depth_mult={d!r}: {name} ({layers} layers) rounds to {out} layers")
        return out

    detail_widths = tuple(width(f"detail stage {i + 1}", w) for i, w in enumerate(det.widths))
    depths: tuple[int, ...]
    if sem.backbone != "bisenetv2":
        # the backbone's taps at strides 4, 8, 16, 32, as published (alpha leaves them)
        stem_width, s3, s4, s5 = tap_widths(sem.backbone, sem.backbone_width)
        depths = ()
    else:
        # lambda is relative to the unscaled detail branch: stem ~ S1, S3 ~ the last stage
        stem_width = width("semantic stem", sem.ratio * det.widths[0])
        s3 = width("semantic S3", sem.ratio * det.widths[-1])
        s4 = width("semantic S4", sem.s4_s5_widths[0])
        s5 = width("semantic S5", sem.s4_s5_widths[1])
        depths = tuple(depth(f"semantic stage S{i + 3}", n) for i, n in enumerate(sem.depths))
    head = width("head_width", spec.head_width)
    uses_width = spec.booster_positions and spec.booster_form != "double"
    booster = width("booster_width", spec.booster_width) if uses_width else 0
    fusion = detail_widths[-1] if spec.aggregation != "semantic_only" else s5
    taps = {"stem": stem_width, "s3": s3, "s4": s4, "s5_4": s5, "s5_5": s5}
    conv_widths: dict[str, tuple[int, ...]] = {}
    for p in spec.booster_positions:
        wide = width(f"booster at {p}", TAP_STRIDES[p] ** 2)
        conv_widths[p] = {"single": (booster,), "double": (wide, wide), "up2": (booster, wide)}[
            spec.booster_form
        ]
    has_detail = spec.aggregation != "semantic_only"
    has_semantic = spec.aggregation != "detail_only"
    return V2Plan(
        detail_widths=detail_widths if has_detail else (),
        detail_depths=tuple(det.depths) if has_detail else (),
        stem_width=stem_width if has_semantic else 0,
        semantic_widths=(s3, s4, s5) if has_semantic else (),  # type: ignore[arg-type]
        semantic_depths=depths if has_semantic else (),
        fusion_width=fusion,
        head_width=head,
        booster_width=booster,
        booster_in_widths={p: taps[p] for p in spec.booster_positions},
        booster_conv_widths=conv_widths,
    )


def spec_from_json_dict(data: dict) -> BiSeNetV2Spec:
    """Inverse of ``to_json`` (the envelope with schema, kind and fields)."""
    from searchspace.serialize import SCHEMA_VERSION, from_dict

    if data.get("schema") != SCHEMA_VERSION:
        raise SpecError(f"schema={data.get('schema')!r}: expected {SCHEMA_VERSION}")
    if data.get("kind") != KIND:
        raise SpecError(f"kind={data.get('kind')!r}: expected {KIND!r}")
    return from_dict(BiSeNetV2Spec, data.get("fields", {}))


__all__ = [
    "ALIASES",
    "BOOSTER_POSITIONS",
    "BiSeNetV2Spec",
    "DetailBranchSpec",
    "SemanticBranchSpec",
    "V2Plan",
    "resolve",
    "scale_depth",
    "scale_width",
]
