"""The peers' state-dict names mapped onto this toolkit's, as data.

The rules for CoinCheung's V2 detail and semantic branches live in ``blocks/keymaps.py``
(their ImageNet backbone file uses the same names); these maps add fusion and heads.

Written from the peers' published module structure (docs/peer-forms.md, section 3, with
the files and commits read): CoinCheung/BiSeNet ``lib/models/bisenetv{1,2}.py`` and
mmsegmentation's ``BiSeNetV1``/``BiSeNetV2`` backbones with their FCN heads.

Each map is a list of rules ``(pattern, target)``: ``pattern`` is a regular expression
that must match a peer key's module path in full (the key without its last part, the
parameter or buffer name), ``target`` is the toolkit module path, a format string over
the pattern's named groups. A group whose name is in the map's ``lookups`` is translated
through it first (CoinCheung's 1-based ``S1`` is the toolkit's ``stages.0``). Every peer
key must match exactly one rule; ``runners.convert.core`` checks that, and the tests
check every rule against the peers' exact key lists and shapes.
"""

from __future__ import annotations

from blocks.keymaps import (
    COINCHEUNG_MEAN,
    COINCHEUNG_STD,
    COINCHEUNG_V2_BRANCHES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    KeyMap,
)

_CB = {"0": "conv", "1": "bn"}  # a raw nn.Sequential(conv, bn[, relu])
_GE_MM = r"backbone\.semantic\.(?P<stage>stage2|stage3|stage4)\.(?P<i>\d+)"
_BGA_MM = r"backbone\.bga"
_CP_MM = r"backbone\.context_path"

COINCHEUNG_V2: KeyMap = {
    "rules": [
        *COINCHEUNG_V2_BRANCHES["rules"],
        (r"bga\.left1\.(?P<cb>[01])", "fusion.detail_keep.0.{cb}"),
        (r"bga\.left1\.2", "fusion.detail_keep.1"),
        (r"bga\.left2\.(?P<cb>[01])", "fusion.detail_down.0.{cb}"),
        (r"bga\.right1\.(?P<cb>[01])", "fusion.semantic_up.{cb}"),
        (r"bga\.right2\.(?P<cb>[01])", "fusion.semantic_keep.0.{cb}"),
        (r"bga\.right2\.2", "fusion.semantic_keep.1"),
        (r"bga\.conv\.(?P<cb>[01])", "fusion.out.{cb}"),
        (r"head\.conv\.(?P<p>conv|bn)", "head.conv.{p}"),
        (r"head\.conv_out\.1", "head.classifier"),
        (r"(?P<aux>aux2|aux3|aux4|aux5_4)\.conv\.(?P<p>conv|bn)", "boosters.{aux}.conv.{p}"),
        (
            r"(?P<aux>aux2|aux3|aux4|aux5_4)\.conv_out\.0\.1\.(?P<p>conv|bn)",
            "boosters.{aux}.conv2.{p}",
        ),
        (r"(?P<aux>aux2|aux3|aux4|aux5_4)\.conv_out\.1", "boosters.{aux}.classifier"),
    ],
    "lookups": {
        **COINCHEUNG_V2_BRANCHES["lookups"],
        "aux": {"aux2": "stem", "aux3": "s3", "aux4": "s4", "aux5_4": "s5_4"},
    },
}

MMSEG_V2: KeyMap = {
    "rules": [
        (
            r"backbone\.detail\.detail_branch\.(?P<k>\d)\.(?P<j>\d+)\.(?P<p>conv|bn)",
            "detail.stages.{k}.{j}.{p}",
        ),
        (r"backbone\.semantic\.stage1\.conv_first\.(?P<p>conv|bn)", "semantic.stem.conv.{p}"),
        (
            r"backbone\.semantic\.stage1\.convs\.(?P<j>[01])\.(?P<p>conv|bn)",
            "semantic.stem.left.{j}.{p}",
        ),
        (r"backbone\.semantic\.stage1\.fuse_last\.(?P<p>conv|bn)", "semantic.stem.fuse.{p}"),
        (_GE_MM + r"\.conv1\.(?P<p>conv|bn)", "semantic.{stage}.{i}.gather.{p}"),
        (_GE_MM + r"\.dwconv\.(?P<j>[01])\.(?P<p>conv|bn)", "semantic.{stage}.{i}.dw.{j}.{p}"),
        (_GE_MM + r"\.conv2\.0\.(?P<p>conv|bn)", "semantic.{stage}.{i}.project.{p}"),
        (
            _GE_MM + r"\.shortcut\.0\.depthwise_conv\.(?P<p>conv|bn)",
            "semantic.{stage}.{i}.shortcut.0.{p}",
        ),
        (
            _GE_MM + r"\.shortcut\.0\.pointwise_conv\.(?P<p>conv|bn)",
            "semantic.{stage}.{i}.shortcut.1.{p}",
        ),
        (r"backbone\.semantic\.stage4_CEBlock\.gap\.1", "semantic.ce.bn"),
        (
            r"backbone\.semantic\.stage4_CEBlock\.conv_gap\.(?P<p>conv|bn)",
            "semantic.ce.gap_conv.{p}",
        ),
        (
            r"backbone\.semantic\.stage4_CEBlock\.conv_last\.(?P<p>conv|bn)",
            "semantic.ce.out_conv.{p}",
        ),
        (
            _BGA_MM + r"\.detail_dwconv\.0\.depthwise_conv\.(?P<p>conv|bn)",
            "fusion.detail_keep.0.{p}",
        ),
        (_BGA_MM + r"\.detail_dwconv\.0\.pointwise_conv\.conv", "fusion.detail_keep.1"),
        (_BGA_MM + r"\.detail_down\.0\.(?P<p>conv|bn)", "fusion.detail_down.0.{p}"),
        (_BGA_MM + r"\.semantic_conv\.0\.(?P<p>conv|bn)", "fusion.semantic_up.{p}"),
        (
            _BGA_MM + r"\.semantic_dwconv\.0\.depthwise_conv\.(?P<p>conv|bn)",
            "fusion.semantic_keep.0.{p}",
        ),
        (_BGA_MM + r"\.semantic_dwconv\.0\.pointwise_conv\.conv", "fusion.semantic_keep.1"),
        (_BGA_MM + r"\.conv\.(?P<p>conv|bn)", "fusion.out.{p}"),
        (r"decode_head\.convs\.0\.(?P<p>conv|bn)", "head.conv.{p}"),
        (r"decode_head\.conv_seg", "head.classifier"),
        (
            r"auxiliary_head\.(?P<aux>[0-3])\.convs\.(?P<c>[01])\.(?P<p>conv|bn)",
            "boosters.{aux}.{c}.{p}",
        ),
        (r"auxiliary_head\.(?P<aux>[0-3])\.conv_seg", "boosters.{aux}.classifier"),
    ],
    "lookups": {
        "stage": {"stage2": "s3", "stage3": "s4", "stage4": "s5"},
        # the auxiliary_head list follows the backbone's out_indices 1..4
        "aux": {"0": "stem", "1": "s3", "2": "s4", "3": "s5_4"},
        "c": {"0": "conv", "1": "conv2"},
    },
}

COINCHEUNG_V1: KeyMap = {
    "rules": [
        (r"cp\.resnet\.(?P<rest>.+)", "semantic.backbone.{rest}"),
        (r"cp\.arm(?P<n>16|32)\.conv\.(?P<p>conv|bn)", "semantic.arm{n}.conv.{p}"),
        (r"cp\.arm(?P<n>16|32)\.conv_atten", "semantic.arm{n}.attention.1.conv"),
        (r"cp\.arm(?P<n>16|32)\.bn_atten", "semantic.arm{n}.attention.1.bn"),
        (r"cp\.conv_head(?P<n>16|32)\.(?P<p>conv|bn)", "semantic.refine{n}.{p}"),
        (r"cp\.conv_avg\.(?P<p>conv|bn)", "semantic.global_context.conv.{p}"),
        (r"sp\.(?P<layer>conv1|conv2|conv3|conv_out)\.(?P<p>conv|bn)", "detail.layers.{layer}.{p}"),
        (r"ffm\.convblk\.(?P<p>conv|bn)", "fusion.fuse.{p}"),
        (r"ffm\.(?P<p>conv|bn)", "fusion.attention.1.{p}"),
        (r"conv_out\.conv\.(?P<p>conv|bn)", "head.conv.{p}"),
        (r"conv_out\.conv_out", "head.classifier"),
        # conv_out16 scores the context path's 1/8 output (cp16), conv_out32 its 1/16 (cp32)
        (r"conv_out(?P<aux>16|32)\.conv\.(?P<p>conv|bn)", "boosters.{aux}.conv.{p}"),
        (r"conv_out(?P<aux>16|32)\.conv_out", "boosters.{aux}.classifier"),
    ],
    "lookups": {
        "layer": {"conv1": "0", "conv2": "1", "conv3": "2", "conv_out": "3"},
        "aux": {"16": "cp16", "32": "cp32"},
    },
}

MMSEG_V1: KeyMap = {
    "rules": [
        (_CP_MM + r"\.backbone\.(?P<rest>.+)", "semantic.backbone.{rest}"),
        (_CP_MM + r"\.arm(?P<n>16|32)\.conv_layer\.(?P<p>conv|bn)", "semantic.arm{n}.conv.{p}"),
        (
            _CP_MM + r"\.arm(?P<n>16|32)\.atten_conv_layer\.1\.(?P<p>conv|bn)",
            "semantic.arm{n}.attention.1.{p}",
        ),
        (_CP_MM + r"\.conv_head(?P<n>16|32)\.(?P<p>conv|bn)", "semantic.refine{n}.{p}"),
        (_CP_MM + r"\.gap_conv\.1\.(?P<p>conv|bn)", "semantic.global_context.conv.{p}"),
        (r"backbone\.spatial_path\.layer(?P<k>[1-4])\.(?P<p>conv|bn)", "detail.layers.{k}.{p}"),
        (r"backbone\.ffm\.conv1\.(?P<p>conv|bn)", "fusion.fuse.{p}"),
        (r"backbone\.ffm\.conv_atten\.0\.(?P<p>conv|bn)", "fusion.attention.1.{p}"),
        (r"decode_head\.convs\.0\.(?P<p>conv|bn)", "head.conv.{p}"),
        (r"decode_head\.conv_seg", "head.classifier"),
        (r"auxiliary_head\.(?P<aux>[01])\.convs\.0\.(?P<p>conv|bn)", "boosters.{aux}.conv.{p}"),
        (r"auxiliary_head\.(?P<aux>[01])\.conv_seg", "boosters.{aux}.classifier"),
    ],
    "lookups": {
        "k": {"1": "0", "2": "1", "3": "2", "4": "3"},
        # in_index 1 is the context path's 1/8 output (cp16), in_index 2 its 1/16 (cp32)
        "aux": {"0": "cp16", "1": "cp32"},
    },
}

# (peer, family) -> its key map and the preset that is its function
KEYMAPS: dict[tuple[str, str], KeyMap] = {
    ("coincheung", "v2"): COINCHEUNG_V2,
    ("mmseg", "v2"): MMSEG_V2,
    ("coincheung", "v1"): COINCHEUNG_V1,
    ("mmseg", "v1"): MMSEG_V1,
}
PEER_PRESETS: dict[tuple[str, str], str] = {
    ("coincheung", "v2"): "bisenetv2_coincheung",
    ("mmseg", "v2"): "bisenetv2_mmseg",
    ("coincheung", "v1"): "bisenetv1_r18_coincheung",
    ("mmseg", "v1"): "bisenetv1_r18_mmseg",
}
# how each peer normalises input (RGB in [0, 1]); docs/peer-forms.md section 4
PEER_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "coincheung": (COINCHEUNG_MEAN, COINCHEUNG_STD),
    "mmseg": (IMAGENET_MEAN, IMAGENET_STD),
}
PEERS = ("coincheung", "mmseg")
