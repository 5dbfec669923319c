"""ImageNet backbones written out (no torchvision): MobileNetV2, ShuffleNetV2, ResNet-18.

Each is the feature part of the published network (its classifier is not built) and
returns its features at strides 4, 8, 16 and 32, listing their widths in ``out_chs``.
Module and parameter names are torchvision's (``features.3.conv.1.0``, ``stage2.0.branch1``,
``layer1.0.conv1`` ...), so a torchvision ImageNet file loads as it is and other layouts
need only a key map (``blocks/keymaps.py``). The layer numbers come from
``searchspace/backbones.py`` through the builder, as explicit arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

Taps = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _conv_bn_act(
    in_chs: int, out_chs: int, kernel: int, stride: int, groups: int = 1
) -> nn.Sequential:
    """torchvision's Conv2dNormActivation with ReLU6: children 0 (conv), 1 (BN), 2 (act)."""
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2's block: [1x1 expand] -> 3x3 depthwise -> 1x1 linear, residual at stride 1
    when widths match. ``conv`` holds the layers under torchvision's indices."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = in_chs * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_act(in_chs, mid, 1, 1))
        layers += [
            _conv_bn_act(mid, mid, 3, stride, groups=mid),
            nn.Conv2d(mid, out_chs, 1, bias=False),
            nn.BatchNorm2d(out_chs),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """``features`` = stem conv, the inverted residual blocks, the final 1x1 conv."""

    def __init__(
        self,
        stem_chs: int,
        blocks: Sequence[tuple[int, int, int, int]],
        last_chs: int,
        in_chs: int = 3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_act(in_chs, stem_chs, 3, 2)]
        stride, tap_at, widths = 2, {}, {}
        for i, (cin, cout, s, t) in enumerate(blocks, start=1):
            layers.append(InvertedResidual(cin, cout, s, t))
            stride *= s
            tap_at[stride], widths[stride] = i, cout  # the last block at each stride
        layers.append(_conv_bn_act(blocks[-1][1], last_chs, 1, 1))
        self.features = nn.Sequential(*layers)
        # indices into ``features`` after which the stride-4, -8 and -16 taps are read
        self.tap_after = (tap_at[4], tap_at[8], tap_at[16])
        self.out_chs = (widths[4], widths[8], widths[16], last_chs)

    def forward(self, x: torch.Tensor) -> Taps:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.tap_after:
                taps.append(x)
        return taps[0], taps[1], taps[2], x


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: stride 1 splits the channels and transforms one half; stride 2
    runs both branches on all of them. Then the halves are shuffled together."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride={stride}: expected 1 or 2")
        half = out_chs // 2
        if stride == 1 and in_chs != out_chs:
            raise ValueError(f"in_chs={in_chs}, out_chs={out_chs}: a stride-1 unit keeps widths")
        self.stride = stride
        self.branch1 = (
            nn.Sequential(
                nn.Conv2d(in_chs, in_chs, 3, stride, 1, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, half, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
            if stride == 2
            else nn.Sequential()
        )
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_chs if stride == 2 else half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            keep, change = x.chunk(2, dim=1)
            out = torch.cat((keep, self.branch2(change)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """conv1 + max-pool (stride 4), stage2-4 (strides 8, 16, 32), conv5 (1x1)."""

    def __init__(
        self, widths: Sequence[int], repeats: Sequence[int] = (4, 8, 4), in_chs: int = 3
    ) -> None:
        super().__init__()
        if len(widths) != 5 or len(repeats) != 3:
            raise ValueError(f"widths={tuple(widths)}, repeats={tuple(repeats)}: need 5 and 3")
        stem, *stage_chs, last = widths
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chs, stem, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        chs = stem
        stages = []
        for out, n in zip(stage_chs, repeats, strict=True):
            units = [ShuffleUnit(chs, out, 2)] + [ShuffleUnit(out, out, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*units))
            chs = out
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(
            nn.Conv2d(chs, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU(inplace=True)
        )
        self.out_chs = (stem, stage_chs[0], stage_chs[1], last)

    def forward(self, x: torch.Tensor) -> Taps:
        x4 = self.maxpool(self.conv1(x))
        x8 = self.stage2(x4)
        x16 = self.stage3(x8)
        return x4, x8, x16, self.conv5(self.stage4(x16))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity or 1x1 conv-BN shortcut, ReLU."""

    # each BN reads its conv's output directly: BN folding may fuse them
    FOLD_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + shortcut)


class ResNet18(nn.Module):
    """The standard ResNet-18 trunk (no classifier); stages at 1/4 .. 1/32. V1's context
    path uses it (with its own multipliers) as well as V2's semantic branch."""

    FOLD_PAIRS = (("conv1", "bn1"),)

    def __init__(
        self,
        in_chs: int = 3,
        stem_chs: int = 64,
        widths: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(depths) != 4:
            raise ValueError(f"widths={tuple(widths)}, depths={tuple(depths)}: need 4 stages")
        self.conv1 = nn.Conv2d(in_chs, stem_chs, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        chs = stem_chs
        stages = []
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = [BasicBlock(chs, width, 1 if i == 0 else 2)]
            blocks += [BasicBlock(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            chs = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_chs = tuple(widths)

    def forward(self, x: torch.Tensor) -> Taps:
        x4 = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        x8 = self.layer2(x4)
        x16 = self.layer3(x8)
        return x4, x8, x16, self.layer4(x16)
