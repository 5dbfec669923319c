"""Ways to merge the detail (1/8) and semantic (1/32) features into one 1/8 map.

Every fusion has the same call: ``forward(detail, semantic, size_1_8)``; a branch the
variant drops arrives as None. Sum and concat end in one 3x3 conv-BN, as BGA does, which
is what reproduces the paper's Table 2 complexity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blocks.layers import ConvBN, resize


class BilateralGuidedAggregation(nn.Module):
    """BGA (paper Fig. 6): each branch gates the other at its own resolution, then sum.

    The semantic input is normally at 1/32 (V2). A finer one (V1's context path ends at
    1/8) is average-pooled to the 1/32 grid for the low branch, so BGA can fuse V1 too;
    for V2 inputs nothing changes.

    The open reimplementations' forms: ``upsample="nearest"`` (CoinCheung's x4),
    ``out_act`` (a ReLU after the output conv-BN; both) and ``bias`` on the two pointwise
    convs (mmsegmentation).
    """

    def __init__(
        self,
        detail_chs: int,
        semantic_chs: int,
        out_chs: int,
        upsample: str = "bilinear",
        out_act: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"upsample={upsample!r}: expected 'bilinear' or 'nearest'")
        c = detail_chs
        self.upsample = upsample
        self.detail_keep = nn.Sequential(
            ConvBN(c, c, 3, groups=c, act=False), nn.Conv2d(c, c, 1, bias=bias)
        )
        self.detail_down = nn.Sequential(
            ConvBN(c, c, 3, stride=2, act=False),
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.semantic_up = ConvBN(semantic_chs, c, 3, act=False)
        self.semantic_keep = nn.Sequential(
            ConvBN(semantic_chs, semantic_chs, 3, groups=semantic_chs, act=False),
            nn.Conv2d(semantic_chs, c, 1, bias=bias),
        )
        self.out = ConvBN(c, out_chs, 3, act=out_act)

    def forward(
        self, detail: torch.Tensor | None, semantic: torch.Tensor | None, size: tuple[int, int]
    ) -> torch.Tensor:
        assert detail is not None and semantic is not None
        up = self.upsample
        gate = resize(self.semantic_up(semantic), size, up)
        high = self.detail_keep(detail) * torch.sigmoid(gate)
        down = self.detail_down(detail)
        if semantic.shape[-2:] != down.shape[-2:]:
            # V1's context path ends at 1/8: pool it to the 1/32 grid the low branch gates
            semantic = F.adaptive_avg_pool2d(semantic, down.shape[-2:])
        low = down * torch.sigmoid(self.semantic_keep(semantic))
        return self.out(high + resize(low, size, up))


class SumFusion(nn.Module):
    """Upsample semantic, add to detail (1x1-projected if widths differ), 3x3 conv-BN."""

    def __init__(self, detail_chs: int, semantic_chs: int, out_chs: int) -> None:
        super().__init__()
        self.proj = (
            nn.Identity()
            if semantic_chs == detail_chs
            else ConvBN(semantic_chs, detail_chs, 1, act=False)
        )
        self.out = ConvBN(detail_chs, out_chs, 3, act=False)

    def forward(
        self, detail: torch.Tensor | None, semantic: torch.Tensor | None, size: tuple[int, int]
    ) -> torch.Tensor:
        assert detail is not None and semantic is not None
        return self.out(detail + resize(self.proj(semantic), size))


class ConcatFusion(nn.Module):
    """Upsample semantic, concatenate with detail, 3x3 conv-BN back to ``out_chs``."""

    def __init__(self, detail_chs: int, semantic_chs: int, out_chs: int) -> None:
        super().__init__()
        self.out = ConvBN(detail_chs + semantic_chs, out_chs, 3, act=False)

    def forward(
        self, detail: torch.Tensor | None, semantic: torch.Tensor | None, size: tuple[int, int]
    ) -> torch.Tensor:
        assert detail is not None and semantic is not None
        return self.out(torch.cat([detail, resize(semantic, size)], dim=1))


class FeatureFusionModule(nn.Module):
    """BiSeNet V1's FFM: concat, 1x1 conv-BN-ReLU, channel attention, ``x + x * att``.

    ``attention="mlp"``: GAP -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid (the paper's
    Fig. 2c). The paper gives no bottleneck; the authors' code uses none (``reduction=1``)
    and no conv biases, which their parameter counts (1.542 M / 12.894 M) need. Open
    reimplementations often use ``reduction=4``. ``"conv_bn"``: GAP -> 1x1 conv-BN ->
    sigmoid (CoinCheung); ``"conv_bn_relu"``: the same with a ReLU before the sigmoid, so
    the attention is never below 0.5 (mmsegmentation).
    """

    def __init__(
        self,
        detail_chs: int,
        semantic_chs: int,
        out_chs: int,
        reduction: int = 1,
        bias: bool = False,
        attention: str = "mlp",
    ) -> None:
        super().__init__()
        self.fuse = ConvBN(detail_chs + semantic_chs, out_chs, 1)
        if attention == "mlp":
            mid = max(1, out_chs // reduction)
            self.attention = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(out_chs, mid, 1, bias=bias),
                nn.ReLU(inplace=True),
                nn.Conv2d(mid, out_chs, 1, bias=bias),
                nn.Sigmoid(),
            )
        elif attention in ("conv_bn", "conv_bn_relu"):
            self.attention = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                ConvBN(out_chs, out_chs, 1, act=attention == "conv_bn_relu"),
                nn.Sigmoid(),
            )
        else:
            raise ValueError(f"attention={attention!r}: expected mlp, conv_bn or conv_bn_relu")

    def forward(
        self, detail: torch.Tensor | None, semantic: torch.Tensor | None, size: tuple[int, int]
    ) -> torch.Tensor:
        assert detail is not None and semantic is not None
        x = self.fuse(torch.cat([detail, resize(semantic, size)], dim=1))
        return x + x * self.attention(x)


class DetailOnly(nn.Module):
    """No fusion: the detail features go straight to the head."""

    def forward(
        self, detail: torch.Tensor | None, semantic: torch.Tensor | None, size: tuple[int, int]
    ) -> torch.Tensor:
        assert detail is not None
        return detail


class SemanticOnly(nn.Module):
    """No detail branch: the 1/32 semantic features are upsampled to 1/8 for the head."""

    def forward(
        self, detail: torch.Tensor | None, semantic: torch.Tensor | None, size: tuple[int, int]
    ) -> torch.Tensor:
        assert semantic is not None
        return resize(semantic, size)
