"""The assembled two-branch network and the head shared by the main and booster outputs."""

from __future__ import annotations

import torch
from torch import nn

from blocks.layers import ConvBN, resize


class SegHead(nn.Module):
    """3x3 conv-BN-ReLU to ``mid_chs``, 1x1 conv to classes, bilinear upsample to input."""

    def __init__(self, in_chs: int, mid_chs: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBN(in_chs, mid_chs, 3)
        self.classifier = nn.Conv2d(mid_chs, num_classes, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return resize(self.classifier(self.conv(x)), size)


class TwoBranchSegNet(nn.Module):
    """detail (1/8) + semantic (1/32) -> fusion -> head; booster heads in training only.

    ``train()`` mode returns a tuple ``(main_logits, *booster_logits)`` in the order of
    ``booster_positions``; ``eval()`` mode returns the main logits alone, so the booster
    heads cost nothing at inference. Logits always come out at the input's size.
    """

    def __init__(
        self,
        detail: nn.Module | None,
        semantic: nn.Module | None,
        fusion: nn.Module,
        head: nn.Module,
        boosters: dict[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.detail = detail
        self.semantic = semantic
        self.fusion = fusion
        self.head = head
        self.boosters = nn.ModuleDict(boosters or {})
        self.booster_positions = tuple(self.boosters.keys())

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        # every stride-2 layer pads so that its output is ceil(in / 2): 1/8 is ceil(H / 8)
        size_8 = ((size[0] + 7) // 8, (size[1] + 7) // 8)
        detail = self.detail(x) if self.detail is not None else None
        feats = self.semantic(x) if self.semantic is not None else {}
        fused = self.fusion(detail, feats.get("out"), size_8)
        logits = self.head(fused, size)
        if not self.training:
            return logits
        aux = [head(feats[pos], size) for pos, head in self.boosters.items()]
        return (logits, *aux)

    def inference_parameters(self) -> int:
        """Parameters that exist at inference: the booster heads excluded."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("boosters."))


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return resize(logits, size)
