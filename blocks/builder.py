"""The one place that reads specs: spec -> plan (searchspace) -> modules (blocks).

``build_model`` dispatches on the spec type: BiSeNet V2 and BiSeNet V1 specs;
``build_real`` is the same network with seeded weights, in eval mode, on the CPU.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from blocks.aggregation import (
    BilateralGuidedAggregation,
    ConcatFusion,
    DetailOnly,
    FeatureFusionModule,
    SemanticOnly,
    SumFusion,
)
from blocks.backbones import MobileNetV2, ResNet18, ShuffleNetV2
from blocks.detail import DetailBranch
from blocks.layers import kaiming_init
from blocks.model import SegHead, TwoBranchSegNet
from blocks.semantic import (
    BackboneBranch,
    BlockFactory,
    GELayer,
    InvertedBottleneck,
    SemanticBranch,
)
from blocks.v1 import ContextPath, SpatialPath, Xception39
from searchspace import backbones
from searchspace.errors import SpecError
from searchspace.v1 import XCEPTION_EXPANSION, BiSeNetV1Spec, V1Plan
from searchspace.v1 import resolve as resolve_v1
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
        dw_act=sem.ge_dw_act,
    )
    return lambda i, o, s: make(i, o, stride=s)


def imagenet_backbone(name: str, width: float = 1.0) -> nn.Module:
    """An ImageNet backbone's feature part, with torchvision's parameter names."""
    if name == "mobilenetv2":
        mb = backbones.mobilenetv2_plan(width)
        return MobileNetV2(mb.stem, mb.blocks, mb.last, IN_CHS)
    if name == "shufflenetv2":
        widths = backbones.SHUFFLENETV2_WIDTHS[width]
        return ShuffleNetV2(widths, backbones.SHUFFLENETV2_REPEATS, IN_CHS)
    if name == "resnet18":
        bb = backbones
        return ResNet18(IN_CHS, bb.RESNET18_STEM, bb.RESNET18_WIDTHS, bb.RESNET18_DEPTHS)
    raise SpecError(f"semantic.backbone={name!r}: not an ImageNet backbone")


def _semantic_branch(spec: BiSeNetV2Spec) -> nn.Module:
    sem, plan = spec.semantic, resolve(spec)
    if sem.backbone != "bisenetv2":
        backbone = imagenet_backbone(sem.backbone, sem.backbone_width)
        return BackboneBranch(backbone, context_embedding=sem.context_embedding)
    return SemanticBranch(
        IN_CHS,
        plan.stem_width,
        plan.semantic_widths,
        plan.semantic_depths,
        _semantic_block(spec),
        context_embedding=sem.context_embedding,
    )


def build_v2(spec: BiSeNetV2Spec) -> TwoBranchSegNet:
    plan = resolve(spec)
    detail = (
        DetailBranch(IN_CHS, plan.detail_widths, plan.detail_depths) if plan.has_detail else None
    )
    semantic = _semantic_branch(spec) if plan.has_semantic else None
    fusion: nn.Module
    if spec.aggregation == "detail_only":
        fusion = DetailOnly()
    elif spec.aggregation == "semantic_only":
        fusion = SemanticOnly()
    elif spec.aggregation == "bga":
        fusion = BilateralGuidedAggregation(
            plan.detail_widths[-1],
            plan.semantic_widths[-1],
            plan.fusion_width,
            upsample=spec.bga_upsample,
            out_act=spec.bga_out_act,
            bias=spec.bga_bias,
        )
    else:
        fusion = FUSIONS[spec.aggregation](
            plan.detail_widths[-1], plan.semantic_widths[-1], plan.fusion_width
        )
    kind = spec.dropout_kind
    head = SegHead(
        plan.fusion_width, plan.head_width, spec.num_classes, drop=spec.head_dropout, drop_kind=kind
    )
    boosters = {
        pos: SegHead(
            chs,
            plan.booster_conv_widths[pos],
            spec.num_classes,
            form=spec.booster_form,
            drop=spec.booster_dropout,
            drop_kind=kind,
        )
        for pos, chs in plan.booster_in_widths.items()
    }
    model = TwoBranchSegNet(detail, semantic, fusion, head, boosters)
    kaiming_init(model)
    return model


def _v1_backbone(plan: V1Plan) -> nn.Module:
    if plan.backbone == "xception39":
        widths, depths = plan.backbone_widths, plan.backbone_depths
        return Xception39(IN_CHS, plan.backbone_stem, widths, depths, XCEPTION_EXPANSION)
    return ResNet18(IN_CHS, plan.backbone_stem, plan.backbone_widths, plan.backbone_depths)


def build_v1(spec: BiSeNetV1Spec) -> TwoBranchSegNet:
    """V1 on the V2 frame: spatial path as ``detail``, context path as ``semantic``.

    Sharing ``TwoBranchSegNet`` gives V1 the same output convention (train: main + aux
    logits; eval: main logits at input size) and keeps its aux heads under ``boosters.``,
    which is what parameter counts at inference leave out.
    """
    plan = resolve_v1(spec)
    ctx = spec.context
    spatial = (
        SpatialPath(IN_CHS, plan.spatial_widths, plan.spatial_out, form=spec.spatial.form)
        if plan.has_spatial
        else None
    )
    context = ContextPath(
        _v1_backbone(plan),
        plan.backbone_taps,
        plan.context_width,
        arm=ctx.arm,
        lateral_kernel=ctx.lateral_kernel,
        global_context=ctx.global_context,
        refine=ctx.refine,
        upsample=ctx.upsample,
        align_corners=spec.align_corners,
    )
    fusion: nn.Module
    if spec.fusion == "cp_only":
        fusion = SemanticOnly()
    elif spec.fusion == "ffm":
        fusion = FeatureFusionModule(
            plan.spatial_out,
            plan.context_width,
            plan.fusion_width,
            reduction=spec.ffm_reduction,
            attention=spec.ffm_attention,
        )
    else:
        fusion = FUSIONS[spec.fusion](plan.spatial_out, plan.context_width, plan.fusion_width)
    kind, ac = spec.dropout_kind, spec.align_corners
    head = SegHead(
        plan.fusion_width,
        plan.head_width,
        spec.num_classes,
        drop=spec.head_dropout,
        drop_kind=kind,
        align_corners=ac,
    )
    positions = list(plan.aux_in_widths)
    if spec.aux_order == "cp16_first":
        positions.reverse()  # the dict's order is the order of the training outputs
    aux = {
        pos: SegHead(
            plan.aux_in_widths[pos],
            plan.aux_width,
            spec.num_classes,
            drop=spec.aux_dropout,
            drop_kind=kind,
            align_corners=ac,
        )
        for pos in positions
    }
    model = TwoBranchSegNet(spatial, context, fusion, head, aux)
    kaiming_init(model)
    return model


def build_model(spec: object) -> nn.Module:
    """Build any supported spec into a freshly initialised ``nn.Module``."""
    if isinstance(spec, BiSeNetV2Spec):
        return build_v2(spec)
    if isinstance(spec, BiSeNetV1Spec):
        return build_v1(spec)
    raise SpecError(f"spec of type {type(spec).__name__}: no builder for it")


def build_real(spec: object, seed: int = 0) -> nn.Module:
    """A CPU model in eval mode with seeded weights (real ones, unlike a meta-device
    build), leaving the caller's global RNG state alone: what profiling, export and
    re-timing use when they have no checkpoint."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec).eval()
