"""ImageNet backbones that can stand in for V2's Semantic Branch, as numbers.

The V2 paper's Table 6 swaps its own Semantic Branch for ImageNet models (ShuffleNetV2
1.5x, MobileNetV2, ResNet-18). Their layer numbers live here, standard library only, so
that validation, ``searchspace.v2.resolve`` and the builder read one copy; the modules
in ``blocks/backbones.py`` take these numbers as constructor arguments.

The numbers are the published architectures (Sandler et al. 2018, Ma et al. 2018, He et
al. 2016) as torchvision builds them, so a torchvision (or timm) ImageNet file fits:

- MobileNetV2: stem 32, then (expansion t, width c, repeats n, stride s) rows, then a
  1x1 conv to 1280. Widths under a multiplier round to a multiple of 8, never below 90%
  of the exact value; the last conv is ``1280 * max(1, width)``.
- ShuffleNetV2: stem 24 + max-pool, three stages of 4/8/4 units, conv5 to 1024 (2048
  at 2.0x); the stage widths per multiplier are the paper's Table 5.
- ResNet-18: stem 64 + max-pool, four stages of two basic blocks, 64/128/256/512.

A backbone's "feature part" is everything but its final classifier, so MobileNetV2's
320->1280 conv and ShuffleNetV2's conv5 are kept: the semantic branch's output is that
last conv's output at stride 32.
"""

from __future__ import annotations

from dataclasses import dataclass

# "bisenetv2": the paper's own branch (stem, GE stages, context embedding)
SEMANTIC_BACKBONES = ("bisenetv2", "mobilenetv2", "shufflenetv2", "resnet18")
IMAGENET_BACKBONES = SEMANTIC_BACKBONES[1:]
# strides of the four taps every backbone gives: the booster positions stem, s3, s4 and
# s5_4 (and the aggregation's input) read them
TAP_STRIDES = (4, 8, 16, 32)

# (expansion t, width c, repeats n, stride s of the first): torchvision's
# inverted_residual_setting, the paper's Table 2
MOBILENETV2_ROWS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# the published width multipliers (torchvision's and timm's released files use these)
MOBILENETV2_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# stem, stage2, stage3, stage4, conv5 (ShuffleNetV2 paper, Table 5)
SHUFFLENETV2_WIDTHS: dict[float, tuple[int, int, int, int, int]] = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
SHUFFLENETV2_REPEATS = (4, 8, 4)
RESNET18_STEM = 64
RESNET18_WIDTHS = (64, 128, 256, 512)
RESNET18_DEPTHS = (2, 2, 2, 2)
# which backbones take a width multiplier, and the ones they have
BACKBONE_WIDTHS: dict[str, tuple[float, ...]] = {
    "mobilenetv2": MOBILENETV2_WIDTHS,
    "shufflenetv2": tuple(SHUFFLENETV2_WIDTHS),
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: nearest multiple of ``divisor``, at least
    ``divisor``, and never more than 10% below ``value``."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


@dataclass(frozen=True)
class MobileNetV2Plan:
    stem: int
    # one (in, out, stride, expansion) per inverted residual block, in order
    blocks: tuple[tuple[int, int, int, int], ...]
    last: int


def mobilenetv2_plan(width: float) -> MobileNetV2Plan:
    stem = make_divisible(32 * width)
    blocks = []
    chs = stem
    for t, c, n, s in MOBILENETV2_ROWS:
        out = make_divisible(c * width)
        for i in range(n):
            blocks.append((chs, out, s if i == 0 else 1, t))
            chs = out
    return MobileNetV2Plan(stem, tuple(blocks), make_divisible(1280 * max(1.0, width)))


def tap_widths(backbone: str, width: float = 1.0) -> tuple[int, int, int, int]:
    """Channels at strides 4, 8, 16 and 32 (the last: the feature part's output)."""
    if backbone == "mobilenetv2":
        plan = mobilenetv2_plan(width)
        at: dict[int, int] = {}
        stride = 2
        for _in, out, s, _t in plan.blocks:
            stride *= s
            at[stride] = out
        return at[4], at[8], at[16], plan.last
    if backbone == "shufflenetv2":
        stem, s2, s3, _s4, conv5 = SHUFFLENETV2_WIDTHS[width]
        return stem, s2, s3, conv5
    if backbone == "resnet18":
        return RESNET18_WIDTHS  # type: ignore[return-value]
    raise ValueError(f"backbone {backbone!r}: not an ImageNet backbone")


__all__ = [
    "BACKBONE_WIDTHS",
    "IMAGENET_BACKBONES",
    "SEMANTIC_BACKBONES",
    "SHUFFLENETV2_WIDTHS",
    "TAP_STRIDES",
    "MobileNetV2Plan",
    "make_divisible",
    "mobilenetv2_plan",
    "tap_widths",
]
