"""BiSeNet V1 as data: a frozen spec tree and its resolution into explicit widths.

Mirrors ``searchspace/v2.py``: every component the V1 paper ablates (Table 3: spatial
path, fusion, global context, ARM) is a field, and ``resolve`` expands a spec into the
numbers the builder constructs modules with. Defaults are the ``bisenetv1_x39`` preset.

Where the paper is silent the defaults follow the authors' code (TorchSeg), because its
parameter counts are the only exact calibration there is: with aux heads excluded, the
defaults give 1,541,963 (Xception39) and 12,894,163 (ResNet-18) parameters, the code's
1.542 M and 12.894 M. The choices that fix those counts, each a field: the ARM and the
U-shape's lateral conv is 3x3 (``context.lateral_kernel``), the main head's mid width is
64 and the aux heads' 256, the FFM is 256 wide with no channel reduction and no biases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from searchspace.checks import check, check_dropout, check_multipliers, check_positions
from searchspace.errors import SpecError
from searchspace.serialize import (
    SpecViews,
    added_field,
    check_applicable,
    normalise_numbers,
    parse_overrides,
)
from searchspace.v2 import scale_depth, scale_width

KIND = "bisenetv1"
BACKBONES = ("xception39", "resnet18")
SPATIAL_FORMS = ("authors", "paper")
FUSIONS = ("ffm", "sum", "concat", "bga", "cp_only")
# Aux heads sit on the U-shape's refined outputs (as in the authors' code): "cp32" is the
# branch that starts at the 1/32 feature (after its upsample it is at 1/16), "cp16" the
# one that starts at the 1/16 feature (at 1/8; it is also the context path's output).
AUX_POSITIONS = ("cp32", "cp16")
FFM_REDUCTIONS = (1, 2, 4, 8, 16)

Backbone = Literal["xception39", "resnet18"]
SpatialForm = Literal["authors", "paper"]
Fusion = Literal["ffm", "sum", "concat", "bga", "cp_only"]
Upsample = Literal["bilinear", "nearest"]
FFMAttention = Literal["mlp", "conv_bn", "conv_bn_relu"]
FFM_ATTENTIONS = ("mlp", "conv_bn", "conv_bn_relu")
AuxOrder = Literal["cp32_first", "cp16_first"]
DropoutKind = Literal["element", "channel"]

# Backbone trunks as (stem width, per-stage widths, per-stage depths). Xception39's widths
# are its blocks' mid widths (outputs are 4x: 64, 128, 256); ResNet-18's are its stages.
BACKBONE_SHAPES: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "xception39": (8, (16, 32, 64), (4, 8, 4)),
    "resnet18": (64, (64, 128, 256, 512), (2, 2, 2, 2)),
}
XCEPTION_EXPANSION = 4


_check = check


@dataclass(frozen=True)
class SpatialPathSpec:
    """Three stride-2 conv-BN-ReLU layers to 1/8, in the paper's or the authors' form.

    ``paper``: 3x3 s2 -> widths[0], 3x3 s2 -> widths[1], 3x3 s2 -> out_width.
    ``authors``: 7x7 s2 -> widths[0], 3x3 s2 -> widths[1], 3x3 s2 -> widths[1], then a
    1x1 conv-BN-ReLU -> out_width. Both forms use every field, so switching the form
    alone is a valid ablation with the same output width.
    """

    form: SpatialForm = "authors"
    widths: tuple[int, int] = (64, 64)
    out_width: int = 128

    def __post_init__(self) -> None:
        normalise_numbers(self)
        _check(
            self.form in SPATIAL_FORMS,
            "spatial.form",
            self.form,
            f"expected one of {', '.join(SPATIAL_FORMS)}",
        )
        for w in self.widths:
            _check(w > 0, "spatial.widths", self.widths, "every width must be > 0")
        _check(self.out_width > 0, "spatial.out_width", self.out_width, "must be > 0")


@dataclass(frozen=True)
class ContextPathSpec:
    """Backbone + global context at 1/32 + ARMs on 1/32 and 1/16, U-shape down to 1/8."""

    backbone: Backbone = "xception39"
    # channel attention of the ARM (off: the lateral conv alone, Table 3's rows without ARM)
    arm: bool = True
    # The conv-BN-ReLU that brings each tapped stage to out_width before the attention. The
    # paper's ARM has none, but the U-shape sums 1/32 and 1/16 maps of different widths, so
    # some conv is needed; the authors' is 3x3 (their parameter count needs it), 1 is cheap.
    lateral_kernel: int = 3
    # GAP of the 1/32 feature -> 1x1 conv-BN-ReLU, broadcast-added to the 1/32 ARM output
    global_context: bool = True
    # the authors' 3x3 conv-BN-ReLU after each U-shape upsample
    refine: bool = True
    out_width: int = 128
    # the U-shape's x2 upsampling: the authors' code is bilinear (with align_corners, see
    # BiSeNetV1Spec.align_corners), CoinCheung's and mmsegmentation's nearest
    upsample: Upsample = added_field("bilinear")

    def __post_init__(self) -> None:
        normalise_numbers(self)
        _check(
            self.upsample in ("bilinear", "nearest"),
            "context.upsample",
            self.upsample,
            "expected 'bilinear' or 'nearest'",
        )
        _check(
            self.backbone in BACKBONES,
            "context.backbone",
            self.backbone,
            f"expected one of {', '.join(BACKBONES)}",
        )
        _check(
            self.lateral_kernel in (1, 3),
            "context.lateral_kernel",
            self.lateral_kernel,
            "expected 1 or 3",
        )
        _check(self.out_width > 0, "context.out_width", self.out_width, "must be > 0")


# Short names for the compact string; the keys are the dotted field paths.
ALIASES: dict[str, str] = {
    "spatial.form": "spf",
    "spatial.widths": "spw",
    "spatial.out_width": "spo",
    "context.backbone": "bb",
    "context.arm": "arm",
    "context.lateral_kernel": "lk",
    "context.global_context": "gc",
    "context.refine": "ref",
    "context.out_width": "cpo",
    "context.upsample": "up",
    "fusion": "fus",
    "fusion_width": "fw",
    "ffm_reduction": "red",
    "head_width": "hw",
    "aux_positions": "aux",
    "aux_width": "aw",
    "width_mult": "a",
    "depth_mult": "d",
    "num_classes": "nc",
    "align_corners": "ac",
    "ffm_attention": "fatt",
    "head_dropout": "hdo",
    "aux_dropout": "ado",
    "dropout_kind": "dok",
    "aux_order": "aord",
}


@dataclass(frozen=True)
class BiSeNetV1Spec(SpecViews):
    """A whole BiSeNet V1 variant. Defaults: Xception39 as in the authors' code."""

    KIND: ClassVar[str] = KIND
    PREFIX: ClassVar[str] = "v1"
    ALIASES: ClassVar[Mapping[str, str]] = ALIASES

    spatial: SpatialPathSpec = field(default_factory=SpatialPathSpec)
    context: ContextPathSpec = field(default_factory=ContextPathSpec)
    # "cp_only" drops the spatial path: the context path's 1/8 output goes to the head
    # (Table 3's first row). "sum", "concat" and "bga" are the V2 fusion modules.
    fusion: Fusion = "ffm"
    # FFM output width; the authors' FFM keeps its 256 (= 128 + 128) input channels
    fusion_width: int = 256
    # FFM attention bottleneck: fusion_width // reduction (the authors' code: 1)
    ffm_reduction: int = 1
    # main head 3x3 conv width (the authors' code: 64; the paper gives none)
    head_width: int = 64
    aux_positions: tuple[str, ...] = ("cp32", "cp16")
    # aux heads' 3x3 conv width (the authors' code: 256); training only
    aux_width: int = 256
    # alpha scales every channel count, backbone included; see searchspace.v2.scale_width
    width_mult: float = 1.0
    # multiplies each backbone stage's block count (added blocks have stride 1)
    depth_mult: float = 1.0
    num_classes: int = 19
    # --- where the reimplementations differ from the authors' code (docs/peer-forms.md) ---
    # align_corners of the context path's and the heads' bilinear resizes (authors: True)
    align_corners: bool = added_field(False)
    # FFM attention after global pooling: "mlp" 1x1 conv -> ReLU -> 1x1 conv (paper and
    # authors), "conv_bn" 1x1 conv-BN (CoinCheung), "conv_bn_relu" (mmsegmentation); then
    # a sigmoid in every form
    ffm_attention: FFMAttention = added_field("mlp")
    head_dropout: float = added_field(0.0)
    aux_dropout: float = added_field(0.0)
    dropout_kind: DropoutKind = added_field("element")
    # the order of the aux outputs in training (the authors: cp32 first; the peers: cp16)
    aux_order: AuxOrder = added_field("cp32_first")

    def __post_init__(self) -> None:
        normalise_numbers(self)
        check_dropout(self, ("head_dropout", "aux_dropout"))
        _check(
            self.ffm_attention in FFM_ATTENTIONS,
            "ffm_attention",
            self.ffm_attention,
            f"expected one of {', '.join(FFM_ATTENTIONS)}",
        )
        _check(
            self.aux_order in ("cp32_first", "cp16_first"),
            "aux_order",
            self.aux_order,
            "expected 'cp32_first' or 'cp16_first'",
        )
        _check(
            self.fusion in FUSIONS,
            "fusion",
            self.fusion,
            f"expected one of {', '.join(FUSIONS)}",
        )
        _check(self.fusion_width > 0, "fusion_width", self.fusion_width, "must be > 0")
        # powers of two only: any two of them give different bottleneck widths (while
        # fusion_width // r >= 1), so no two reductions build the same FFM
        _check(
            self.ffm_reduction in FFM_REDUCTIONS,
            "ffm_reduction",
            self.ffm_reduction,
            f"expected one of {', '.join(map(str, FFM_REDUCTIONS))}",
        )
        _check(self.head_width > 0, "head_width", self.head_width, "must be > 0")
        _check(self.num_classes >= 2, "num_classes", self.num_classes, "must be >= 2")
        check_multipliers(self.width_mult, self.depth_mult)
        check_positions("aux_positions", self.aux_positions, AUX_POSITIONS)
        ordered = tuple(p for p in AUX_POSITIONS if p in self.aux_positions)
        object.__setattr__(self, "aux_positions", ordered)
        if self.aux_positions:
            _check(self.aux_width > 0, "aux_width", self.aux_width, "must be > 0")
        check_applicable(self)
        resolve(self)  # every width/depth after the multipliers must be positive

    @staticmethod
    def inapplicable(data: dict) -> list[tuple[str, str, object]]:
        """(field, why, the value it must hold) for every field the switches turn off;
        see ``BiSeNetV2Spec.inapplicable``."""
        out: list[tuple[str, str, object]] = []
        fusion = data["fusion"]
        if fusion == "cp_only":
            why = "when fusion='cp_only' (there is no spatial path and no fusion module)"
            out += [(f"spatial.{k}", why, v) for k, v in _SPATIAL_DEFAULTS.items()]
            out.append(("fusion_width", why, _V1_DEFAULTS["fusion_width"]))
        if fusion != "ffm":
            why = f"when fusion={fusion!r} (only the FFM has an attention bottleneck)"
            out.append(("ffm_reduction", why, _V1_DEFAULTS["ffm_reduction"]))
            why = f"when fusion={fusion!r} (only the FFM has this attention)"
            out.append(("ffm_attention", why, _V1_DEFAULTS["ffm_attention"]))
        elif data["ffm_attention"] != "mlp":
            why = f"when ffm_attention={data['ffm_attention']!r} (only the MLP has a bottleneck)"
            out.append(("ffm_reduction", why, _V1_DEFAULTS["ffm_reduction"]))
        aux = data["aux_positions"]
        if not aux:
            why = "without auxiliary heads"
            out += [(k, why, _V1_DEFAULTS[k]) for k in ("aux_width", "aux_dropout")]
        if len(aux) < 2:
            out.append(("aux_order", "with fewer than two aux heads", _V1_DEFAULTS["aux_order"]))
        if data["head_dropout"] == 0 and (not aux or data["aux_dropout"] == 0):
            why = "without dropout (head_dropout and aux_dropout are 0)"
            out.append(("dropout_kind", why, _V1_DEFAULTS["dropout_kind"]))
        return out

    def deployed(self) -> BiSeNetV1Spec:
        """The network that runs at inference: aux heads and dropout are training-only
        (see ``BiSeNetV2Spec.deployed``)."""
        return self.replace(aux_positions=(), head_dropout=0.0)


_SPATIAL_DEFAULTS = {f: getattr(SpatialPathSpec, f) for f in SpatialPathSpec.__dataclass_fields__}
_V1_DEFAULTS = {
    f: getattr(BiSeNetV1Spec, f)
    for f in (
        "fusion_width",
        "ffm_reduction",
        "ffm_attention",
        "aux_width",
        "aux_dropout",
        "aux_order",
        "dropout_kind",
    )
}


def parse_v1_overrides(text: str) -> dict[str, object]:
    return parse_overrides(text, BiSeNetV1Spec, ALIASES)


# --- resolution ------------------------------------------------------------------------


@dataclass(frozen=True)
class V1Plan:
    """Explicit numbers for the builder: what every module is constructed with."""

    spatial_widths: tuple[int, ...]  # () when fusion drops the spatial path
    spatial_out: int
    backbone: str
    backbone_stem: int
    backbone_widths: tuple[int, ...]  # Xception39: mid widths; ResNet-18: stage widths
    backbone_depths: tuple[int, ...]
    backbone_taps: tuple[int, int, int]  # output widths at 1/8, 1/16, 1/32
    context_width: int
    fusion_width: int  # the head's input: the context width when cp_only
    head_width: int
    aux_width: int
    aux_in_widths: dict[str, int] = field(default_factory=dict)

    @property
    def has_spatial(self) -> bool:
        return bool(self.spatial_widths)


def resolve(spec: BiSeNetV1Spec) -> V1Plan:
    """Apply alpha and d; raise SpecError when anything rounds to zero."""
    a, d = spec.width_mult, spec.depth_mult

    def width(name: str, chs: float) -> int:
        out = scale_width(chs, a)
        if out < 1:
            raise SpecError(f"width_mult={a!r}: {name} ({chs:g} channels) rounds to {out} channels")
        return out

    def depth(name: str, blocks: int) -> int:
        out = scale_depth(blocks, d)
        if out < 1:
            raise SpecError(f"depth_mult={d!r}: {name} ({blocks} blocks) rounds to {out} blocks")
        return out

    name = spec.context.backbone
    stem, stage_widths, stage_depths = BACKBONE_SHAPES[name]
    bb_widths = tuple(width(f"{name} stage {i + 1}", w) for i, w in enumerate(stage_widths))
    bb_depths = tuple(depth(f"{name} stage {i + 1}", n) for i, n in enumerate(stage_depths))
    if name == "xception39":
        taps = tuple(XCEPTION_EXPANSION * w for w in bb_widths)
    else:
        taps = bb_widths[1:]  # layer2..layer4 sit at 1/8, 1/16, 1/32
    has_spatial = spec.fusion != "cp_only"
    spatial_out = width("spatial.out_width", spec.spatial.out_width)
    cp = width("context.out_width", spec.context.out_width)
    fusion = width("fusion_width", spec.fusion_width)
    if has_spatial and spec.fusion == "ffm" and fusion // spec.ffm_reduction < 1:
        raise SpecError(
            f"ffm_reduction={spec.ffm_reduction}: the FFM bottleneck of a {fusion}-channel"
            " fusion would have no channels"
        )
    return V1Plan(
        spatial_widths=(
            tuple(width("spatial.widths", w) for w in spec.spatial.widths) if has_spatial else ()
        ),
        spatial_out=spatial_out if has_spatial else 0,
        backbone=name,
        backbone_stem=width(f"{name} stem", stem),
        backbone_widths=bb_widths,
        backbone_depths=bb_depths,
        backbone_taps=taps,  # type: ignore[arg-type]
        context_width=cp,
        fusion_width=fusion if has_spatial else cp,
        head_width=width("head_width", spec.head_width),
        aux_width=width("aux_width", spec.aux_width) if spec.aux_positions else 0,
        aux_in_widths={p: cp for p in spec.aux_positions},
    )


def spec_from_json_dict(data: dict) -> BiSeNetV1Spec:
    """Inverse of ``to_json`` (the envelope with schema, kind and fields)."""
    from searchspace.serialize import SCHEMA_VERSION, from_dict

    if data.get("schema") != SCHEMA_VERSION:
        raise SpecError(f"schema={data.get('schema')!r}: expected {SCHEMA_VERSION}")
    if data.get("kind") != KIND:
        raise SpecError(f"kind={data.get('kind')!r}: expected {KIND!r}")
    return from_dict(BiSeNetV1Spec, data.get("fields", {}))


__all__ = [
    "ALIASES",
    "AUX_POSITIONS",
    "BACKBONES",
    "FUSIONS",
    "BiSeNetV1Spec",
    "ContextPathSpec",
    "SpatialPathSpec",
    "V1Plan",
    "resolve",
]
