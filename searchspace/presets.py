"""Named architectures, one line each, and the parser every command uses for ``--spec``.

``bisenetv2`` is the paper's model as its text describes it (gather conv expands). The
paper gives no width C_t for the seg head's 3x3 conv; we infer it from the paper's total:
at 512x1024 the network without the head costs 17.80 GMACs, the head costs
(9 * 128 + 19) * C_t MACs per pixel at 64x128, so 21.15 GMACs needs C_t = 349.2. We take
the nearest multiple of 8, 352 (21.18 GMACs, +0.13%), because such widths vectorise
better. Every other table row is then a prediction, not a fit
(``tests/test_complexity.py`` prints them).
"""

from __future__ import annotations

import json
from pathlib import Path

from searchspace.errors import SpecError
from searchspace.v2 import BiSeNetV2Spec, parse_v2_overrides, spec_from_json_dict

# The booster positions the paper chose (Table 4): stem, S3, S4, S5_4.
PAPER_BOOSTERS = ("stem", "s3", "s4", "s5_4")

PRESETS: dict[str, BiSeNetV2Spec] = {
    "bisenetv2": BiSeNetV2Spec(),
    "bisenetv2_l": BiSeNetV2Spec(width_mult=2.0, depth_mult=3.0),
    # The form of the most used open reimplementation: grouped expansion, 1024-wide head,
    # 4 booster heads with 128 mid channels.
    "bisenetv2_dwexp": BiSeNetV2Spec(head_width=1024).replace(
        **{"semantic.ge_expand": "depthwise"}
    ),
}


def get_preset(name: str) -> BiSeNetV2Spec:
    try:
        return PRESETS[name]
    except KeyError:
        raise SpecError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None


def parse_spec(text: str) -> BiSeNetV2Spec:
    """A preset name, ``preset:k=v,...``, ``v2[:k=v,...]``, a JSON file or JSON text."""
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
    if base == "v2":
        spec = BiSeNetV2Spec()
    elif base in PRESETS:
        spec = PRESETS[base]
    else:
        raise SpecError(
            f"unknown spec {base!r}: expected a preset ({', '.join(PRESETS)}), "
            "'v2:key=value,...' or a .json file"
        )
    changes = parse_v2_overrides(overrides)
    return spec.replace(**changes) if changes else spec


def _spec_from_json_text(text: str, what: str) -> BiSeNetV2Spec:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{what}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{what}: expected a JSON object")
    if "fields" not in data:  # a bare field dict is accepted too
        data = {"schema": 1, "kind": "bisenetv2", "fields": data}
    return spec_from_json_dict(data)
