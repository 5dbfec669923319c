"""Weight files users have, as data: their key names mapped onto this toolkit's modules.

A ``KeyMap`` is a list of rules ``(pattern, target)``: ``pattern`` is a regular expression
that must match a file key's module path in full (the key without its last part, the
parameter or buffer name), ``target`` the toolkit module path, a format string over the
pattern's named groups; a group named in ``lookups`` is translated through it first.
Every key must match exactly one rule (``blocks.weights.rename_key`` applies them).

``LAYOUTS`` are the ImageNet (and CoinCheung backbone) files ``--pretrained`` takes:
torchvision's ResNet-18, MobileNetV2 and ShuffleNetV2, timm's MobileNetV2, the BiSeNet
authors' Xception39 and CoinCheung's BiSeNetV2 backbone file. A file's layout is told
from its keys (the layouts whose rules place every key), never from its name. The rules
were written from the libraries' published module structures; the tests check them
against key lists with the libraries' exact names and shapes
(tests/fixtures/pretrained_keys/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CoinCheung/BiSeNet's Cityscapes statistics (RGB in [0, 1]), docs/peer-forms.md section 4
COINCHEUNG_MEAN = (0.3257, 0.3690, 0.3223)
COINCHEUNG_STD = (0.2112, 0.2148, 0.2115)


class KeyMap(TypedDict):
    rules: list[tuple[str, str]]
    lookups: dict[str, dict[str, str]]


_CB = {"0": "conv", "1": "bn"}  # a raw nn.Sequential(conv, bn[, relu])
_GE_CC = r"segment\.(?P<stage>S3|S4|S5_4)\.(?P<i>\d+)"

# CoinCheung's BiSeNetV2 detail and segment branches: the names their full-model
# checkpoints (runners/convert/keymaps.py adds the fusion and heads) and their ImageNet
# backbone file (``{"detail": ..., "segment": ...}``) share
COINCHEUNG_V2_BRANCHES: KeyMap = {
    "rules": [
        (r"detail\.S(?P<k>[123])\.(?P<j>\d+)\.(?P<p>conv|bn)", "detail.stages.{k}.{j}.{p}"),
        (r"segment\.S1S2\.(?P<m>conv|fuse)\.(?P<p>conv|bn)", "semantic.stem.{m}.{p}"),
        (r"segment\.S1S2\.left\.(?P<j>[01])\.(?P<p>conv|bn)", "semantic.stem.left.{j}.{p}"),
        (_GE_CC + r"\.conv1\.(?P<p>conv|bn)", "semantic.{stage}.{i}.gather.{p}"),
        (_GE_CC + r"\.dwconv1?\.(?P<cb>[01])", "semantic.{stage}.{i}.dw.0.{cb}"),
        (_GE_CC + r"\.dwconv2\.(?P<cb>[01])", "semantic.{stage}.{i}.dw.1.{cb}"),
        (_GE_CC + r"\.conv2\.(?P<cb>[01])", "semantic.{stage}.{i}.project.{cb}"),
        (_GE_CC + r"\.shortcut\.(?P<cb>[01])", "semantic.{stage}.{i}.shortcut.0.{cb}"),
        (_GE_CC + r"\.shortcut\.(?P<cb2>[23])", "semantic.{stage}.{i}.shortcut.1.{cb2}"),
        (r"segment\.S5_5\.bn", "semantic.ce.bn"),
        (r"segment\.S5_5\.conv_gap\.(?P<p>conv|bn)", "semantic.ce.gap_conv.{p}"),
        (r"segment\.S5_5\.conv_last\.(?P<p>conv|bn)", "semantic.ce.out_conv.{p}"),
    ],
    "lookups": {
        "k": {"1": "0", "2": "1", "3": "2"},
        "stage": {"S3": "s3", "S4": "s4", "S5_4": "s5"},
        "cb": _CB,
        "cb2": {"2": "conv", "3": "bn"},
    },
}


def _same(pattern: str) -> KeyMap:
    """A layout whose names are already ours (torchvision's): one rule, the identity."""
    return {"rules": [(f"(?P<m>{pattern})", "{m}")], "lookups": {}}


# timm's MobileNetV2 groups its 17 blocks in 7 stages of 1, 2, 3, 4, 3, 3, 1 (at every
# width): "stage.index" -> torchvision's flat index into ``features`` (the stem is 0)
_TIMM_MNV2_BLOCK = {
    f"{s}.{i}": str(1 + sum((1, 2, 3, 4, 3, 3, 1)[:s]) + i)
    for s, n in enumerate((1, 2, 3, 4, 3, 3, 1))
    for i in range(n)
}
_TIMM_IR = r"blocks\.(?P<b>[1-6]\.\d)"

TIMM_MOBILENETV2: KeyMap = {
    "rules": [
        (r"conv_stem", "features.0.0"),
        (r"bn1", "features.0.1"),
        (r"blocks\.0\.0\.conv_dw", "features.1.conv.0.0"),
        (r"blocks\.0\.0\.bn1", "features.1.conv.0.1"),
        (r"blocks\.0\.0\.conv_pw", "features.1.conv.1"),
        (r"blocks\.0\.0\.bn2", "features.1.conv.2"),
        (_TIMM_IR + r"\.conv_pw", "features.{b}.conv.0.0"),
        (_TIMM_IR + r"\.bn1", "features.{b}.conv.0.1"),
        (_TIMM_IR + r"\.conv_dw", "features.{b}.conv.1.0"),
        (_TIMM_IR + r"\.bn2", "features.{b}.conv.1.1"),
        (_TIMM_IR + r"\.conv_pwl", "features.{b}.conv.2"),
        (_TIMM_IR + r"\.bn3", "features.{b}.conv.3"),
        (r"conv_head", "features.18.0"),
        (r"bn2", "features.18.1"),
    ],
    "lookups": {"b": _TIMM_MNV2_BLOCK},
}


@dataclass(frozen=True)
class Layout:
    """One kind of weights file: whose it is, what it fits, where it loads."""

    name: str
    source: str  # said in messages and records: "torchvision's ImageNet ResNet-18"
    backbone: str  # the backbone it fits (semantic.backbone, context.backbone)
    keymap: KeyMap
    # module paths (regex, in full) of the parts a segmentation network does not use
    dropped: str = ""
    # where the renamed keys load: a submodule of the model ("" the model itself) ...
    into: str = "semantic.backbone"
    # ... and which of its keys the file must give ("": every one)
    covers: tuple[str, ...] = ()
    # the input normalisation the weights were trained with (RGB in [0, 1])
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "torchvision_resnet18",
            "torchvision's ImageNet ResNet-18",
            "resnet18",
            _same(r"conv1|bn1|layer[1-4]\.\d+\.(?:conv[12]|bn[12]|downsample\.[01])"),
            dropped="fc",
        ),
        Layout(
            "torchvision_mobilenetv2",
            "torchvision's ImageNet MobileNetV2",
            "mobilenetv2",
            _same(r"features\.\d+\.(?:conv\.)?\d+(?:\.\d+)?"),
            dropped=r"classifier\.1",
        ),
        Layout(
            "timm_mobilenetv2",
            "timm's ImageNet MobileNetV2",
            "mobilenetv2",
            TIMM_MOBILENETV2,
            dropped="classifier",
        ),
        Layout(
            "torchvision_shufflenetv2",
            "torchvision's ImageNet ShuffleNetV2",
            "shufflenetv2",
            _same(r"conv1\.[01]|stage[234]\.\d+\.branch[12]\.\d+|conv5\.[01]"),
            dropped="fc",
        ),
        Layout(
            "authors_xception39",
            "the BiSeNet authors' ImageNet Xception39",
            "xception39",
            _same(
                r"conv1\.(?:conv|bn)|layer[1-3]\.\d+\.(?:proj|residual_branch\.[0-2])"
                r"\.(?:conv1|point_wise_cbr\.(?:conv|bn))"
            ),
            dropped="fc",
        ),
        Layout(
            "coincheung_bisenetv2",
            "CoinCheung/BiSeNet's BiSeNetV2 backbone file (detail and segment branches)",
            "bisenetv2",
            COINCHEUNG_V2_BRANCHES,
            into="",
            covers=("detail.", "semantic."),
            mean=COINCHEUNG_MEAN,
            std=COINCHEUNG_STD,
        ),
    )
}
