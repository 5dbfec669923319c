"""The paper presets reproduce the V2 paper's complexity column (GMACs at 512x1024).

MACs come from torch.utils.flop_counter (FLOPs / 2) on the meta device. Tolerances are
the issue's: 3% for Tables 2, 3a, 3b (but gather_1x1), 3c and 5b; 6% for Table 5a and
BiSeNetV2-L, whose channel rounding under alpha the paper does not state. The head width
was inferred from one number (21.15); every other row is a prediction.
"""

from __future__ import annotations

from runners.profile.complexity import build_on_meta, count_macs, count_params
from searchspace.presets import get_preset
from searchspace.tables import all_tables

TOLERANCE_PCT = {
    "2": 3.0,
    "3a": 3.0,
    "3b": 3.0,
    "3c": 3.0,
    "4": 3.0,
    "5a": 6.0,
    "5b": 3.0,
    "6": 6.0,
}
# Known ambiguity 3 in the paper facts: no reconstruction explains this row.
REPORTED_NOT_ASSERTED = {"3b/gather_1x1"}


def test_paper_complexity_row_by_row(capsys) -> None:
    lines = [f"{'row':28s} {'paper':>8s} {'measured':>9s} {'delta':>8s}"]
    failures = []
    cache: dict[str, float] = {}
    for table in all_tables():
        for row in table.runnable:
            if row.paper_gmacs is None:
                continue
            spec = row.spec
            if spec.spec_id not in cache:
                cache[spec.spec_id] = count_macs(build_on_meta(spec), row.input_hw) / 1e9
            gmacs = cache[spec.spec_id]
            delta = 100 * (gmacs / row.paper_gmacs - 1)
            flag = ""
            if row.key in REPORTED_NOT_ASSERTED:
                flag = "  (reported, not asserted)"
            elif abs(delta) > TOLERANCE_PCT[row.table]:
                failures.append(f"{row.key}: {gmacs:.2f} vs {row.paper_gmacs} ({delta:+.1f}%)")
                flag = "  FAIL"
            lines.append(f"{row.key:28s} {row.paper_gmacs:8.2f} {gmacs:9.3f} {delta:+7.2f}%{flag}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert not failures, failures
    # the known outlier stays an outlier: if it ever matched, the docs would be wrong
    assert (
        cache[
            get_preset("bisenetv2")
            .replace(booster_positions=(), **{"semantic.ge_gather_kernel": 1})
            .spec_id
        ]
        > 15.78 * 1.05
    )


def test_head_width_inference_is_the_paper_total_within_1pct() -> None:
    gmacs = count_macs(build_on_meta(get_preset("bisenetv2")), (512, 1024)) / 1e9
    assert abs(gmacs / 21.15 - 1) < 0.01
    # and 352 is the multiple of 8 nearest to the exact solution
    without_head = count_macs(
        build_on_meta(get_preset("bisenetv2").replace(head_width=8)), (512, 1024)
    )
    per_channel = (9 * 128 + 19) * 64 * 128
    exact = (21.15e9 - without_head) / per_channel + 8
    assert round(exact / 8) * 8 == 352


def test_open_reimplementation_form_matches_its_reference_counts() -> None:
    model = build_on_meta(get_preset("bisenetv2_dwexp"))
    params = count_params(model, inference=True)
    gmacs = count_macs(model, (512, 1024)) / 1e9
    assert abs(params / 3_358_627 - 1) < 0.005, params
    assert abs(gmacs / 24.60 - 1) < 0.005, gmacs
