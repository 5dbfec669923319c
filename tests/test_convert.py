"""The reimplementations' checkpoints: key maps, conversion, and what the presets compute.

The peers' key names and shapes (tests/fixtures/peer_keys/*.json) were listed from their
published model code (CoinCheung/BiSeNet lib/models/bisenetv{1,2}.py; mmsegmentation
1.2.2's BiSeNetV1/V2 backbones with the FCN heads of its configs); no peer code is here.
Function identity with the peers' own code was measured outside the suite (max abs
difference 0.0 in eval and training mode for all four presets, docs/peer-forms.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from blocks.builder import build_model
from blocks.weights import rename_key as rename
from runners.checkpoint import load_model
from runners.convert.keymaps import KEYMAPS, PEER_NORMALISATION, PEER_PRESETS
from searchspace.cli import run_cli
from searchspace.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURES = Path(__file__).parent / "fixtures" / "peer_keys"
CASES = sorted(PEER_PRESETS)  # (peer, family)


def peer_keys(peer: str, fam: str) -> list[tuple[str, list[int]]]:
    return [(k, s) for k, s in json.loads((FIXTURES / f"{peer}_{fam}.json").read_text())]


def seeded(spec: object, seed: int = 0) -> nn.Module:
    """The spec's network with random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = build_model(spec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean") or (t.dim() == 1 and t.is_floating_point()):
                t.add_(0.2 * torch.randn(t.shape, generator=g))
    return model


def as_peer(model: nn.Module, peer: str, fam: str) -> dict[str, torch.Tensor]:
    """The model's weights under the peer's names, checked against the peer's shapes."""
    own = model.state_dict()
    out = {}
    for key, shape in peer_keys(peer, fam):
        target = rename(key, KEYMAPS[(peer, fam)])
        assert target in own, f"{key} -> {target}"
        assert list(own[target].shape) == shape, key
        out[key] = own[target].clone()
    return out


def convert(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from runners.convert.__main__ import main

    with pytest.raises(SystemExit) as done:
        run_cli(main, list(argv))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


@pytest.mark.parametrize(("peer", "fam"), CASES)
def test_every_peer_key_is_one_network_weight_of_the_same_shape(peer: str, fam: str) -> None:
    spec = get_preset(PEER_PRESETS[(peer, fam)])
    own = build_model(spec).state_dict()
    keys = peer_keys(peer, fam)
    targets = [rename(k, KEYMAPS[(peer, fam)]) for k, _ in keys]
    assert None not in targets
    assert len(set(targets)) == len(targets) == len(own)  # one to one, nothing left over
    assert set(targets) == set(own)
    for (key, shape), target in zip(keys, targets, strict=True):
        assert list(own[target].shape) == shape, f"{key} -> {target}"


# every peer form once, and every file wrapping at least once
ROUND_TRIPS = [
    ("coincheung", "v2", "raw"),
    ("mmseg", "v2", "mmseg"),
    ("coincheung", "v1", "ddp"),
    ("mmseg", "v1", "mmseg"),
]


@pytest.mark.parametrize(("peer", "fam", "wrapping"), ROUND_TRIPS)
def test_a_converted_checkpoint_computes_what_the_source_computed(
    peer: str, fam: str, wrapping: str, tmp_path: Path, capsys
) -> None:
    name = PEER_PRESETS[(peer, fam)]
    source = seeded(get_preset(name))
    state = as_peer(source, peer, fam)
    if wrapping == "mmseg":
        payload: object = {
            "meta": {"CLASSES": ["road"], "mmseg_version": "1.2.2"},
            "state_dict": state,
        }
    elif wrapping == "ddp":
        payload = {f"module.{k}": v for k, v in state.items()}
    else:
        payload = state
    src, out = tmp_path / "peer.pth", tmp_path / "toolkit.pt"
    torch.save(payload, src)
    code, stdout, err = convert("--from", peer, "--spec", name, str(src), str(out), capsys=capsys)
    assert code == 0, err
    assert "converted" in stdout
    model, spec, recipe = load_model(out)
    assert spec == get_preset(name)
    assert (recipe.input_mean, recipe.input_std) == PEER_NORMALISATION[peer]
    x = torch.randn(1, 3, 64, 128)
    source.eval()
    with torch.no_grad():
        assert torch.equal(model.float()(x), source(x))
    # training mode (dropout included): the same outputs under the same RNG state
    model.train(), source.train()
    xb = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        torch.manual_seed(5)
        a = source(xb)
        torch.manual_seed(5)
        b = model(xb)
    assert len(a) == len(b) == 1 + (4 if fam == "v2" else 2)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_aux_weights_are_dropped_with_a_note_when_the_spec_has_no_aux_heads(
    tmp_path: Path, capsys
) -> None:
    source = seeded(get_preset("bisenetv2_mmseg"))
    src, out = tmp_path / "peer.pth", tmp_path / "toolkit.pt"
    torch.save({"meta": {}, "state_dict": as_peer(source, "mmseg", "v2")}, src)
    code, stdout, err = convert(
        "--from", "mmseg", "--spec", "bisenetv2_mmseg:bst=none", str(src), str(out), capsys=capsys
    )
    assert code == 0, err
    assert "note: dropped the weights of the auxiliary heads at s3, s4, s5_4, stem" in stdout
    model, spec, _ = load_model(out)
    assert spec.booster_positions == ()
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.equal(model(x), source.eval()(x))


def test_a_converted_checkpoint_is_profiled_evaluated_and_exported(
    tiny_data: str, tmp_path: Path, capsys
) -> None:
    from runners.evaluate.__main__ import main as evaluate_main
    from runners.export.onnx import onnxruntime_available
    from runners.profile.__main__ import main as profile_main

    source = seeded(get_preset("bisenetv2_coincheung"))
    src, out = tmp_path / "cc.pth", tmp_path / "cc.pt"
    torch.save(as_peer(source, "coincheung", "v2"), src)
    assert convert("--from", "coincheung", "--spec", "bisenetv2_coincheung", str(src), str(out),
                   capsys=capsys)[0] == 0  # fmt: skip
    for main, argv in [
        (evaluate_main, ["--checkpoint", str(out), "--data", tiny_data, "--input-hw", "64x128"]),
        (profile_main, ["--checkpoint", str(out), "--no-latency", "--input-hw", "64", "128"]),
    ]:
        with pytest.raises(SystemExit) as done:
            run_cli(main, argv)
        assert done.value.code in (0, None), capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "3,358,627" in printed  # the peer's eval-mode parameters
    if onnxruntime_available():
        from runners.export.__main__ import main as export_main

        onnx = tmp_path / "cc.onnx"
        argv = ["--checkpoint", str(out), "--onnx", str(onnx), "--input-hw", "64", "128"]
        with pytest.raises(SystemExit) as done:
            run_cli(export_main, argv)
        assert done.value.code in (0, None), capsys.readouterr().err
        assert onnx.is_file()


# --- bad input: one line, exit 2, nothing written ------------------------------------


class Opaque:
    """A pickled object that only code execution could rebuild."""


def _bad_files(tmp: Path) -> dict[str, Path]:
    state = as_peer(seeded(get_preset("bisenetv2_coincheung")), "coincheung", "v2")
    files = {}

    def save(name: str, obj: object) -> None:
        files[name] = tmp / f"{name}.pth"
        torch.save(obj, files[name])

    save("missing", {k: v for k, v in state.items() if not k.startswith("bga.conv.")})
    save("unexpected", {**state, "head.extra.weight": torch.zeros(1)})
    save("shape", {**state, "bga.conv.0.weight": torch.zeros(128, 64, 3, 3)})
    save("good", state)
    save("eval_mode", {k: v for k, v in state.items() if not k.startswith("aux")})
    save("not_a_state_dict", [1, 2, 3])
    save("code", {"state_dict": state, "trainer": Opaque()})
    files["text"] = tmp / "text.pth"
    files["text"].write_text("not a torch file")
    return files


BAD = [
    ("missing", "coincheung", "bisenetv2_coincheung", "weights of the network are not in the file: fusion.out.conv.weight"),
    ("unexpected", "coincheung", "bisenetv2_coincheung", "1 unexpected keys for coincheung's form: head.extra.weight"),
    ("shape", "coincheung", "bisenetv2_coincheung", "shape mismatch: fusion.out.conv.weight (file (128, 64, 3, 3), network (128, 128, 3, 3))"),
    ("good", "mmseg", "bisenetv2_mmseg", "none of its 383 keys is a mmseg BiSeNet V2 key"),
    ("good", "tensorflow", "bisenetv2_coincheung", "--from 'tensorflow': expected one of coincheung, mmseg"),
    ("good", "coincheung", "bisenetv2", "coincheung has no form for this network; use bisenetv2_coincheung"),
    ("good", "mmseg", "bisenetv1_x39", "mmseg has no form for this network; use bisenetv1_r18_mmseg"),
    ("good", "coincheung", "bisenetv2_coincheung:nc=5", "the file predicts 19 classes: add :nc=19"),
    ("good", "coincheung", "bisenetv2_coincheung:bst=s5_5", "has no heads at s5_5"),
    ("eval_mode", "coincheung", "bisenetv2_coincheung", "no auxiliary-head weights: add :bst=none"),
    ("not_a_state_dict", "coincheung", "bisenetv2_coincheung", "expected a state dict"),
    ("code", "coincheung", "bisenetv2_coincheung", "loading it would run code, so it is refused"),
    ("text", "coincheung", "bisenetv2_coincheung", "not a readable torch weights file"),
]  # fmt: skip


@pytest.mark.parametrize(("file", "peer", "spec", "expected"), BAD)
def test_bad_conversions_are_one_line_and_write_nothing(
    file: str, peer: str, spec: str, expected: str, tmp_path: Path, capsys
) -> None:
    files = _bad_files(tmp_path)
    out = tmp_path / "out" / "toolkit.pt"
    out.parent.mkdir()
    out.write_bytes(b"an earlier conversion")  # must survive a failed one
    code, _, err = convert("--from", peer, "--spec", spec, str(files[file]), str(out),
                           capsys=capsys)  # fmt: skip
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err
    assert out.read_bytes() == b"an earlier conversion"
    assert sorted(p.name for p in out.parent.iterdir()) == ["toolkit.pt"]


# --- the presets themselves ----------------------------------------------------------

# (all parameters with the aux heads, at inference): counted from the peers' own model
# code for 19 classes (mmsegmentation's with its configs' heads; CoinCheung's at
# lib/models/bisenetv{1,2}.py). Neither project publishes parameter counts.
PEER_PARAMS = {
    "bisenetv2_coincheung": (5_231_487, 3_358_627),
    "bisenetv2_mmseg": (14_804_255, 3_358_883),
    "bisenetv1_r18_coincheung": (13_425_721, 13_275_539),
    "bisenetv1_r18_mmseg": (13_425_721, 13_275_539),
}


@pytest.mark.parametrize("name", sorted(PEER_PARAMS))
def test_peer_presets_have_the_peers_parameter_counts(name: str) -> None:
    model = build_model(get_preset(name))
    total = sum(p.numel() for p in model.parameters())
    assert (total, model.inference_parameters()) == PEER_PARAMS[name]


def test_the_forms_differ_where_the_peers_do() -> None:
    """mmseg's FFM attention has a ReLU before the sigmoid (never below 0.5);
    CoinCheung's has none. Dropout2d zeroes whole channels, Dropout single values."""
    x = torch.randn(2, 256, 8, 16)
    for name, low in [("bisenetv1_r18_mmseg", 0.5), ("bisenetv1_r18_coincheung", 0.0)]:
        fusion = seeded(get_preset(name)).fusion.eval()
        with torch.no_grad():
            att = fusion.attention(fusion.fuse(x))
        assert att.min() >= low and (low > 0 or att.min() < 0.5)
    mm = seeded(get_preset("bisenetv2_mmseg")).head.drop
    cc = seeded(get_preset("bisenetv2_coincheung")).head.drop
    assert isinstance(mm, nn.Dropout2d) and type(cc) is nn.Dropout
    zeros = mm.train()(torch.ones(1, 64, 4, 4)).eq(0)
    assert bool((zeros.all(dim=(2, 3)) | (~zeros).all(dim=(2, 3))).all())  # whole channels


def test_the_presets_table_names_every_preset_for_profile_and_ablate(capsys) -> None:
    from runners.profile.__main__ import main as profile_main
    from searchspace.presets import PRESETS
    from searchspace.tables import get_table

    table = get_table("presets")
    assert [r.row for r in table.rows] == list(PRESETS)
    assert all(r.spec == PRESETS[r.row] and r.paper_gmacs is None for r in table.rows)
    argv = [
        "--table",
        "presets",
        "--no-latency",
        "--counters",
        "flop_counter",
        "--input-hw",
        "64",
        "128",
    ]
    with pytest.raises(SystemExit) as done:
        run_cli(profile_main, argv)
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "presets/bisenetv2_mmseg" in printed and "presets/bisenetv1_r18_coincheung" in printed
