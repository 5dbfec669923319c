"""One spec, one network: spec_ids and built networks correspond one to one.

The enumeration (tests/canonical_enumeration.py) builds every switch combination with
every other field moved, random points of the search spaces, the presets and the table
rows without weight init and fingerprints each network.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from searchspace.errors import SpecError
from searchspace.optuna_spaces import SPACES, get_space
from searchspace.presets import get_preset, parse_spec
from searchspace.serialize import leaf_types
from searchspace.v1 import BiSeNetV1Spec
from searchspace.v2 import BiSeNetV2Spec
from tests.canonical_enumeration import (
    V1_MOVES,
    V1_PEER_MOVES,
    V1_PEER_SWITCHES,
    V1_SWITCHES,
    V2_BACKBONE_MOVES,
    V2_BACKBONE_SWITCHES,
    V2_MOVES,
    V2_PEER_MOVES,
    V2_PEER_SWITCHES,
    V2_SWITCHES,
    Census,
    add_presets_and_tables,
    add_space_points,
    enumerate_reach,
    enumerations,
)


@pytest.fixture(scope="module")
def census() -> dict[str, Any]:
    c = Census()
    reach, invalid = [], {}
    for kind, part in enumerations():
        found, invalid[(kind, part)] = enumerate_reach(c, kind, part)
        reach += found
    points = {name: add_space_points(c, name, 250, seed=1) for name in ("v2-full", "v1-full")}
    add_presets_and_tables(c)
    return {"census": c, "reach": reach, "invalid": invalid, "points": points}


def test_the_enumeration_moves_every_field() -> None:
    """A field added to a spec must be added to the enumeration, or this fails."""
    v2 = set(V2_MOVES) | set(V2_SWITCHES) | set(V2_PEER_MOVES) | set(V2_PEER_SWITCHES)
    v2 |= set(V2_BACKBONE_MOVES) | set(V2_BACKBONE_SWITCHES)
    v1 = set(V1_MOVES) | set(V1_SWITCHES) | set(V1_PEER_MOVES) | set(V1_PEER_SWITCHES)
    assert v2 == set(leaf_types(BiSeNetV2Spec))
    assert v1 == set(leaf_types(BiSeNetV1Spec))


def test_spec_ids_and_networks_correspond_one_to_one(census: dict[str, Any]) -> None:
    c: Census = census["census"]
    assert c.n_ids > 2000  # the enumeration really ran
    assert c.aliases() == []
    assert c.n_ids == c.n_networks


def test_every_field_reaches_the_network_or_is_rejected(census: dict[str, Any]) -> None:
    """Under each switch combination, moving a field changes the built network exactly
    when the spec's rules say it applies, and is refused with 'does not apply' when not."""
    bad = [
        f"{r.kind} {r.field} under {r.switches}: {r.outcome} (rules say off: {r.declared_off})"
        for r in census["reach"]
        if (r.declared_off, r.outcome)
        not in {(False, "changes"), (True, "rejected: does not apply")}
    ]
    assert not bad, "\n".join(bad[:20])
    fields = {(r.kind, r.field) for r in census["reach"]}
    moved = {("v2", f) for f in set(V2_MOVES) - set(V2_SWITCHES)}
    moved |= {("v2", f) for f in V2_PEER_MOVES}
    moved |= {("v2", f) for f in V2_BACKBONE_MOVES}
    moved |= {("v1", f) for f in set(V1_MOVES) - set(V1_SWITCHES)}
    assert fields == moved | {("v1", f) for f in V1_PEER_MOVES}
    off = {(r.kind, r.field) for r in census["reach"] if r.declared_off}
    # every kind of rule fired somewhere in the enumeration
    assert {("v2", "semantic.ge_gather_kernel"), ("v2", "semantic.ge_expand")} <= off
    assert {("v2", "booster_width"), ("v2", "detail.depths"), ("v2", "depth_mult")} <= off
    assert {("v1", "ffm_reduction"), ("v1", "spatial.form"), ("v1", "aux_width")} <= off
    # and the reimplementations' fields' rules
    assert {("v2", "bga_bias"), ("v2", "dropout_kind"), ("v2", "semantic.ge_dw_act")} <= off
    assert ("v2", "booster_width") in off  # without boosters, and under the double form
    assert {("v1", "aux_order"), ("v1", "ffm_reduction"), ("v1", "dropout_kind")} <= off
    # and the backbones': the paper branch's own fields, d, and a width where none exists
    backbone_off = {
        r.field
        for r in census["reach"]
        if r.declared_off and r.switches.get("semantic.backbone") is not None
    }
    assert {"semantic.ratio", "semantic.block", "depth_mult", "semantic.exp_ratio"} <= backbone_off
    assert "semantic.backbone_width" in backbone_off  # resnet18 has none
    assert not {"width_mult", "head_width"} & backbone_off  # alpha still scales the rest


def test_distinct_search_points_are_distinct_networks(census: dict[str, Any]) -> None:
    """No knob of a space is credited with a change it did not make."""
    for name, params_of_id in census["points"].items():
        assert len(params_of_id) > 150, name
        dup = {sid: p for sid, p in params_of_id.items() if len(p) > 1}
        assert not dup, f"{name}: {next(iter(dup.values()))}"


# --- the rules, as a user meets them ------------------------------------------------


def test_a_field_that_does_not_apply_is_one_line_naming_it() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec("v2:blk=ib,gk=1")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("semantic.ge_gather_kernel=1: does not apply when semantic.block='ib'")
    with pytest.raises(SpecError, match=r"^ffm_reduction=4: does not apply when fusion='sum'"):
        parse_spec("v1:fus=sum,red=4")
    with pytest.raises(SpecError, match=r"^booster_width=64: does not apply without booster"):
        parse_spec("v2:bst=none,bw=64")
    with pytest.raises(SpecError, match=r"^spatial\.form='paper': does not apply when fusion"):
        BiSeNetV1Spec().replace(fusion="cp_only", **{"spatial.form": "paper"})


def test_a_stored_spec_with_a_field_that_does_not_apply_is_refused() -> None:
    data = json.loads(BiSeNetV2Spec().replace(**{"semantic.block": "ib"}).to_json())
    data["fields"]["semantic"]["ge_down_dw"] = "5x5"
    with pytest.raises(SpecError, match=r"^semantic\.ge_down_dw='5x5': does not apply"):
        parse_spec(json.dumps(data))


def test_switching_a_field_off_resets_what_it_switches_off() -> None:
    """From a preset with GE knobs set, asking for IB blocks gives the IB network."""
    dw = get_preset("bisenetv2_dwexp")
    ib = parse_spec("bisenetv2_dwexp:blk=ib")
    assert ib.semantic.ge_expand == "gather"  # reset: it does not apply to IB blocks
    assert ib.head_width == dw.head_width  # untouched: it applies
    assert ib.spec_id == parse_spec("v2:blk=ib,hw=1024").spec_id
    no_boost = get_preset("bisenetv2").replace(aggregation="detail_only")
    assert no_boost.booster_positions == ()
    assert no_boost.spec_id == parse_spec("v2:agg=detail_only,bst=none").spec_id
    one = parse_spec("v2:e=1")
    assert one.spec_id == parse_spec("bisenetv2_dwexp:e=1,hw=352").spec_id


def test_one_network_one_id_for_equal_values_written_differently() -> None:
    assert BiSeNetV2Spec(width_mult=2).spec_id == BiSeNetV2Spec(width_mult=2.0).spec_id
    assert BiSeNetV2Spec(width_mult=2).to_json() == BiSeNetV2Spec(width_mult=2.0).to_json()
    a = parse_spec("v2:bst=s4+stem")
    b = parse_spec("v2:bst=stem+s4")
    assert a.booster_positions == ("stem", "s4") and a.spec_id == b.spec_id
    assert parse_spec("v1:aux=cp16+cp32").spec_id == parse_spec("v1").spec_id


def test_ffm_reduction_is_a_power_of_two_that_leaves_channels() -> None:
    with pytest.raises(SpecError, match="ffm_reduction=3: expected one of 1, 2, 4, 8, 16"):
        parse_spec("v1:red=3")
    with pytest.raises(SpecError, match="bottleneck of a 8-channel fusion"):
        parse_spec("v1:fw=8,red=16")


# --- conditional search spaces --------------------------------------------------------


class RecordingTrial:
    """A trial stub that picks a given choice and records which knobs were suggested."""

    def __init__(self, picks: dict[str, Any], rng: random.Random | None = None) -> None:
        self.picks, self.rng, self.suggested = picks, rng, []

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.suggested.append(name)
        if name in self.picks:
            return self.picks[name]
        return self.rng.choice(choices) if self.rng else choices[0]


def test_ge_knobs_are_suggested_only_for_ge_blocks() -> None:
    space = get_space("v2-full")
    ib = RecordingTrial({"block": "ib", "exp_ratio": 6})
    spec = space.sample(ib)
    assert spec.semantic.block == "ib"
    assert not {"ge_expand", "ge_gather_kernel", "ge_down_dw"} & set(ib.suggested)
    ge = RecordingTrial({"block": "ge", "exp_ratio": 6})
    space.sample(ge)
    assert {"ge_expand", "ge_gather_kernel", "ge_down_dw"} <= set(ge.suggested)
    e1 = RecordingTrial({"block": "ge", "exp_ratio": 1})
    space.sample(e1)
    assert "ge_expand" not in e1.suggested and "ge_gather_kernel" in e1.suggested


def test_booster_s5_5_is_asked_only_with_the_context_embedding() -> None:
    space = get_space("v2-full")
    off = RecordingTrial({"context_embedding": False})
    assert "s5_5" not in space.sample(off).booster_positions
    assert "booster_s5_5" not in off.suggested
    on = RecordingTrial({"context_embedding": True, "booster_s5_5": True})
    assert "s5_5" in space.sample(on).booster_positions


def test_v1_space_asks_spatial_and_ffm_knobs_only_where_they_apply() -> None:
    space = get_space("v1-full")
    cp = RecordingTrial({"fusion": "cp_only"})
    space.sample(cp)
    assert not {"spatial_form", "ffm_reduction"} & set(cp.suggested)
    ffm = RecordingTrial({"fusion": "ffm", "ffm_reduction": 4})
    assert space.sample(ffm).ffm_reduction == 4


def test_parameters_naming_a_knob_the_space_lacks_or_that_does_not_apply_are_refused() -> None:
    space = get_space("v2-full")
    point = space.cheapest_params()
    assert space.to_spec(point) == space.to_spec(dict(point))
    with pytest.raises(SpecError, match=r"^knob 'colour': not in space 'v2-full'"):
        space.to_spec({**point, "colour": 1})
    ib = {**point, "block": "ib"}
    with pytest.raises(SpecError, match=r"^knob 'ge_expand'.*does not apply here"):
        space.to_spec({**ib, "ge_expand": "gather"})
    missing = dict(point)
    del missing["head_width"]
    with pytest.raises(SpecError, match=r"^knob 'head_width': missing"):
        space.to_spec(missing)
    with pytest.raises(SpecError, match=r"^knob 'width_mult'=0.3: expected one of"):
        space.to_spec({**point, "width_mult": 0.3})


def test_the_multipliers_space_is_a_flat_grid_of_fifteen() -> None:
    space = SPACES["multipliers"]
    assert not space.conditional
    grid = space.grid()
    assert len(grid) == 15 == space.size_up_to(100)
    assert len({space.to_spec(p).spec_id for p in grid}) == 15
    assert space.size_up_to(10) == 11  # counted only as far as asked
    with pytest.raises(SpecError, match="more than 10 points"):
        space.grid(limit=10)


@pytest.mark.parametrize("text", ["v2:hdo=0.1,bdo=0.1,bw=64", "v2:bst=s3+s5_5", "v1:hdo=0.1"])
def test_deployed_spec_is_the_network_inference_runs(text: str) -> None:
    """``deployed()`` drops only what eval never runs: the trained network's weights,
    booster / aux heads left out, load into it exactly and give the same logits."""
    import torch

    from blocks.builder import build_model

    spec = parse_spec(text)
    deployed = spec.deployed()
    assert deployed.spec_id != spec.spec_id
    assert deployed.deployed() == deployed and deployed.head_dropout == 0.0
    trained, plain = build_model(spec).eval(), build_model(deployed).eval()
    assert len(trained.boosters) > 0 and len(plain.boosters) == 0
    state = {k: v for k, v in trained.state_dict().items() if not k.startswith("boosters.")}
    plain.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(trained(x), plain(x))
