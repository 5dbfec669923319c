"""BiSeNet V1 in the shared spec/builder: complexity, shapes, field reach, specs, weights.

The V1 presets are the authors' code (TorchSeg) in spec form; their parameter counts at
inference (aux heads excluded: they exist only in training) are the code's exactly, and
their MACs at 640x360 land within 10% of the paper's Table 4. The mixed specs (V1 with
BGA or concat fusion, V2 with FFM aggregation) go through the same checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blocks.aggregation import BilateralGuidedAggregation, FeatureFusionModule
from blocks.builder import build_model
from blocks.v1 import ResNet18, Xception39
from blocks.weights import load_pretrained
from runners.profile.complexity import build_on_meta, count_macs, count_params
from searchspace.errors import CheckpointError, SpecError
from searchspace.presets import V1_PRESETS, V2_PRESETS, get_preset, parse_spec
from searchspace.serialize import leaf_types
from searchspace.tables import all_tables, get_table, table_names
from searchspace.v1 import ALIASES, BiSeNetV1Spec, ContextPathSpec, SpatialPathSpec, resolve
from searchspace.v2 import BiSeNetV2Spec

ROOT = Path(__file__).resolve().parent.parent
V1_HW = (360, 640)  # V1 Table 4: 640x360 (W x H)

# Golden ids: a change here means stored results no longer match their specs.
GOLDEN_IDS = {
    "bisenetv1_x39": "8a932dfb69",
    "bisenetv1_r18": "a2447fd687",
    "bisenetv1_x39_authors": "a7c800b5fd",
    "bisenetv1_r18_authors": "2990e905a6",
    "bisenetv1_r18_coincheung": "d4423cabc1",
    "bisenetv1_r18_mmseg": "3cf3a1ab6b",
}

# The authors' code, counted the same way (inference parameters, GMACs at 640x360).
AUTHORS = {"bisenetv1_x39": (1_542_000, 3.07), "bisenetv1_r18": (12_894_000, 11.58)}
PAPER_ROW = {"bisenetv1_x39": "xception39", "bisenetv1_r18": "res18"}

X39 = V1_PRESETS["bisenetv1_x39"]
MIXED = {
    "v1_bga": X39.replace(fusion="bga"),
    "v1_concat": X39.replace(fusion="concat"),
    "v1_paper_sp": X39.replace(**{"spatial.form": "paper"}),
    "v1_r18_bga": V1_PRESETS["bisenetv1_r18"].replace(fusion="bga"),
    "v2_ffm": get_preset("bisenetv2").replace(aggregation="ffm"),
}


def v1_specs() -> list[BiSeNetV1Spec | BiSeNetV2Spec]:
    """Presets, every V1 table row and the mixed variants, each once."""
    seen: dict[str, BiSeNetV1Spec | BiSeNetV2Spec] = {}
    rows = [r.spec for t in all_tables("v1") for r in t.runnable]
    for spec in [*V1_PRESETS.values(), *rows, *MIXED.values()]:
        seen.setdefault(spec.spec_id, spec)
    return list(seen.values())


def n_aux(spec: BiSeNetV1Spec | BiSeNetV2Spec) -> int:
    if isinstance(spec, BiSeNetV1Spec):
        return len(spec.aux_positions)
    return len(spec.booster_positions)


# --- complexity ------------------------------------------------------------------------


def test_presets_reproduce_the_paper_and_the_authors_code(capsys) -> None:
    table = get_table("v1-4")
    lines = [
        f"{'spec':22s} {'GMACs':>7s} {'paper':>6s} {'delta':>7s} {'authors':>8s}"
        f" {'params':>11s} {'authors':>11s} {'delta':>7s}"
    ]
    failures = []
    for name in PAPER_ROW:  # the presets the paper's Table 4 rows are
        spec = V1_PRESETS[name]
        row = table.row(PAPER_ROW[name])
        assert row.spec == spec and row.input_hw == V1_HW
        model = build_on_meta(spec)
        gmacs = count_macs(model, row.input_hw) / 1e9
        params = count_params(model, inference=True)
        authors_params, authors_gmacs = AUTHORS[name]
        d_macs = 100 * (gmacs / row.paper_gmacs - 1)
        d_params = 100 * (params / authors_params - 1)
        lines.append(
            f"{name:22s} {gmacs:7.3f} {row.paper_gmacs:6.2f} {d_macs:+6.1f}% {authors_gmacs:8.2f}"
            f" {params:11,d} {authors_params:11,d} {d_params:+6.2f}%"
        )
        if abs(d_macs) > 10 or abs(d_params) > 3 or abs(gmacs / authors_gmacs - 1) > 0.01:
            failures.append(name)
    # for the record (not asserted): the mixed variants at the same input
    for name, spec in MIXED.items():
        model = build_on_meta(spec)
        gmacs = count_macs(model, V1_HW) / 1e9
        lines.append(f"{name:22s} {gmacs:7.3f} {'':>24s} {count_params(model):11,d}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert not failures, failures


def test_xception39_is_the_authors_backbone() -> None:
    backbone = build_on_meta(X39).semantic.backbone
    assert isinstance(backbone, Xception39)
    assert sum(p.numel() for p in backbone.parameters()) == 299_448  # "about 0.30 M"
    assert abs(count_macs(backbone, V1_HW) / 1e9 / 0.186 - 1) < 0.01
    assert backbone.out_chs == (64, 128, 256)
    assert [len(s) for s in (backbone.layer1, backbone.layer2, backbone.layer3)] == [4, 8, 4]


def test_authors_choices_are_what_the_counts_need() -> None:
    """Each documented default, changed alone, moves the X39 count off the authors' 1.542 M."""
    base = count_params(build_on_meta(X39))
    assert base == 1_541_963
    for change in (
        {"context.lateral_kernel": 1},  # the ARM's 3x3 conv
        {"ffm_reduction": 4},  # open reimplementations' FFM bottleneck
        {"head_width": 256},
    ):
        params = count_params(build_on_meta(X39.replace(**change)))
        assert abs(params / 1_542_000 - 1) > 0.03, change
    # the aux heads are training-only: counting them misses the authors' number by far
    assert count_params(build_on_meta(X39), inference=False) > 1.3 * 1_542_000


def test_resnet18_trunk_is_standard() -> None:
    trunk = ResNet18()
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in its fc layer
    assert sum(p.numel() for p in trunk.parameters()) == 11_689_512 - 513_000
    feats = trunk(torch.randn(1, 3, 64, 96))
    # strides 4, 8, 16, 32 (V1's context path reads the last three)
    shapes = [tuple(f.shape[1:]) for f in feats]
    assert shapes == [(64, 16, 24), (128, 8, 12), (256, 4, 6), (512, 2, 3)]


# --- the model -----------------------------------------------------------------------


@pytest.mark.parametrize("spec", v1_specs(), ids=lambda s: s.to_string())
def test_forward_backward_at_odd_size(spec: BiSeNetV1Spec | BiSeNetV2Spec) -> None:
    torch.manual_seed(0)
    model = build_model(spec).train()
    hw = (75, 109)  # neither a multiple of 32 nor of 8
    outs = model(torch.randn(2, 3, *hw))
    assert isinstance(outs, tuple) and len(outs) == 1 + n_aux(spec)
    for out in outs:
        assert out.shape == (2, spec.num_classes, *hw)
    sum((o**2).mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()]
    assert not missing, missing
    # Only V2's context embedding has an exactly-zero gradient by construction (GAP -> BN
    # -> conv -> BN cancels the first BN's bias in train mode; see tests/test_builder.py).
    # V1 has none: its ARM and global context have one BN each after the pooled conv.
    assert zero == ([] if isinstance(spec, BiSeNetV1Spec) else ["semantic.ce.bn.bias"]), zero
    model.eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, *hw))
    assert isinstance(out, torch.Tensor) and out.shape == (2, spec.num_classes, *hw)
    assert torch.isfinite(out).all()


def test_u_shape_taps_and_smallest_input() -> None:
    model = build_model(X39).eval()
    with torch.inference_mode():
        feats = model.semantic(torch.randn(1, 3, 75, 109))
        assert feats["cp32"].shape[-2:] == (5, 7)  # ceil(H / 16), ceil(W / 16)
        assert feats["cp16"].shape[-2:] == (10, 14)  # ceil(H / 8), ceil(W / 8)
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 19, 32, 32)


def test_the_built_model_follows_the_authors_code() -> None:
    model = build_model(V1_PRESETS["bisenetv1_r18"])
    sp, cp = model.detail.layers, model.semantic
    assert [m.conv.kernel_size[0] for m in sp] == [7, 3, 3, 1]
    assert [m.conv.stride[0] for m in sp] == [2, 2, 2, 1]
    assert (sp[0].conv.out_channels, sp[3].conv.out_channels) == (64, 128)
    assert cp.arm32.conv.conv.in_channels == 512 and cp.arm16.conv.conv.in_channels == 256
    assert cp.global_context.conv.conv.in_channels == 512
    assert isinstance(model.fusion, FeatureFusionModule)
    assert model.fusion.fuse.conv.in_channels == 256 and model.fusion.fuse.conv.out_channels == 256
    assert model.head.conv.conv.out_channels == 64
    assert {n: h.conv.conv.out_channels for n, h in model.boosters.items()} == {
        "cp32": 256,
        "cp16": 256,
    }


def test_ffm_is_the_papers_module() -> None:
    """concat -> 1x1 conv-BN-ReLU -> GAP -> 1x1 -> ReLU -> 1x1 -> sigmoid -> x + x * att."""
    torch.manual_seed(0)
    ffm = FeatureFusionModule(8, 6, 16).eval()
    sp, cp = torch.randn(2, 8, 5, 7), torch.randn(2, 6, 3, 4)
    with torch.no_grad():
        out = ffm(sp, cp, (5, 7))
        x = ffm.fuse(
            torch.cat([sp, torch.nn.functional.interpolate(cp, (5, 7), mode="bilinear")], 1)
        )
        assert isinstance(ffm.fuse.act, torch.nn.ReLU)
        conv1, relu, conv2 = ffm.attention[1], ffm.attention[2], ffm.attention[3]
        att = torch.sigmoid(conv2(relu(conv1(x.mean((2, 3), keepdim=True)))))
        torch.testing.assert_close(out, x + x * att)
    assert conv1.bias is None and conv1.out_channels == 16  # the authors': no reduction
    assert FeatureFusionModule(8, 6, 16, reduction=4).attention[1].out_channels == 4


def test_bga_fuses_a_v1_context_at_1_8() -> None:
    bga = BilateralGuidedAggregation(16, 12, 16).eval()
    with torch.no_grad():
        out = bga(torch.randn(1, 16, 10, 14), torch.randn(1, 12, 10, 14), (10, 14))
    assert out.shape == (1, 16, 10, 14)


# One alternative value per leaf field; every field of the spec must appear here.
ALTERNATIVES: dict[str, object] = {
    "spatial.form": "paper",
    "spatial.widths": (32, 64),
    "spatial.out_width": 96,
    "context.backbone": "resnet18",
    "context.arm": False,
    "context.lateral_kernel": 1,
    "context.global_context": False,
    "context.refine": False,
    "context.out_width": 96,
    "fusion": "sum",
    "fusion_width": 128,
    "ffm_reduction": 4,
    "head_width": 32,
    "aux_positions": ("cp16",),
    "aux_width": 64,
    "width_mult": 0.75,
    "depth_mult": 2.0,
    "num_classes": 11,
    "context.upsample": "nearest",
    "align_corners": True,
    "ffm_attention": "conv_bn",
    "head_dropout": 0.1,
    "aux_dropout": 0.1,
    "dropout_kind": "channel",  # measured against a base with head dropout
    "aux_order": "cp16_first",
}
# a field that applies only once another is set: measured from that base
ALTERNATIVE_BASES = {"dropout_kind": {"head_dropout": 0.1}}


def _fingerprint(spec: BiSeNetV1Spec) -> tuple:
    torch.manual_seed(0)
    model = build_model(spec).eval()
    torch.manual_seed(1)
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 64))
    return repr(model), count_params(model, inference=False), tuple(out.shape), out.sum().item()


def test_alternatives_cover_every_field() -> None:
    assert set(ALTERNATIVES) == set(leaf_types(BiSeNetV1Spec))


@pytest.fixture(scope="module")
def base_fingerprint() -> tuple:
    return _fingerprint(BiSeNetV1Spec())


@pytest.mark.parametrize("path", sorted(ALTERNATIVES))
def test_every_field_reaches_its_module(path: str, base_fingerprint: tuple) -> None:
    base = BiSeNetV1Spec().replace(**ALTERNATIVE_BASES.get(path, {}))
    if base != BiSeNetV1Spec():
        base_fingerprint = _fingerprint(base)
    changed = base.replace(**{path: ALTERNATIVES[path]})
    assert changed != base
    after = _fingerprint(changed)
    before = base_fingerprint
    assert before[0] != after[0] or before[1:] != after[1:], path


# --- specs -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(V1_PRESETS))
def test_golden_spec_ids(name: str) -> None:
    assert V1_PRESETS[name].spec_id == GOLDEN_IDS[name]


@pytest.mark.parametrize("spec", v1_specs(), ids=lambda s: s.to_string())
def test_json_and_string_round_trip(spec: BiSeNetV1Spec | BiSeNetV2Spec) -> None:
    again = parse_spec(spec.to_json())
    assert again == spec and again.spec_id == spec.spec_id
    assert parse_spec(spec.to_string()) == spec
    assert parse_spec(spec.to_json(indent=2)) == spec


def test_v1_strings_presets_and_json() -> None:
    data = json.loads(X39.to_json())
    assert data["kind"] == "bisenetv1" and data["schema"] == 1
    assert X39.to_string() == "v1"
    r18 = parse_spec("bisenetv1_r18")
    assert r18.to_string() == "v1:bb=resnet18" and parse_spec("v1:bb=resnet18") == r18
    spec = parse_spec("bisenetv1_x39:fus=bga,arm=0,aux=none")
    assert isinstance(spec, BiSeNetV1Spec) and spec.aux_positions == ()
    assert spec.to_string() == "v1:arm=0,aux=none,fus=bga"
    assert parse_spec("v1:context.refine=off").context.refine is False
    # V2 behaviour is unchanged: bare field dicts and 'v2' strings are V2
    assert parse_spec('{"head_width": 256}') == BiSeNetV2Spec(head_width=256)
    assert V2_PRESETS.keys().isdisjoint(V1_PRESETS) and "bisenetv1_x39" not in V2_PRESETS
    assert get_preset("bisenetv1_x39") == X39


def test_resolution_applies_alpha_and_d() -> None:
    plan = resolve(BiSeNetV1Spec(width_mult=0.5, depth_mult=2.0))
    assert plan.backbone_widths == (8, 16, 32) and plan.backbone_taps == (32, 64, 128)
    assert plan.backbone_depths == (8, 16, 8) and plan.context_width == 64
    plan = resolve(V1_PRESETS["bisenetv1_r18"])
    assert plan.backbone_taps == (128, 256, 512) and plan.fusion_width == 256
    assert resolve(X39.replace(fusion="cp_only")).fusion_width == 128  # head on the context


def test_v1_tables_are_data() -> None:
    assert table_names("v1") == ("v1-3", "v1-4")
    assert set(table_names("all")) == set(table_names()) | {"v1-3", "v1-4"}
    t3 = get_table("v1-3")
    assert [r.row for r in t3.rows] == [
        "cp", "cp_sp_sum", "cp_sp_ffm", "cp_sp_ffm_gp", "cp_sp_ffm_arm", "cp_sp_ffm_gp_arm",
    ]  # fmt: skip
    assert t3.row("cp").spec.fusion == "cp_only" and t3.row("cp").paper_miou == 66.01
    assert t3.row("cp_sp_ffm_gp_arm").spec == X39 and t3.row("cp_sp_ffm_gp_arm").paper_miou == 71.40
    gp = t3.row("cp_sp_ffm_gp").spec
    assert gp.context.global_context and not gp.context.arm
    assert t3.row("cp").source == "BiSeNetV1 paper, Table 3, row cp"
    t4 = get_table("v1-4")
    assert {r.row: r.paper_gmacs for r in t4.rows} == {"xception39": 2.9, "res18": 10.8}
    assert all(r.input_hw == V1_HW and "MiB" in r.note for r in t4.rows)
    with pytest.raises(SpecError, match="v1-9"):
        get_table("v1-9")


INVALID = [
    (lambda: SpatialPathSpec(form="wide"), "spatial.form"),  # type: ignore[arg-type]
    (lambda: SpatialPathSpec(widths=(64, 0)), "spatial.widths"),
    (lambda: SpatialPathSpec(out_width=0), "spatial.out_width"),
    (lambda: ContextPathSpec(backbone="resnet50"), "context.backbone"),  # type: ignore[arg-type]
    (lambda: ContextPathSpec(lateral_kernel=5), "context.lateral_kernel"),
    (lambda: ContextPathSpec(out_width=-8), "context.out_width"),
    (lambda: BiSeNetV1Spec(fusion="max"), "fusion"),  # type: ignore[arg-type]
    (lambda: BiSeNetV1Spec(fusion_width=0), "fusion_width"),
    (lambda: BiSeNetV1Spec(ffm_reduction=0), "ffm_reduction"),
    (lambda: BiSeNetV1Spec(head_width=0), "head_width"),
    (lambda: BiSeNetV1Spec(aux_positions=("cp8",)), "aux_positions"),
    (lambda: BiSeNetV1Spec(aux_positions=("cp16", "cp16")), "aux_positions"),
    (lambda: BiSeNetV1Spec(aux_width=0), "aux_width"),
    (lambda: BiSeNetV1Spec(num_classes=1), "num_classes"),
    (lambda: BiSeNetV1Spec(width_mult=0.001), "width_mult"),  # channels round to zero
    (lambda: BiSeNetV1Spec(depth_mult=0.1), "depth_mult"),  # a stage rounds to 0 blocks
    (lambda: parse_spec("v1:bb=vgg16"), "context.backbone"),
    (lambda: parse_spec("v1:spw=64"), "spatial.widths"),
    (lambda: parse_spec("bisenetv1_x39:nope=1"), "nope"),
    (lambda: parse_spec('{"schema":1,"kind":"bisenetv1","fields":{"fusion":"x"}}'), "fusion"),
    (lambda: parse_spec('{"schema":1,"kind":"bisenetv3","fields":{}}'), "kind"),
]


@pytest.mark.parametrize("make,field", INVALID, ids=[f for _, f in INVALID])
def test_invalid_specs_are_rejected_naming_the_field(make, field: str) -> None:
    with pytest.raises(SpecError) as info:
        make()
    assert field in str(info.value) and "\n" not in str(info.value)


def test_every_leaf_field_has_a_unique_short_name() -> None:
    assert set(ALIASES) == set(leaf_types(BiSeNetV1Spec))
    assert len(set(ALIASES.values())) == len(ALIASES)


def test_searchspace_v1_imports_no_torch() -> None:
    code = (
        "import sys, searchspace.v1, searchspace.presets, searchspace.tables\n"
        "searchspace.tables.all_tables('all')\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False", out.stderr


# --- backbone weights ----------------------------------------------------------------


def test_backbone_weights_load(tmp_path: Path) -> None:
    """V1's backbones take the files users have through the one loader: the authors'
    Xception39 (nested under state_dict) and a torchvision ResNet-18 (its fc dropped)."""
    torch.manual_seed(0)
    source = Xception39()
    path = tmp_path / "x39.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model = build_model(X39)
    loaded = load_pretrained(model, path, "xception39")
    assert loaded.layout == "authors_xception39" and loaded.prefixes == ("semantic.backbone.",)
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.semantic.backbone.state_dict()[name], tensor), name
    r18 = ResNet18()
    state = {**r18.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "r18.pth")
    loaded = load_pretrained(
        build_model(V1_PRESETS["bisenetv1_r18"]), tmp_path / "r18.pth", "resnet18"
    )
    assert loaded.layout == "torchvision_resnet18" and loaded.dropped == ("fc.weight", "fc.bias")


def test_backbone_weights_that_do_not_fit_are_named(tmp_path: Path) -> None:
    state = Xception39().state_dict()

    def load(name: str) -> None:
        load_pretrained(build_model(X39), tmp_path / name, "xception39")

    missing = dict(state)
    missing.pop("layer3.0.residual_branch.1.conv1.weight")
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: layer3\.0\.residual_branch\.1"):
        load("missing.pth")
    wrong = {**state, "conv1.conv.weight": torch.zeros(16, 3, 3, 3)}
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatch: conv1\.conv\.weight"):
        load("wrong.pth")
    extra = {**state, "layer4.0.proj.conv1.weight": torch.zeros(3)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unknown layout .*layer4\.0\.proj\.conv1"):
        load("extra.pth")
    (tmp_path / "junk.pth").write_text("not weights")
    with pytest.raises(CheckpointError, match="not a readable"):
        load("junk.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load("absent.pth")
