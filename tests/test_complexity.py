"""The paper presets reproduce the V2 paper's complexity column (GMACs at 512x1024).

MACs come from torch.utils.flop_counter (FLOPs / 2) on the meta device. Tolerances are
the issue's: 3% for Tables 2, 3a, 3b (but gather_1x1), 3c and 5b; 6% for Table 5a and
BiSeNetV2-L, whose channel rounding under alpha the paper does not state. The head width
was inferred from one number (21.15); every other row is a prediction.
"""

from __future__ import annotations

from runners.profile.complexity import build_on_meta, count_macs, count_params
from searchspace.presets import get_preset
from searchspace.tables import all_tables, get_table

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
# Table 6's backbone rows: read as "V2-L with the backbone as its whole semantic branch",
# they cost 71-86 GMACs against the paper's 129-143 (V2-L's own semantic branch is 50 of
# its 116); the paper's numbers sit near V2-L's total plus the backbone instead (see
# test_table6_backbone_rows_against_the_paper and README, "Table 6"). A finding to report.
REPORTED_NOT_ASSERTED = {
    "3b/gather_1x1",
    "6/shufflenetv2_1_5x",
    "6/mobilenetv2",
    "6/resnet18",
}


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


def test_table6_backbone_rows_against_the_paper(capsys) -> None:
    """The issue's reading of Table 6 ("the rows swap V2-L's semantic branch for the
    backbone") checked against our counts, printed and pinned: the swap saves what V2-L's
    own semantic branch costs (about 50 GMACs at alpha 2, d 3) and adds the backbone's 3-19,
    so every backbone row is 30-45 GMACs below V2-L, where the paper has them 10-25 above."""
    t6 = get_table("6")
    large = count_macs(build_on_meta(t6.row("ours_large").spec), (512, 1024)) / 1e9
    lines = []
    for name in ("shufflenetv2_1_5x", "mobilenetv2", "resnet18"):
        row = t6.row(name)
        model = build_on_meta(row.spec)
        total = count_macs(model, (512, 1024)) / 1e9
        backbone = count_macs(model.semantic.backbone, (512, 1024)) / 1e9
        paper_extra, ours_extra = row.paper_gmacs - t6.row("ours_large").paper_gmacs, total - large
        lines.append(
            f"{name:18s} backbone {backbone:6.2f}  row {total:6.2f} (paper {row.paper_gmacs})"
            f"  row - V2-L: ours {ours_extra:+6.2f}, paper {paper_extra:+6.2f}"
        )
        assert ours_extra < 0 < paper_extra  # the swap reading does not give the paper's
    with capsys.disabled():
        print("\n" + "\n".join(lines))
