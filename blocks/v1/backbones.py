"""Xception39, V1's small context-path backbone (ResNet-18 is in ``blocks/backbones.py``,
which V2's semantic branch shares).

It returns its features at 1/8, 1/16 and 1/32 and lists their widths in ``out_chs``.
Parameter names are the BiSeNet authors' (``conv1.conv``, ``layer1.0.proj.conv1`` ...),
so ``blocks.weights.load_pretrained`` loads their file as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from blocks.layers import ConvBN


class SeparableConvBN(nn.Module):
    """3x3 depthwise conv (no BN, as in the authors' code), 1x1 conv-BN(-ReLU)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, in_chs, 3, stride, 1, groups=in_chs, bias=False)
        self.point_wise_cbr = ConvBN(in_chs, out_chs, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_wise_cbr(self.conv1(x))


class XceptionBlock(nn.Module):
    """Residual block of three separable convs: in -> mid -> mid -> expansion * mid."""

    def __init__(self, in_chs: int, mid_chs: int, stride: int = 1, expansion: int = 4) -> None:
        super().__init__()
        out_chs = mid_chs * expansion
        # The authors project only at a stage's first (strided) block; a projection is also
        # needed whenever widths differ, which happens only under unusual multipliers.
        self.proj: nn.Module | None = (
            SeparableConvBN(in_chs, out_chs, stride, act=False)
            if stride != 1 or in_chs != out_chs
            else None
        )
        self.residual_branch = nn.Sequential(
            SeparableConvBN(in_chs, mid_chs, stride),
            SeparableConvBN(mid_chs, mid_chs),
            SeparableConvBN(mid_chs, out_chs, act=False),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.proj(x) if self.proj is not None else x
        return self.relu(shortcut + self.residual_branch(x))


class Xception39(nn.Module):
    """The BiSeNet authors' Xception39: conv s2 + max-pool s2, three stride-2 stages.

    Defaults: stem 8, mid widths 16/32/64 (outputs 64/128/256), 4/8/4 blocks; about
    0.30 M parameters and 0.186 GMACs at 640x360.
    """

    def __init__(
        self,
        in_chs: int = 3,
        stem_chs: int = 8,
        mid_chs: Sequence[int] = (16, 32, 64),
        depths: Sequence[int] = (4, 8, 4),
        expansion: int = 4,
    ) -> None:
        super().__init__()
        if len(mid_chs) != 3 or len(depths) != 3:
            raise ValueError(f"mid_chs={tuple(mid_chs)}, depths={tuple(depths)}: need 3 stages")
        self.conv1 = ConvBN(in_chs, stem_chs, 3, stride=2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        chs = stem_chs
        stages = []
        for mid, depth in zip(mid_chs, depths, strict=True):
            blocks = [XceptionBlock(chs, mid, 2, expansion)]
            chs = mid * expansion
            blocks += [XceptionBlock(chs, mid, 1, expansion) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.out_chs = tuple(m * expansion for m in mid_chs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x8 = self.layer1(self.maxpool(self.conv1(x)))
        x16 = self.layer2(x8)
        return x8, x16, self.layer3(x16)
