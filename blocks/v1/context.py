"""BiSeNet V1's Context Path: backbone, global context, ARMs and the U-shape down to 1/8."""

from __future__ import annotations

import torch
from torch import nn

from blocks.layers import ConvBN, resize


class AttentionRefinement(nn.Module):
    """ARM: lateral conv-BN-ReLU, then GAP -> 1x1 conv -> BN -> sigmoid -> channel multiply.

    The lateral conv is the authors' (3x3); the paper's figure shows the attention alone,
    but the U-shape adds maps of different widths, so each needs one. ``attention=False``
    keeps the lateral conv: Table 3's rows without ARM differ only by the attention.
    """

    def __init__(
        self, in_chs: int, out_chs: int, lateral_kernel: int = 3, attention: bool = True
    ) -> None:
        super().__init__()
        self.conv = ConvBN(in_chs, out_chs, lateral_kernel)
        self.attention: nn.Module | None = (
            nn.Sequential(
                nn.AdaptiveAvgPool2d(1), ConvBN(out_chs, out_chs, 1, act=False), nn.Sigmoid()
            )
            if attention
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.attention is None else x * self.attention(x)


class GlobalContext(nn.Module):
    """GAP of the 1/32 feature -> 1x1 conv-BN-ReLU; the caller broadcast-adds it."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvBN(in_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class ContextPath(nn.Module):
    """The authors' U-shape down to 1/8; returns every tap an aux head may use.

    ``cp32``: ARM(1/32) + global context, upsampled to 1/16 and refined; ``cp16``:
    ARM(1/16) + cp32, upsampled to 1/8 and refined; ``out`` is cp16. Upsampling goes to the
    next feature's explicit size, so inputs that are not multiples of 32 work; its mode
    is bilinear (the authors: with ``align_corners``) or nearest (CoinCheung, mmseg).
    """

    def __init__(
        self,
        backbone: nn.Module,
        tap_chs: tuple[int, int, int],
        out_chs: int,
        arm: bool = True,
        lateral_kernel: int = 3,
        global_context: bool = True,
        refine: bool = True,
        upsample: str = "bilinear",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"upsample={upsample!r}: expected 'bilinear' or 'nearest'")
        self.upsample = upsample
        self.align_corners = align_corners
        _, c16, c32 = tap_chs
        self.backbone = backbone
        self.global_context = GlobalContext(c32, out_chs) if global_context else None
        self.arm32 = AttentionRefinement(c32, out_chs, lateral_kernel, attention=arm)
        self.arm16 = AttentionRefinement(c16, out_chs, lateral_kernel, attention=arm)
        self.refine32: nn.Module = ConvBN(out_chs, out_chs, 3) if refine else nn.Identity()
        self.refine16: nn.Module = ConvBN(out_chs, out_chs, 3) if refine else nn.Identity()
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x8, x16, x32 = self.backbone(x)[-3:]  # ResNet-18 also gives its 1/4 tap
        top = self.arm32(x32)
        if self.global_context is not None:
            top = top + self.global_context(x32)  # 1x1 map: the add broadcasts it
        up, ac = self.upsample, self.align_corners
        cp32 = self.refine32(resize(top, x16.shape[-2:], up, ac))
        cp16 = self.refine16(resize(self.arm16(x16) + cp32, x8.shape[-2:], up, ac))
        return {"cp32": cp32, "cp16": cp16, "out": cp16}
