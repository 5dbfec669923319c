"""The profiler: counters agree where they must, BN folding is exact, latency is consistent,
and the command line reports every bad input as one line with exit status 2.

Anything that runs real arithmetic uses a 64x128 input, so the file takes seconds.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from blocks.builder import build_model
from runners.cli import run_cli
from runners.device import cuda_available
from runners.profile.__main__ import main as profile_main
from runners.profile.complexity import count_primary
from runners.profile.core import profile_spec
from runners.profile.counters import (
    count_ptflops,
    count_thop,
    fvcore_activations,
    fvcore_counts,
    largest_disagreement_pct,
)
from runners.profile.inference import (
    calibrate_batchnorm_,
    fold_bn,
    make_inference_model,
    max_abs_diff,
)
from runners.profile.latency import LatencyConfig, measure_latency, measure_latency_interleaved
from searchspace.errors import UsageError
from searchspace.presets import V2_PRESETS, parse_spec
from searchspace.tables import get_table

ROOT = Path(__file__).resolve().parent.parent
HW = (64, 128)
# a few structurally different variants besides the presets, for BN folding
FOLD_VARIANTS = [
    "v2:agg=sum",
    "v2:agg=concat",
    "v2:agg=ffm",
    "v2:agg=detail_only,bst=none",
    "v2:blk=ib",
]
# the ImageNet backbones as semantic branch (alpha 1/4 keeps them quick)
BACKBONE_SPECS = [
    "v2:bb=mobilenetv2,a=0.25",
    "v2:bb=shufflenetv2,bbw=0.5,a=0.25",
    "v2:bb=resnet18,a=0.25",
]
NO_GPU = "no CUDA GPU available"
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # for subprocesses, see one_thread


pytestmark = pytest.mark.usefixtures("one_thread")


def real_model(spec_text: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(parse_spec(spec_text)).eval()


# --- counters ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*V2_PRESETS, *BACKBONE_SPECS])
def test_conv_macs_agree_exactly_with_fvcore(name: str) -> None:
    """FlopCounterMode/2 on meta == fvcore's conv count on real tensors, to the MAC."""
    model = real_model(name)
    primary = count_primary(model, HW)
    fv = fvcore_counts(model, HW)
    assert primary.conv_macs == fv["conv"] > 0
    assert primary.macs == primary.conv_macs  # these networks have no other matmul-like op
    # fvcore adds BN and resize, never less than the convs
    assert sum(fv.values()) >= fv["conv"]


def test_activation_count_matches_fvcore() -> None:
    model = real_model("bisenetv2")
    assert count_primary(model, HW).activations == fvcore_activations(model, HW)


def test_other_counters_stay_within_two_percent() -> None:
    """They count extra ops (BN, bias, resize); more than 2% would mean a counting bug."""
    model = real_model("bisenetv2")
    primary = count_primary(model, HW).macs
    for count in (count_thop, count_ptflops):
        assert abs(count(model, HW) / primary - 1) < 0.02


def test_parts_add_up_and_boosters_are_excluded_at_inference() -> None:
    spec = V2_PRESETS["bisenetv2"]
    r = profile_spec(spec, HW, counters=("flop_counter",), latency=None)
    assert list(r.params_by_part) == ["detail", "semantic", "fusion", "head", "boosters"]
    assert sum(r.params_by_part.values()) == r.params_total
    assert r.params_inference == r.params_total - r.params_by_part["boosters"]
    assert sum(r.macs_by_part.values()) == r.macs  # all work happens inside the parts
    assert r.macs_by_part["boosters"] == 0  # eval mode: booster heads do not run
    assert r.gflops == pytest.approx(2 * r.gmacs)
    assert r.counter_macs == {"flop_counter": r.macs}
    assert r.macs_disagreement_pct is None
    json.dumps(r.to_dict())  # JSON-able as is


def test_largest_disagreement_keeps_its_sign() -> None:
    assert largest_disagreement_pct(100, {"a": 101, "b": 97}) == pytest.approx(-3.0)
    assert largest_disagreement_pct(100, {}) is None


def test_table_3a_rows_match_the_paper_at_512x1024() -> None:
    """The primary counter only, on meta: the whole table in well under a second or two."""
    for row in get_table("3a").runnable:
        r = profile_spec(row.spec, row.input_hw, counters=("flop_counter",), latency=None)
        assert abs(r.gmacs / row.paper_gmacs - 1) < 0.03, (row.key, r.gmacs)


# --- BN folding -------------------------------------------------------------------------


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv path, bn path) of every conv directly followed by a BN in a Sequential."""
    pairs = []
    for name, seq in model.named_modules():
        if isinstance(seq, nn.Sequential):
            kids = list(seq.named_children())
            for (a, conv), (b, bn) in itertools.pairwise(kids):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    pairs.append((f"{name}.{a}", f"{name}.{b}"))
    return pairs


@pytest.mark.parametrize("spec_text", [*V2_PRESETS, *FOLD_VARIANTS, *BACKBONE_SPECS])
def test_bn_folding_is_exact(spec_text: str) -> None:
    """Folded + channels_last computes what the original computes.

    (1) The model as built (what the profiler times), end to end: within 1e-4.
    (2) BN given non-trivial statistics and affine parameters (a fold that forgot the
    running mean or the shift fails here): every folded conv against the original conv +
    BN, layer by layer, within 1e-5 relative (fp32 rounding; the algebra is exact).
    (3) That model end to end, against the same model in fp64: within 1e-4 of the logits'
    magnitude, or within 4x the unfolded fp32 model's own error. A flat 1e-4 is not a fair
    fp32 bound: calibrated logits reach 20-70 (thousands for FFM), changing only the memory
    format already moves bisenetv2_l's by ~2e-4, and the reimplementations' forms (ReLU
    after the depthwise convs, nearest upsampling) sit ~6e-5 x scale from fp64 unfolded.
    """
    x = torch.randn(1, 3, *HW, generator=torch.Generator().manual_seed(1))
    model = real_model(spec_text)
    assert max_abs_diff(model, make_inference_model(model), x) < 1e-4

    calibrated = calibrate_batchnorm_(model, (4, 3, 32, 64))
    folded = make_inference_model(calibrated, fold=True, channels_last=True)
    pairs = _conv_bn_pairs(calibrated)
    assert pairs
    gen = torch.Generator().manual_seed(2)
    with torch.inference_mode():
        for conv_path, bn_path in pairs:
            conv, bn = calibrated.get_submodule(conv_path), calibrated.get_submodule(bn_path)
            assert isinstance(folded.get_submodule(bn_path), nn.Identity)
            xs = torch.randn(1, conv.in_channels, 9, 9, generator=gen)
            ref, got = bn(conv(xs)), folded.get_submodule(conv_path)(xs)
            assert float((ref - got).abs().max()) <= 1e-5 * float(ref.abs().max()), conv_path
        scale = float(calibrated(x).abs().max())
        # the fp32 floor: the unfolded model's own distance from the same model in fp64
        exact = copy.deepcopy(calibrated).double()(x.double())
        floor = float((calibrated(x).double() - exact).abs().max())
        error = float((folded(x).double() - exact).abs().max())
    assert error < max(1e-4 * max(scale, 1.0), 4 * floor), (spec_text, error, floor, scale)
    # the original is untouched; only BNs that follow no conv remain in the copy
    assert any(isinstance(m, nn.BatchNorm2d) for m in calibrated.modules())
    left = [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(n.endswith("ce.bn") for n in left), left


def test_fold_reports_the_context_embedding_bn_it_cannot_fold() -> None:
    model = real_model("bisenetv2")
    report = fold_bn(model)
    assert report.left == ("semantic.ce.bn",)
    assert report.folded == 57
    with pytest.raises(ValueError, match="eval-mode"):
        fold_bn(model.train())


# --- latency ----------------------------------------------------------------------------


def _consistent(r, batch: int = 1) -> None:
    assert len(r.samples_ms) == r.repeats
    assert r.min_ms <= r.q1_ms <= r.median_ms <= r.q3_ms <= r.max_ms
    assert r.median_ms <= r.p95_ms <= r.max_ms
    assert r.iqr_ms == pytest.approx(r.q3_ms - r.q1_ms)
    assert r.min_ms <= r.mean_ms <= r.max_ms
    assert r.images_per_s == pytest.approx(batch * 1000 / r.median_ms)
    assert r.batch == batch


def test_measure_latency_forward_fields_are_consistent() -> None:
    model = real_model("bisenetv2")
    cfg = LatencyConfig(warmup=1, repeats=4, threads=1)
    before = torch.get_num_threads()
    r = measure_latency(model, (2, 3, *HW), cfg)
    _consistent(r, batch=2)
    assert r.threads == 1 and torch.get_num_threads() == before  # restored
    assert r.timer == "perf_counter" and r.backend == "torch"
    assert model.training is False and isinstance(model.head.conv.bn, nn.BatchNorm2d)


def test_measure_latency_end2_end_inference_ready_bf16() -> None:
    model = real_model("bisenetv2_dwexp")
    cfg = LatencyConfig(
        warmup=1,
        repeats=3,
        scope="end2end",
        raw_hw=(128, 256),
        fold_bn=True,
        channels_last=True,
        dtype="bf16",
    )
    r = measure_latency(model, (1, 3, *HW), cfg)
    _consistent(r)
    assert r.options["raw_hw"] == [128, 256] and r.options["fold_bn"] is True
    json.dumps(r.to_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": "fp16"}, "--dtype fp16"),
        ({"dtype": "int8"}, "--dtype int8"),
        ({"scope": "whole"}, "--scope"),
        ({"repeats": 0}, "--repeats"),
        ({"cuda_graphs": True}, "--cuda-graphs"),
        ({"device": "tpu"}, "--device"),
    ],
)
def test_latency_config_rejects_what_cannot_run(kwargs: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        LatencyConfig(**kwargs)


@pytest.mark.skipif(cuda_available(), reason="a CUDA GPU is present")
def test_cuda_without_gpu_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no CUDA device"):
        LatencyConfig(device="cuda").check()


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason=NO_GPU)
@pytest.mark.parametrize(
    "cfg",
    [
        LatencyConfig(device="cuda", warmup=2, repeats=5),
        LatencyConfig(device="cuda", warmup=2, repeats=5, dtype="fp16", channels_last=True),
        LatencyConfig(device="cuda", warmup=2, repeats=5, dtype="fp16", cuda_graphs=True),
        LatencyConfig(device="cuda", warmup=2, repeats=5, scope="end2end", fold_bn=True),
    ],
    ids=["fp32", "fp16-cl", "fp16-graphs", "end2end"],
)
def test_cuda_latency(cfg: LatencyConfig) -> None:
    r = measure_latency(real_model("bisenetv2"), (1, 3, *HW), cfg)
    _consistent(r)
    assert r.timer == "cuda_events"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason=NO_GPU)
def test_cuda_profile_records_the_gpu() -> None:
    cfg = LatencyConfig(device="cuda", warmup=1, repeats=2)
    r = profile_spec(V2_PRESETS["bisenetv2"], HW, counters=("flop_counter",), latency=cfg)
    assert r.environment["device_name"] == torch.cuda.get_device_name(0)
    assert r.environment["cudnn"] is not None


# --- command line -----------------------------------------------------------------------


def test_cli_table_prints_rows_and_paper_numbers(tmp_path: Path) -> None:
    csv_path, json_path = tmp_path / "3a.csv", tmp_path / "3a.json"
    cmd = [sys.executable, "-m", "runners.profile", "--table", "3a", "--input-hw", "64", "128"]
    cmd += ["--warmup", "0", "--repeats", "1", "--counters", "flop_counter,ptflops"]
    cmd += ["--threads", "1", "--csv", str(csv_path), "--json", str(json_path)]
    out = subprocess.run(cmd, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    table = get_table("3a")
    for row in table.runnable:
        assert row.key in out.stdout
        assert f"{row.paper_gmacs:.2f}" in out.stdout
    assert "GFLOPs(2xMAC)" in out.stdout and "median_ms" in out.stdout
    assert "n/a@512x1024" in out.stdout  # no delta against the paper at another input size
    assert "AMD" in out.stdout or "threads" in out.stdout  # the environment header
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + len(table.runnable)
    data = json.loads(json_path.read_text())
    assert data["environment"]["torch"] == torch.__version__
    assert [r["row"] for r in data["results"]] == [r.row for r in table.runnable]
    first = data["results"][0]
    assert isinstance(first["macs"], int) and first["latency"]["repeats"] == 1
    assert first["latency"]["threads"] == 1
    assert set(first["counter_macs"]) == {"flop_counter", "ptflops"}


def test_cli_single_spec_without_latency(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        args = ["--spec", "v2:agg=sum", "--input-hw", "64", "128", "--no-latency"]
        run_cli(profile_main, [*args, "--counters", "flop_counter"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "spec v2:agg=sum" in out and "GMACs" in out and "latency:" not in out


BAD_INPUTS = [
    (["--spec", "no_such_preset"], "unknown spec 'no_such_preset'"),
    (["--table", "9z"], "unknown table '9z'"),
    (["--spec", "v2:agg"], "expected key=value"),
    (["--spec", "v2:lam=abc"], "semantic.ratio"),
    (["--spec", "{not json"], "malformed JSON"),
    (["--spec", "BADJSON"], "malformed JSON"),
    (["--input-hw", "16", "128"], "at least 32"),
    (["--input-hw", "64", "abc"], "expected two integers"),
    (["--input-hw", "64"], "expected 2 arguments"),
    (["--dtype", "fp16"], "--dtype fp16"),
    (["--counters", "flop_counter,nope"], "unknown counter"),
    (["--batch", "0"], "--batch"),
]
if not cuda_available():
    BAD_INPUTS.append((["--device", "cuda"], "no CUDA device"))


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=lambda v: " ".join(v))
def test_cli_bad_input_is_one_line_exit_2_nothing_written(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"aggregation": ')
    args = [str(bad_json) if a == "BADJSON" else a for a in args]
    out_csv, out_json = tmp_path / "out.csv", tmp_path / "out.json"
    with pytest.raises(SystemExit) as exc:
        run_cli(profile_main, [*args, "--csv", str(out_csv), "--json", str(out_json)])
    captured = capsys.readouterr()
    assert exc.value.code == 2
    assert captured.err.count("\n") == 1 and message in captured.err, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_cli_bad_input_in_a_real_process(tmp_path: Path) -> None:
    """The same contract end to end, once, in a subprocess (the others run in-process)."""
    out_csv = tmp_path / "out.csv"
    cmd = [sys.executable, "-m", "runners.profile", "--spec", "v2", "--dtype", "fp16"]
    out = subprocess.run(
        [*cmd, "--csv", str(out_csv)], cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert len(out.stderr.splitlines()) == 1 and "--dtype fp16" in out.stderr
    assert out.stdout == "" and not out_csv.exists()


def test_latency_result_has_no_nan() -> None:
    r = measure_latency(real_model("bisenetv2"), (1, 3, 32, 32), LatencyConfig(warmup=0, repeats=1))
    assert all(math.isfinite(v) for v in (r.median_ms, r.p95_ms, r.iqr_ms, r.images_per_s))


def test_interleaved_latency_times_each_model_in_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model gets ``repeats`` timed calls spread over the rounds, warm-up first and
    one untimed call a round after it; the order rotates so no model is always last."""
    from runners.profile import latency as latency_mod

    calls: list[tuple[str, int, int]] = []

    def fake_timer(step, warmup: int, repeats: int) -> list[float]:
        calls.append((step.__name__, warmup, repeats))
        return [1.0] * repeats

    monkeypatch.setattr(latency_mod, "_time_cpu", fake_timer)

    def named_step(model, shape, cfg):
        def step():
            return None

        step.__name__ = model.tag
        return step

    monkeypatch.setattr(latency_mod, "_make_step", named_step)
    models = {}
    for tag in ("a", "b", "c"):
        m = nn.Identity()
        m.tag = tag
        models[tag] = m
    cfg = LatencyConfig(warmup=3, repeats=5, threads=1)
    out = latency_mod.measure_latency_interleaved(models, (1, 3, 8, 8), cfg, rounds=2)
    assert calls == [("a", 3, 3), ("b", 3, 3), ("c", 3, 3), ("b", 1, 2), ("c", 1, 2), ("a", 1, 2)]
    assert set(out) == {"a", "b", "c"}
    for r in out.values():
        _consistent(r)
        assert r.repeats == 5 and r.options["rounds"] == 2
    with pytest.raises(UsageError, match="rounds 0"):
        latency_mod.measure_latency_interleaved(models, (1, 3, 8, 8), cfg, rounds=0)
    assert latency_mod.measure_latency_interleaved({}, (1, 3, 8, 8), cfg, rounds=2) == {}


def test_interleaved_latency_on_real_models_matches_their_cost_order() -> None:
    small, large = real_model("bisenetv2"), build_model(parse_spec("v2:a=2"))
    cfg = LatencyConfig(warmup=1, repeats=4, threads=1)
    out = measure_latency_interleaved({"v2": small, "a2": large}, (1, 3, *HW), cfg, rounds=2)
    assert out["a2"].median_ms > 1.5 * out["v2"].median_ms  # about 4x the multiply-adds
    _consistent(out["v2"])
