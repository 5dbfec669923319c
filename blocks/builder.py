"""The one place that reads specs: spec -> plan (searchspace) -> modules (blocks)."""

from __future__ import annotations

from functools import partial

from torch import nn

from blocks.aggregation import (
    BilateralGuidedAggregation,
    ConcatFusion,
    DetailOnly,
    FeatureFusionModule,
    SemanticOnly,
    SumFusion,
)
from blocks.detail import DetailBranch
from blocks.layers import kaiming_init
from blocks.model import SegHead, TwoBranchSegNet
from blocks.semantic import BlockFactory, GELayer, InvertedBottleneck, SemanticBranch
from searchspace.errors import SpecError
from searchspace.v2 import BiSeNetV2Spec, resolve

IN_CHS = 3

FUSIONS: dict[str, type[nn.Module]] = {
    "bga": BilateralGuidedAggregation,
    "sum": SumFusion,
    "concat": ConcatFusion,
    "ffm": FeatureFusionModule,
}


def _semantic_block(spec: BiSeNetV2Spec) -> BlockFactory:
    sem = spec.semantic
    if sem.block == "ib":
        return lambda i, o, s: InvertedBottleneck(i, o, stride=s, exp_ratio=sem.exp_ratio)
    make = partial(
        GELayer,
        exp_ratio=sem.exp_ratio,
        expand=sem.ge_expand,
        gather_kernel=sem.ge_gather_kernel,
        down_dw=sem.ge_down_dw,
    )
    return lambda i, o, s: make(i, o, stride=s)


def build_v2(spec: BiSeNetV2Spec) -> TwoBranchSegNet:
    plan = resolve(spec)
    detail = (
        DetailBranch(IN_CHS, plan.detail_widths, plan.detail_depths) if plan.has_detail else None
    )
    semantic = (
        SemanticBranch(
            IN_CHS,
            plan.stem_width,
            plan.semantic_widths,
            plan.semantic_depths,
            _semantic_block(spec),
            context_embedding=spec.semantic.context_embedding,
        )
        if plan.has_semantic
        else None
    )
    fusion: nn.Module
    if spec.aggregation == "detail_only":
        fusion = DetailOnly()
    elif spec.aggregation == "semantic_only":
        fusion = SemanticOnly()
    else:
        fusion = FUSIONS[spec.aggregation](
            plan.detail_widths[-1], plan.semantic_widths[-1], plan.fusion_width
        )
    head = SegHead(plan.fusion_width, plan.head_width, spec.num_classes)
    boosters = {
        pos: SegHead(chs, plan.booster_width, spec.num_classes)
        for pos, chs in plan.booster_in_widths.items()
    }
    model = TwoBranchSegNet(detail, semantic, fusion, head, boosters)
    kaiming_init(model)
    return model


def build_model(spec: object) -> nn.Module:
    """Build any supported spec into a freshly initialised ``nn.Module``."""
    if isinstance(spec, BiSeNetV2Spec):
        return build_v2(spec)
    raise SpecError(f"spec of type {type(spec).__name__}: no builder for it")
