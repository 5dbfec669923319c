"""Specs: validation, canonical JSON, ids, compact strings, presets and tables as data."""

from __future__ import annotations

import json

import pytest

from searchspace.errors import SpecError
from searchspace.presets import V2_PRESETS, get_preset, parse_spec
from searchspace.serialize import leaf_types
from searchspace.tables import all_tables, get_table, table_names
from searchspace.v2 import BiSeNetV2Spec, DetailBranchSpec, SemanticBranchSpec, resolve

# Golden ids: a change here means stored results no longer match their specs.
GOLDEN_IDS = {
    "bisenetv2": "5722b330ea",
    "bisenetv2_l": "ce7ac04b37",
    "bisenetv2_dwexp": "7dd3876ddb",
    "bisenetv2_coincheung": "ca13c7f883",
    "bisenetv2_mmseg": "5789cee258",
}


def every_spec() -> list[BiSeNetV2Spec]:
    specs = list(V2_PRESETS.values())
    specs += [r.spec for t in all_tables() for r in t.runnable]
    return specs


@pytest.mark.parametrize("name", sorted(V2_PRESETS))
def test_golden_spec_ids(name: str) -> None:
    assert V2_PRESETS[name].spec_id == GOLDEN_IDS[name]


@pytest.mark.parametrize("spec", every_spec(), ids=lambda s: s.to_string())
def test_json_and_string_round_trip(spec: BiSeNetV2Spec) -> None:
    again = parse_spec(spec.to_json())
    assert again == spec and again.spec_id == spec.spec_id
    assert parse_spec(spec.to_string()) == spec
    assert parse_spec(spec.to_json(indent=2)) == spec


def test_canonical_json_has_schema_defaults_and_sorted_keys() -> None:
    data = json.loads(BiSeNetV2Spec().to_json())
    assert data["schema"] == 1 and data["kind"] == "bisenetv2"
    assert set(data["fields"]) == {
        "detail", "semantic", "aggregation", "head_width", "booster_positions",
        "booster_width", "width_mult", "depth_mult", "num_classes",
    }  # fmt: skip
    assert BiSeNetV2Spec().to_json() == json.dumps(data, sort_keys=True, separators=(",", ":"))


def test_compact_string_lists_only_changes() -> None:
    assert BiSeNetV2Spec().to_string() == "v2"
    spec = parse_spec("bisenetv2:lam=1/8,agg=sum,bst=none")
    assert spec.to_string() == "v2:agg=sum,bst=none,lam=0.125"
    assert spec.semantic.ratio == 0.125 and spec.booster_positions == ()
    # dotted field paths work as well as the short names
    assert parse_spec("v2:semantic.exp_ratio=4").semantic.exp_ratio == 4


def test_spec_file(tmp_path) -> None:
    path = tmp_path / "s.json"
    spec = get_preset("bisenetv2_dwexp")
    path.write_text(spec.to_json(indent=2))
    assert parse_spec(str(path)) == spec


def test_ablation_row_is_base_with_fields_replaced() -> None:
    row = get_table("3a").row("lambda_1_8")
    assert row.spec == get_preset("bisenetv2").replace(
        booster_positions=(), **{"semantic.ratio": 0.125}
    )
    assert row.paper_gmacs == 19.93 and row.paper_miou == 69.26
    assert row.source == "BiSeNetV2 paper, Table 3a, row lambda_1_8"


def test_resolution_applies_lambda_alpha_and_d() -> None:
    plan = resolve(BiSeNetV2Spec())
    assert plan.detail_widths == (64, 64, 128) and plan.stem_width == 16
    assert plan.semantic_widths == (32, 64, 128) and plan.semantic_depths == (2, 2, 4)
    plan = resolve(get_preset("bisenetv2_l"))
    assert plan.detail_widths == (128, 128, 256) and plan.stem_width == 32
    assert plan.semantic_widths == (64, 128, 256) and plan.semantic_depths == (6, 6, 12)
    assert resolve(BiSeNetV2Spec().replace(**{"semantic.ratio": 0.5})).semantic_widths[0] == 64


def test_every_table_is_defined_with_paper_numbers() -> None:
    assert set(table_names()) >= {"2", "3a", "3b", "3c", "4", "5a", "5b", "6"}
    for table in all_tables():
        for row in table.rows:
            assert row.paper_miou is not None, row.key
            assert (row.spec is None) == (row.unsupported is not None), row.key
    # Table 6's backbone rows: V2-L with an ImageNet backbone as the whole semantic branch
    t6 = get_table("6")
    assert not [r.row for r in t6.rows if r.unsupported]
    backbones = {r.row: r.spec.semantic for r in t6.rows if r.spec.semantic.backbone != "bisenetv2"}
    assert {
        k: (s.backbone, s.backbone_width, s.context_embedding) for k, s in backbones.items()
    } == {
        "shufflenetv2_1_5x": ("shufflenetv2", 1.5, False),
        "mobilenetv2": ("mobilenetv2", 1.0, False),
        "resnet18": ("resnet18", 1.0, False),
    }
    assert {t6.row(k).spec.width_mult for k in backbones} == {2.0}
    assert get_table("2").row("bga_booster_ohem").recipe_changes == {"loss": "ohem"}


INVALID = [
    (lambda: DetailBranchSpec(widths=()), "detail.widths"),
    (lambda: DetailBranchSpec(widths=(64, 0, 128)), "detail.widths"),
    (lambda: DetailBranchSpec(depths=(2, 0, 3)), "detail.depths"),
    (lambda: DetailBranchSpec(depths=(2, 3)), "detail.depths"),
    (lambda: SemanticBranchSpec(ratio=0.0), "semantic.ratio"),
    (lambda: SemanticBranchSpec(exp_ratio=0), "semantic.exp_ratio"),
    (lambda: SemanticBranchSpec(block="resnet"), "semantic.block"),  # type: ignore[arg-type]
    (lambda: SemanticBranchSpec(ge_expand="both"), "semantic.ge_expand"),  # type: ignore[arg-type]
    (lambda: SemanticBranchSpec(ge_gather_kernel=5), "semantic.ge_gather_kernel"),
    (lambda: SemanticBranchSpec(ge_down_dw="7x7"), "semantic.ge_down_dw"),  # type: ignore[arg-type]
    (lambda: SemanticBranchSpec(depths=(2, 0, 4)), "semantic.depths"),
    (lambda: BiSeNetV2Spec(aggregation="max"), "aggregation"),  # type: ignore[arg-type]
    (lambda: BiSeNetV2Spec(head_width=0), "head_width"),
    (lambda: BiSeNetV2Spec(booster_positions=("s6",)), "booster_positions"),
    (lambda: BiSeNetV2Spec(booster_positions=("s3", "s3")), "booster_positions"),
    (lambda: BiSeNetV2Spec(booster_width=-1), "booster_width"),
    (lambda: BiSeNetV2Spec(num_classes=1), "num_classes"),
    (lambda: BiSeNetV2Spec(width_mult=-1.0), "width_mult"),
    (lambda: BiSeNetV2Spec(width_mult=0.001), "width_mult"),  # channels round to zero
    (lambda: BiSeNetV2Spec(depth_mult=0.1), "depth_mult"),  # a stage rounds to 0 layers
    (lambda: BiSeNetV2Spec(aggregation="detail_only"), "booster_positions"),
    (
        lambda: BiSeNetV2Spec(semantic=SemanticBranchSpec(context_embedding=False)).replace(
            booster_positions=("s5_5",)
        ),
        "booster_positions",
    ),
    (lambda: parse_spec("v2:nope=1"), "nope"),
    (lambda: parse_spec("v2:e=six"), "semantic.exp_ratio"),
    (lambda: parse_spec('{"head_width": "wide"}'), "head_width"),
    (lambda: parse_spec('{"semantic": {"ratio": 0}}'), "semantic.ratio"),
    (lambda: parse_spec('{"detail": {"widths": [64, 64'), "malformed JSON"),
    (lambda: parse_spec("resnet50"), "resnet50"),
]


@pytest.mark.parametrize("make,field", INVALID, ids=[f for _, f in INVALID])
def test_invalid_specs_are_rejected_naming_the_field(make, field: str) -> None:
    with pytest.raises(SpecError) as info:
        make()
    message = str(info.value)
    assert field in message
    assert "\n" not in message


def test_every_leaf_field_has_a_short_name() -> None:
    from searchspace.v2 import ALIASES

    assert set(ALIASES) == set(leaf_types(BiSeNetV2Spec))
    assert len(set(ALIASES.values())) == len(ALIASES)


@pytest.mark.parametrize(
    "text, message",
    [
        ("v2:lam=1/0", "semantic.ratio='1/0': division by zero"),
        ("v2:a=1.5,a=2", "'a': width_mult is given twice"),
        ("v2:a=1.5,width_mult=2", "'width_mult': width_mult is given twice"),
        ("v2:lam=nan", "semantic.ratio=nan: lambda must be in (0, 4]"),
    ],
)
def test_bad_spec_overrides_are_one_line(text: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(text)
    assert str(err.value) == message


def test_recipe_overrides_name_recipe_fields() -> None:
    from searchspace.recipes import parse_recipe

    with pytest.raises(SpecError, match=r"^'foo': unknown recipe field \(fields: crop_hw"):
        parse_recipe("smoke:foo=1")
    with pytest.raises(SpecError, match=r"^lr='1/0': division by zero$"):
        parse_recipe("smoke:lr=1/0")
    with pytest.raises(SpecError, match=r"^'budget': budget is given twice$"):
        parse_recipe("smoke:budget=1,budget=2")


def test_recipe_fields_that_do_not_apply_are_refused_or_reset() -> None:
    from searchspace.recipes import get_recipe, parse_recipe

    with pytest.raises(SpecError, match=r"^ohem_thresh=0\.5: does not apply when loss='ce'"):
        parse_recipe("smoke:ohem_thresh=0.5")
    ohem = parse_recipe("smoke:loss=ohem,ohem_thresh=0.5")
    assert ohem.replace(loss="ce") == get_recipe("smoke")  # switched off: reset
