"""The Semantic Branch: stem, GE layers (or inverted bottlenecks) and context embedding."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from blocks.layers import ConvBN

# (in_chs, out_chs, stride) -> module; the builder binds every other option.
BlockFactory = Callable[[int, int, int], nn.Module]


class StemBlock(nn.Module):
    """Stride 4 cheaply: conv s2, then [1x1 -> 3x3 s2] beside a max-pool, concat, 3x3 fuse."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        half = max(1, out_chs // 2)
        self.conv = ConvBN(in_chs, out_chs, 3, stride=2)
        self.left = nn.Sequential(ConvBN(out_chs, half, 1), ConvBN(half, out_chs, 3, stride=2))
        self.right = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.fuse = ConvBN(2 * out_chs, out_chs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class GELayer(nn.Module):
    """Gather-and-Expansion layer (paper Fig. 5), stride 1 or 2.

    ``expand="gather"``: the k x k gather conv maps C_in -> e*C_in and the depthwise convs
    act on e*C_in channels (the paper's text). ``expand="depthwise"``: the gather conv keeps
    C_in and a grouped 3x3 conv with channel multiplier e expands (open reimplementations).
    At stride 2 the depthwise part is two 3x3 convs (the first strided) or one 5x5.
    ``dw_act`` adds a ReLU after the last depthwise conv, as both open reimplementations do.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        exp_ratio: int = 6,
        expand: str = "gather",
        gather_kernel: int = 3,
        down_dw: str = "3x3x2",
        dw_act: bool = False,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride={stride}: expected 1 or 2")
        if expand not in ("gather", "depthwise"):
            raise ValueError(f"expand={expand!r}: expected 'gather' or 'depthwise'")
        if down_dw not in ("3x3x2", "5x5"):
            raise ValueError(f"down_dw={down_dw!r}: expected '3x3x2' or '5x5'")
        mid = in_chs * exp_ratio
        gather_out = mid if expand == "gather" else in_chs
        self.gather = ConvBN(in_chs, gather_out, gather_kernel)
        dw: list[nn.Module] = []
        if stride == 1:
            dw.append(ConvBN(gather_out, mid, 3, groups=gather_out, act=dw_act))
        elif down_dw == "5x5":
            dw.append(ConvBN(gather_out, mid, 5, stride=2, groups=gather_out, act=dw_act))
        else:
            dw.append(ConvBN(gather_out, mid, 3, stride=2, groups=gather_out, act=False))
            dw.append(ConvBN(mid, mid, 3, groups=mid, act=dw_act))
        self.dw = nn.Sequential(*dw)
        self.project = ConvBN(mid, out_chs, 1, act=False)
        self.shortcut: nn.Module
        if stride == 1 and in_chs == out_chs:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                ConvBN(in_chs, in_chs, 3, stride=stride, groups=in_chs, act=False),
                ConvBN(in_chs, out_chs, 1, act=False),
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.dw(self.gather(x)))
        return self.act(out + self.shortcut(x))


class InvertedBottleneck(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (strided), 1x1 linear projection."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, exp_ratio: int = 6) -> None:
        super().__init__()
        mid = in_chs * exp_ratio
        layers: list[nn.Module] = []
        if exp_ratio != 1:
            layers.append(ConvBN(in_chs, mid, 1))
        layers.append(ConvBN(mid, mid, 3, stride=stride, groups=mid))
        layers.append(ConvBN(mid, out_chs, 1, act=False))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


class ContextEmbedding(nn.Module):
    """Global average pool -> BN -> 1x1 conv-BN-ReLU -> broadcast add -> 3x3 conv-BN-ReLU."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(chs)
        self.gap_conv = ConvBN(chs, chs, 1)
        self.out_conv = ConvBN(chs, chs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.gap_conv(self.bn(x.mean(dim=(2, 3), keepdim=True)))
        return self.out_conv(x + ctx)


class SemanticBranch(nn.Module):
    """Returns every tap a booster head may use: stem, s3, s4, s5_4, s5_5 and out."""

    def __init__(
        self,
        in_chs: int,
        stem_chs: int,
        stage_chs: Sequence[int],
        stage_depths: Sequence[int],
        make_block: BlockFactory,
        context_embedding: bool = True,
    ) -> None:
        super().__init__()
        self.stem = StemBlock(in_chs, stem_chs)
        stages = []
        chs = stem_chs
        for out_chs, depth in zip(stage_chs, stage_depths, strict=True):
            layers = [make_block(chs, out_chs, 2)]
            layers += [make_block(out_chs, out_chs, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            chs = out_chs
        self.s3, self.s4, self.s5 = stages
        self.ce = ContextEmbedding(chs) if context_embedding else None
        self.out_chs = chs

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stem = self.stem(x)
        s3 = self.s3(stem)
        s4 = self.s4(s3)
        s5_4 = self.s5(s4)
        feats = {"stem": stem, "s3": s3, "s4": s4, "s5_4": s5_4}
        if self.ce is not None:
            feats["s5_5"] = self.ce(s5_4)
        feats["out"] = feats.get("s5_5", s5_4)
        return feats


class BackboneBranch(nn.Module):
    """An ImageNet backbone as the Semantic Branch (V2 paper, Table 6).

    The backbone's taps at strides 4, 8, 16 and 32 take the places of the stem, S3, S4
    and S5_4 outputs, so every booster position and the aggregation read the same
    strides as on the paper's own branch; the optional context embedding on the last tap
    is S5_5. The backbone stays under ``backbone.`` with its own parameter names, which
    is where a pretrained file is loaded.
    """

    def __init__(self, backbone: nn.Module, context_embedding: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        chs = backbone.out_chs[-1]
        self.ce = ContextEmbedding(chs) if context_embedding else None
        self.out_chs = chs

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x4, x8, x16, x32 = self.backbone(x)
        feats = {"stem": x4, "s3": x8, "s4": x16, "s5_4": x32}
        if self.ce is not None:
            feats["s5_5"] = self.ce(x32)
        feats["out"] = feats.get("s5_5", x32)
        return feats
