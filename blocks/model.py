"""The assembled two-branch network and the head shared by the main and booster outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blocks.layers import ConvBN, dropout, resize

HEAD_FORMS = ("single", "double", "up2")


class SegHead(nn.Module):
    """3x3 conv-BN-ReLU(s), optional dropout, 1x1 conv to classes, bilinear upsample.

    ``widths`` are the 3x3 convs' widths; the form says how they are arranged:
    ``single`` conv -> dropout -> classifier (the paper's head); ``double`` conv -> conv2 ->
    dropout -> classifier (mmsegmentation's FCN heads); ``up2`` conv -> dropout ->
    nearest x2 -> conv2 -> classifier (CoinCheung's booster heads). The logits are resized
    to the input's size, which is where the peers' final upsampling also lands.
    """

    def __init__(
        self,
        in_chs: int,
        widths: int | tuple[int, ...],
        num_classes: int,
        form: str = "single",
        drop: float = 0.0,
        drop_kind: str = "element",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        widths = (widths,) if isinstance(widths, int) else tuple(widths)
        if form not in HEAD_FORMS:
            raise ValueError(f"form={form!r}: expected one of {', '.join(HEAD_FORMS)}")
        if len(widths) != (1 if form == "single" else 2):
            raise ValueError(f"widths={widths}: form {form!r} has {len(widths)} convs")
        self.form = form
        self.align_corners = align_corners
        self.conv = ConvBN(in_chs, widths[0], 3)
        self.conv2 = ConvBN(widths[0], widths[1], 3) if len(widths) == 2 else None
        self.drop = dropout(drop, drop_kind)
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.conv(x)
        if self.form == "double":
            x = self.conv2(x)  # type: ignore[misc]
        if self.drop is not None:
            x = self.drop(x)
        if self.form == "up2":
            x = self.conv2(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # type: ignore[misc]
        return resize(self.classifier(x), size, align_corners=self.align_corners)


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
