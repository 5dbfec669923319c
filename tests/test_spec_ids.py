"""Spec ids are keys of stored results: a code change must never move one.

The ids below were taken before the reimplementations' fields (``added_field``) existed;
every table row must still hash to them, and the recipes likewise (the presets' golden
ids are in tests/test_specs.py and tests/test_v1.py).
"""

from __future__ import annotations

from searchspace.recipes import RECIPES
from searchspace.tables import get_table, table_names
from searchspace.v2 import BiSeNetV2Spec

PINNED = {
    "2:detail_only": "394662186f",
    "2:semantic_only": "4d877ebf25",
    "2:sum": "6edd8c317d",
    "2:concat": "6ff35f8b17",
    "2:bga": "6186f96ae0",
    "2:bga_booster": "5722b330ea",
    "2:bga_booster_ohem": "5722b330ea",
    "3a:detail_only": "394662186f",
    "3a:lambda_1_2": "1d030787bb",
    "3a:lambda_1_4": "6186f96ae0",
    "3a:lambda_1_8": "9541c3366f",
    "3a:lambda_1_16": "b0add28ead",
    "3b:full": "6186f96ae0",
    "3b:no_context": "a0a22328b6",
    "3b:dw5x5": "528b280986",
    "3b:gather_1x1": "b44e458c25",
    "3c:detail_only": "394662186f",
    "3c:eps_1": "4a45b8934e",
    "3c:eps_2": "812e9ac32f",
    "3c:eps_4": "59831997e4",
    "3c:eps_6": "6186f96ae0",
    "3c:eps_8": "6144556c21",
    "4:none": "6186f96ae0",
    "4:s2_s3_s4_s5_4_s5_5": "c9722bfe42",
    "4:s2_s3_s4_s5_4": "5722b330ea",
    "4:s2_s3_s4": "29b8d4848c",
    "4:s3_s4_s5_4_s5_5": "75ff44030c",
    "4:s4_s5_4_s5_5": "2d7ce8bdb5",
    "4:s5_4_s5_5": "6a5ea59742",
    "4:s2_s3_s4_s5_4_ohem": "5722b330ea",
    "5a:alpha_1_0": "5722b330ea",
    "5a:alpha_1_25": "8314c2d6f6",
    "5a:alpha_1_5": "e7b72ceaf8",
    "5a:alpha_1_75": "d800a89286",
    "5a:alpha_2_0": "a528be0ef7",
    "5b:d_1": "5722b330ea",
    "5b:d_2": "df5fbb90ba",
    "5b:d_3": "107e339503",
    "5b:d_4": "fb8d6633b1",
    "6:ours_small": "5722b330ea",
    "6:ours_large": "ce7ac04b37",
    "v1-3:cp": "ad41dae6fc",
    "v1-3:cp_sp_sum": "1c711ec3b4",
    "v1-3:cp_sp_ffm": "3601b947c2",
    "v1-3:cp_sp_ffm_gp": "1507371894",
    "v1-3:cp_sp_ffm_arm": "d7e79ab4fe",
    "v1-3:cp_sp_ffm_gp_arm": "8a932dfb69",
    "v1-4:xception39": "8a932dfb69",
    "v1-4:res18": "a2447fd687",
}
# paper moved once, on purpose, from 03fa87ae3f when it took the crop-first pipeline
# (its pixels differ by up to one grey level; no stored result used the paper recipe)
PINNED_RECIPES = {"smoke": "b1308994f1", "synth": "e70a698a13", "paper": "86c90b0243"}


def _current() -> dict[str, str]:
    out = {}
    for table in table_names("all"):
        for row in get_table(table).rows:
            if row.spec is not None:
                out[f"{table}:{row.row}"] = row.spec.spec_id
    return out


def test_no_published_spec_id_moved() -> None:
    now = _current()
    moved = {k: (v, now.get(k)) for k, v in PINNED.items() if now.get(k) != v}
    assert not moved


def test_no_recipe_id_moved() -> None:
    assert {k: RECIPES[k].recipe_id for k in PINNED_RECIPES} == PINNED_RECIPES


def test_an_added_field_enters_the_id_only_off_its_default() -> None:
    base = BiSeNetV2Spec()
    assert "bga_out_act" not in base.to_json()
    changed = base.replace(bga_out_act=True)
    assert '"bga_out_act":true' in changed.to_json()
    assert changed.spec_id != base.spec_id
    assert changed.replace(bga_out_act=False).spec_id == base.spec_id
