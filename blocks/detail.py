"""The Detail Branch: wide, shallow conv-BN-ReLU stages that keep spatial detail at 1/8."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from blocks.layers import ConvBN


class DetailBranch(nn.Module):
    """Stage i: one stride-2 3x3 conv to ``widths[i]``, then ``depths[i] - 1`` 3x3 convs."""

    def __init__(self, in_chs: int, widths: Sequence[int], depths: Sequence[int]) -> None:
        super().__init__()
        stages = []
        chs = in_chs
        for width, depth in zip(widths, depths, strict=True):
            layers = [ConvBN(chs, width, 3, stride=2)]
            layers += [ConvBN(width, width, 3) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            chs = width
        self.stages = nn.Sequential(*stages)
        self.out_chs = chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)
