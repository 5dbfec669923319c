"""Small building pieces shared by every block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Sequential):
    """conv (no bias) + BN, optionally followed by ReLU: the paper's 'conv' everywhere.

    Kept as a Sequential of named children (conv, bn, act) so BN folding and per-part
    profiling can find the pairs without knowing the block.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs,
            out_chs,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()


def resize(
    x: torch.Tensor,
    size: tuple[int, int] | torch.Size,
    mode: str = "bilinear",
    align_corners: bool = False,
) -> torch.Tensor:
    """Resize to an explicit size (not a scale factor), so odd input sizes work.

    Where the size is an exact multiple, this equals the peers' ``scale_factor`` forms
    (nearest picks floor(i / s), bilinear samples the same points), which is what makes
    their networks and ours one function.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def dropout(p: float, kind: str = "element") -> nn.Module | None:
    """nn.Dropout (element-wise) or nn.Dropout2d (whole channels); None when ``p`` is 0."""
    if p <= 0:
        return None
    if kind not in ("element", "channel"):
        raise ValueError(f"dropout kind {kind!r}: expected 'element' or 'channel'")
    return nn.Dropout(p) if kind == "element" else nn.Dropout2d(p)


def kaiming_init(module: nn.Module) -> None:
    """The V2 paper trains from scratch with Kaiming normal init."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
