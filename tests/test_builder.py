"""The builder: every preset and table row runs, outputs are right, every field matters."""

from __future__ import annotations

import pytest
import torch

from blocks.builder import build_model
from runners.profile.complexity import count_params
from searchspace.presets import V2_PRESETS, get_preset
from searchspace.serialize import leaf_types
from searchspace.tables import all_tables
from searchspace.v2 import BiSeNetV2Spec


def unique_specs() -> list[BiSeNetV2Spec]:
    seen: dict[str, BiSeNetV2Spec] = {}
    for spec in [*V2_PRESETS.values(), *(r.spec for t in all_tables() for r in t.runnable)]:
        seen.setdefault(spec.spec_id, spec)
    return list(seen.values())


SIZES = [(64, 128), (75, 109)]  # the second is not a multiple of 32 (nor of 8)


@pytest.mark.parametrize("spec", unique_specs(), ids=lambda s: s.to_string())
def test_forward_backward_train_and_eval(spec: BiSeNetV2Spec) -> None:
    torch.manual_seed(0)
    model = build_model(spec)
    for hw in SIZES:
        model.train()
        x = torch.randn(2, 3, *hw)
        outs = model(x)
        assert isinstance(outs, tuple) and len(outs) == 1 + len(spec.booster_positions)
        for out in outs:
            assert out.shape == (2, spec.num_classes, *hw)
        sum(o.float().mean() for o in outs).backward()
        model.eval()
        with torch.inference_mode():
            out = model(torch.randn(1, 3, *hw))
        assert isinstance(out, torch.Tensor) and out.shape == (1, spec.num_classes, *hw)
        assert torch.isfinite(out).all()


def test_smallest_input_32x32() -> None:
    model = build_model(get_preset("bisenetv2")).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 19, 32, 32)


@pytest.mark.parametrize("name", sorted(V2_PRESETS))
def test_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(V2_PRESETS[name]).train()
    outs = model(torch.randn(2, 3, 64, 96))
    sum((o**2).mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()]
    assert not missing, missing
    # The CE block is GAP -> BN -> 1x1 conv -> BN: in train mode the second BN subtracts
    # the batch mean, which cancels any constant the first BN's bias adds, so that bias
    # gets an exactly-zero gradient by construction (it still acts in eval mode).
    assert zero == ["semantic.ce.bn.bias"], zero


def test_boosters_do_not_count_at_inference() -> None:
    with_b = build_model(get_preset("bisenetv2_dwexp"))
    without = build_model(get_preset("bisenetv2_dwexp").replace(booster_positions=()))
    assert count_params(with_b, inference=True) == count_params(without, inference=False)
    assert count_params(with_b, inference=False) > count_params(with_b, inference=True)


# One alternative value per leaf field; every field of the spec must appear here.
ALTERNATIVES = {
    "detail.widths": (64, 64, 96),
    "detail.depths": (2, 3, 4),
    "semantic.ratio": 0.5,
    "semantic.s4_s5_widths": (64, 96),
    "semantic.depths": (2, 3, 4),
    "semantic.exp_ratio": 4,
    "semantic.block": "ib",
    "semantic.ge_expand": "depthwise",
    "semantic.ge_gather_kernel": 1,
    "semantic.ge_down_dw": "5x5",
    "semantic.context_embedding": False,
    "aggregation": "sum",
    "head_width": 256,
    "booster_positions": ("s3", "s4"),
    "booster_width": 64,
    "width_mult": 1.25,
    "depth_mult": 2.0,
    "num_classes": 11,
    "semantic.ge_dw_act": True,
    "bga_upsample": "nearest",
    "bga_out_act": True,
    "bga_bias": True,
    "head_dropout": 0.1,
    "booster_form": "double",
    "booster_dropout": 0.1,
    "dropout_kind": "channel",
}
# a field that applies only once another is set: measured from that base
ALTERNATIVES["semantic.backbone"] = "resnet18"
ALTERNATIVES["semantic.backbone_width"] = 0.5
ALTERNATIVE_BASES = {
    "dropout_kind": {"head_dropout": 0.1},
    "semantic.backbone_width": {"semantic.backbone": "shufflenetv2"},
}


def _fingerprint(spec: BiSeNetV2Spec) -> tuple:
    torch.manual_seed(0)
    model = build_model(spec)
    model.eval()
    torch.manual_seed(1)
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 64))
    return repr(model), count_params(model, inference=False), tuple(out.shape), out.sum().item()


def test_alternatives_cover_every_field() -> None:
    assert set(ALTERNATIVES) == set(leaf_types(BiSeNetV2Spec))


@pytest.mark.parametrize("path", sorted(ALTERNATIVES))
def test_every_field_reaches_its_module(path: str) -> None:
    base = BiSeNetV2Spec().replace(**ALTERNATIVE_BASES.get(path, {}))
    changed = base.replace(**{path: ALTERNATIVES[path]})
    assert changed != base
    before, after = _fingerprint(base), _fingerprint(changed)
    # structure (repr shows every channel, kernel and stride), parameter count or output
    assert before[0] != after[0] or before[1:] != after[1:], path


def test_ge_expansion_place_follows_the_spec() -> None:
    gather = build_model(BiSeNetV2Spec())
    dwexp = build_model(BiSeNetV2Spec().replace(**{"semantic.ge_expand": "depthwise"}))
    # S3's stride-1 GE layer on 32 channels, e = 6
    g, d = gather.semantic.s3[1], dwexp.semantic.s3[1]
    assert g.gather.conv.out_channels == 192 and g.dw[0].conv.groups == 192
    assert d.gather.conv.out_channels == 32 and d.dw[0].conv.groups == 32
    assert d.dw[0].conv.out_channels == 192


def test_depth_multiplier_adds_stride_one_layers() -> None:
    model = build_model(BiSeNetV2Spec(depth_mult=2.0))
    assert [len(s) for s in (model.semantic.s3, model.semantic.s4, model.semantic.s5)] == [4, 4, 8]
    strides = [layer.dw[0].conv.stride[0] for layer in model.semantic.s5]
    assert strides == [2] + [1] * 7
