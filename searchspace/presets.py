"""Named architectures, one line each, and the parser every command uses for ``--spec``.

``bisenetv2`` is the paper's model as its text describes it (gather conv expands). The
paper gives no width C_t for the seg head's 3x3 conv; we infer it from the paper's total:
at 512x1024 the network without the head costs 17.80 GMACs, the head costs
(9 * 128 + 19) * C_t MACs per pixel at 64x128, so 21.15 GMACs needs C_t = 349.2. We take
the nearest multiple of 8, 352 (21.18 GMACs, +0.13%), because such widths vectorise
better. Every other table row is then a prediction, not a fit
(``tests/test_complexity.py`` prints them).

``bisenetv1_x39`` and ``bisenetv1_r18`` have the layers of BiSeNet V1 as the authors' code
builds it (see ``searchspace/v1.py``): 1,541,963 and 12,894,163 parameters at inference,
exactly the code's 1.542 M and 12.894 M, and 3.07 / 11.58 GMACs at 640x360 (paper: 2.9 /
10.8). Their bilinear resizes do not use align_corners, which the authors' code does:
``bisenetv1_{x39,r18}_authors`` are the authors' function (and the ids of the first two
are kept, since stored results are keyed by them).

The ``*_coincheung`` and ``*_mmseg`` presets compute exactly what CoinCheung/BiSeNet's and
mmsegmentation's models compute given the same weights (``runners.convert`` renames their
checkpoints' keys); docs/peer-forms.md says where each differs from the paper.

``PRESETS`` holds every named architecture (``get_preset`` and ``parse_spec`` read it);
``V2_PRESETS`` and ``V1_PRESETS`` are its two families, for callers that need one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from searchspace import v1, v2
from searchspace.errors import SpecError
from searchspace.v1 import BiSeNetV1Spec, parse_v1_overrides
from searchspace.v2 import BiSeNetV2Spec, parse_v2_overrides

# Any architecture spec the builder accepts.
ArchSpec = BiSeNetV2Spec | BiSeNetV1Spec

# The booster positions the paper chose (Table 4): stem, S3, S4, S5_4.
PAPER_BOOSTERS = ("stem", "s3", "s4", "s5_4")

_DWEXP = BiSeNetV2Spec(head_width=1024).replace(**{"semantic.ge_expand": "depthwise"})
# what both V2 reimplementations add to the paper's layers (docs/peer-forms.md, section 6)
_V2_PEER = {"semantic.ge_dw_act": True, "bga_out_act": True, "head_dropout": 0.1}

V2_PRESETS: dict[str, BiSeNetV2Spec] = {
    "bisenetv2": BiSeNetV2Spec(),
    "bisenetv2_l": BiSeNetV2Spec(width_mult=2.0, depth_mult=3.0),
    # The open reimplementations' layer shapes (grouped expansion, 1024-wide head, booster
    # heads 128 wide) with the paper's activations, BGA and heads: the same parameters and
    # MACs as CoinCheung's BiSeNetV2 but not the same function (bisenetv2_coincheung is).
    "bisenetv2_dwexp": _DWEXP,
    # Function-identical to CoinCheung/BiSeNet's BiSeNetV2 (lib/models/bisenetv2.py, the
    # aux_mode form) and to mmsegmentation's BiSeNetV2 with its FCN decode and 4 aux heads.
    "bisenetv2_coincheung": _DWEXP.replace(
        **_V2_PEER, bga_upsample="nearest", booster_form="up2", booster_dropout=0.1
    ),
    "bisenetv2_mmseg": _DWEXP.replace(
        **_V2_PEER,
        bga_bias=True,
        booster_form="double",
        booster_dropout=0.1,
        dropout_kind="channel",
    ),
}

_R18 = BiSeNetV1Spec().replace(**{"context.backbone": "resnet18"})
# both V1 reimplementations: nearest U-shape, main head 256 and aux heads 64, aux outputs
# cp16 first; they differ in the FFM attention and dropout
_V1_PEER = {
    "context.upsample": "nearest",
    "head_width": 256,
    "aux_width": 64,
    "aux_order": "cp16_first",
}

V1_PRESETS: dict[str, BiSeNetV1Spec] = {
    # The authors' widths and FFM, but bilinear resizes without align_corners, which
    # neither the authors' code (align_corners=True) nor the reimplementations (nearest)
    # use; the *_authors presets are the authors' function.
    "bisenetv1_x39": BiSeNetV1Spec(),
    "bisenetv1_r18": _R18,
    # The authors' code (ycszen/TorchSeg, model/bisenet/cityscapes.bisenet.{X39,R18}):
    # bilinear with align_corners=True in the context path and the heads.
    "bisenetv1_x39_authors": BiSeNetV1Spec(align_corners=True),
    "bisenetv1_r18_authors": _R18.replace(align_corners=True),
    # CoinCheung/BiSeNet lib/models/bisenetv1.py (conv-BN FFM attention, no dropout) and
    # mmsegmentation's BiSeNetV1 (conv-BN-ReLU attention, Dropout2d 0.1 in every head)
    "bisenetv1_r18_coincheung": _R18.replace(**_V1_PEER, ffm_attention="conv_bn"),
    "bisenetv1_r18_mmseg": _R18.replace(
        **_V1_PEER,
        ffm_attention="conv_bn_relu",
        head_dropout=0.1,
        aux_dropout=0.1,
        dropout_kind="channel",
    ),
}

PRESETS: dict[str, ArchSpec] = {**V2_PRESETS, **V1_PRESETS}

# compact-string prefix -> (default spec, override parser); "v2" first: the historic default
_BASES: dict[str, tuple[ArchSpec, Callable[[str], dict[str, object]]]] = {
    "v2": (BiSeNetV2Spec(), parse_v2_overrides),
    "v1": (BiSeNetV1Spec(), parse_v1_overrides),
}
_FROM_JSON: dict[str, Callable[[dict], ArchSpec]] = {
    v2.KIND: v2.spec_from_json_dict,
    v1.KIND: v1.spec_from_json_dict,
}


def backbone_of(spec: ArchSpec) -> str | None:
    """The backbone a pretrained file may initialise: V2's semantic branch (its own,
    ``bisenetv2``, or an ImageNet one), V1's context-path backbone; None without one."""
    if isinstance(spec, BiSeNetV1Spec):
        return spec.context.backbone
    if spec.aggregation == "detail_only":
        return None
    return spec.semantic.backbone


def get_preset(name: str) -> ArchSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise SpecError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None


def parse_spec(text: str) -> ArchSpec:
    """A preset name, ``preset:k=v,...``, ``v2[:k=v,...]``, ``v1[:k=v,...]``, a JSON file
    or JSON text (the kind in the JSON picks V1 or V2; a bare field dict is V2)."""
    text = text.strip()
    if not text:
        raise SpecError("empty spec: give a preset name, a spec string or a JSON file")
    if text.startswith("{"):
        return _spec_from_json_text(text, "spec JSON")
    path = Path(text)
    if text.endswith(".json") or (path.suffix and path.exists()):
        if not path.is_file():
            raise SpecError(f"spec file {text}: not found")
        return _spec_from_json_text(path.read_text(), f"spec file {text}")
    base, _, overrides = text.partition(":")
    spec: ArchSpec
    if base in _BASES:
        spec = _BASES[base][0]
    elif base in PRESETS:
        spec = PRESETS[base]
    else:
        raise SpecError(
            f"unknown spec {base!r}: expected a preset ({', '.join(PRESETS)}), "
            "'v2:key=value,...', 'v1:key=value,...' or a .json file"
        )
    parse = parse_v1_overrides if isinstance(spec, BiSeNetV1Spec) else parse_v2_overrides
    changes = parse(overrides)
    return spec.replace(**changes) if changes else spec


def _spec_from_json_text(text: str, what: str) -> ArchSpec:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{what}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{what}: expected a JSON object")
    if "fields" not in data:  # a bare field dict is accepted too (V2, as before V1 existed)
        data = {"schema": 1, "kind": v2.KIND, "fields": data}
    kind = data.get("kind")
    if kind not in _FROM_JSON:
        raise SpecError(f"kind={kind!r}: expected one of {', '.join(map(repr, _FROM_JSON))}")
    return _FROM_JSON[kind](data)
