"""BiSeNet V1's Spatial Path: three stride-2 conv-BN-ReLU layers keep detail at 1/8."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from blocks.layers import ConvBN


class SpatialPath(nn.Module):
    """``form="paper"``: three 3x3 stride-2 layers, the last one to ``out_chs``.

    ``form="authors"`` (the authors' code): 7x7 s2 -> widths[0], 3x3 s2 -> widths[1],
    3x3 s2 -> widths[1], then a 1x1 conv-BN-ReLU -> ``out_chs``. The 7x7 layer costs more
    than the rest of the path together; it is the main MAC difference between the forms.
    """

    def __init__(
        self, in_chs: int, widths: Sequence[int], out_chs: int, form: str = "authors"
    ) -> None:
        super().__init__()
        if form not in ("paper", "authors"):
            raise ValueError(f"form={form!r}: expected 'paper' or 'authors'")
        if len(widths) != 2:
            raise ValueError(f"widths={tuple(widths)}: expected the first two layers' widths")
        w0, w1 = widths
        layers: list[nn.Module]
        if form == "paper":
            layers = [
                ConvBN(in_chs, w0, 3, stride=2),
                ConvBN(w0, w1, 3, stride=2),
                ConvBN(w1, out_chs, 3, stride=2),
            ]
        else:
            layers = [
                ConvBN(in_chs, w0, 7, stride=2),
                ConvBN(w0, w1, 3, stride=2),
                ConvBN(w1, w1, 3, stride=2),
                ConvBN(w1, out_chs, 1),
            ]
        self.layers = nn.Sequential(*layers)
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
