"""Backbones and pretrained weights: the files users have load, whole, where they belong.

The key lists in tests/fixtures/pretrained_keys/ were written from the libraries'
published architectures (their README says how); a second implementation here would not
be an independent reference, so what is checked is what can be: the published parameter
counts, keys and shapes, the strides and channels of the taps, and that every loaded
tensor reaches the output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import blocks.weights as weights
from blocks.builder import build_model, imagenet_backbone
from blocks.keymaps import LAYOUTS
from blocks.weights import detect_layout, load_pretrained, rename_key
from searchspace.backbones import tap_widths
from searchspace.errors import CheckpointError, UsageError
from searchspace.presets import backbone_of, parse_spec
from tests.test_ablate import ablate

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "pretrained_keys"
# file -> (its layout, a network it fits, the published parameter count with classifier)
FILES = {
    "torchvision_resnet18": ("torchvision_resnet18", "v2:bb=resnet18", 11_689_512),
    "torchvision_mobilenet_v2": ("torchvision_mobilenetv2", "v2:bb=mobilenetv2", 3_504_872),
    "timm_mobilenetv2_100": ("timm_mobilenetv2", "v2:bb=mobilenetv2", 3_504_872),
    "torchvision_shufflenet_v2_x1_5": (
        "torchvision_shufflenetv2",
        "v2:bb=shufflenetv2,bbw=1.5",
        3_503_624,
    ),
    "torchvision_shufflenet_v2_x0_5": (
        "torchvision_shufflenetv2",
        "v2:bb=shufflenetv2,bbw=0.5",
        1_366_792,
    ),
    "coincheung_backbone_v2": ("coincheung_bisenetv2", "bisenetv2_coincheung", 1_678_736),
}
# the feature part of each backbone: torchvision's total minus its classifier
FEATURE_PARAMS = {
    ("resnet18", 1.0): 11_689_512 - 513_000,
    ("mobilenetv2", 1.0): 3_504_872 - 1_281_000,
    ("shufflenetv2", 0.5): 1_366_792 - 1_025_000,
    ("shufflenetv2", 1.0): 2_278_604 - 1_025_000,
    ("shufflenetv2", 1.5): 3_503_624 - 1_025_000,
    ("shufflenetv2", 2.0): 7_393_996 - 2_049_000,
}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _keys(name: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / f"{name}.json").read_text())["keys"]


def _file(name: str, tmp_path: Path, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """A weights file with the library's exact keys and shapes, random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _keys(name).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.1
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("name", sorted(FILES))
def test_fixtures_hold_the_published_parameter_counts(name: str) -> None:
    keys = _keys(name)
    params = sum(torch.Size(shape).numel() for k, shape in keys.items() if not k.endswith(BUFFERS))
    assert params == FILES[name][2]


@pytest.mark.parametrize(("backbone", "width"), sorted(FEATURE_PARAMS))
def test_feature_parts_have_the_reference_parameter_counts(backbone: str, width: float) -> None:
    model = imagenet_backbone(backbone, width)
    assert sum(p.numel() for p in model.parameters()) == FEATURE_PARAMS[(backbone, width)]


@pytest.mark.parametrize(("backbone", "width"), sorted(FEATURE_PARAMS))
def test_taps_are_at_strides_4_8_16_32_with_the_planned_widths(backbone: str, width: float) -> None:
    model = imagenet_backbone(backbone, width).eval()
    with torch.inference_mode():
        taps = model(torch.randn(1, 3, 64, 128))
    shapes = [tuple(t.shape[1:]) for t in taps]
    widths = tap_widths(backbone, width)
    assert shapes == [(c, 64 // s, 128 // s) for c, s in zip(widths, (4, 8, 16, 32), strict=True)]
    assert model.out_chs == widths


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_file_loads_whole_into_its_network(name: str, tmp_path: Path) -> None:
    layout, spec_text, _ = FILES[name]
    path, state = _file(name, tmp_path)
    spec = parse_spec(spec_text)
    model = build_model(spec)
    loaded = load_pretrained(model, path, backbone_of(spec))
    assert loaded.layout == layout
    assert loaded.sha256 == weights.file_sha256(path)
    keymap = LAYOUTS[layout].keymap
    # every key is used exactly once, or is the classifier (and said so)
    classifier = [k for k in state if rename_key(k, keymap) is None]
    assert list(loaded.dropped) == classifier
    assert all(k.startswith(("fc.", "classifier.")) for k in classifier)
    assert loaded.loaded == len(state) - len(classifier)
    own = model.state_dict()
    targets = {rename_key(k, keymap): k for k in state if k not in classifier}
    assert len(targets) == loaded.loaded  # no two keys land on one tensor
    into = f"{LAYOUTS[layout].into}." if LAYOUTS[layout].into else ""
    for target, key in targets.items():
        assert torch.equal(own[into + target], state[key]), key


@pytest.mark.parametrize("name", ["torchvision_resnet18", "timm_mobilenetv2_100",
                                  "torchvision_shufflenet_v2_x0_5", "coincheung_backbone_v2"])  # fmt: skip
def test_every_loaded_tensor_reaches_the_output(name: str, tmp_path: Path) -> None:
    """Change any one loaded tensor and what the loaded part computes changes: no weight
    lands in a module the forward pass skips. The loaded part's own outputs are watched
    (every backbone tap; the detail and semantic outputs for CoinCheung's file), not the
    logits, where a saturated gate could hide a change."""
    layout, spec_text, _ = FILES[name]
    path, state = _file(name, tmp_path)
    spec = parse_spec(spec_text)
    model = build_model(spec).eval()
    load_pretrained(model, path, backbone_of(spec))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny forward passes: 100x faster beside other work
    try:
        _check_reach(model, layout, state, x)
    finally:
        torch.set_num_threads(threads)


def _check_reach(model, layout: str, state: dict, x: torch.Tensor) -> None:
    def outputs() -> list[torch.Tensor]:
        with torch.inference_mode():
            if LAYOUTS[layout].into:
                return list(model.get_submodule(LAYOUTS[layout].into)(x))
            return [model.detail(x), *model.semantic(x).values()]

    before = outputs()
    layout_ = LAYOUTS[layout]
    into = f"{layout_.into}." if layout_.into else ""
    tensors = dict(model.state_dict(keep_vars=True))
    silent = []
    for key in state:
        target = rename_key(key, layout_.keymap)
        if target is None or key.endswith("num_batches_tracked"):
            continue
        tensor = tensors[into + target]
        saved = tensor.detach().clone()
        with torch.no_grad():
            tensor.mul_(1.5).add_(0.05)
        after = outputs()
        with torch.no_grad():
            tensor.copy_(saved)
        if all(torch.equal(b, a) for b, a in zip(before, after, strict=True)):
            silent.append(key)
    assert not silent, silent[:5]


# --- what does not fit: one line, the model untouched ----------------------------------


def _refused(model: torch.nn.Module, path: Path, backbone: str) -> str:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_pretrained(model, path, backbone)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-loaded
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_file_of_another_architecture_is_refused_naming_both(tmp_path: Path) -> None:
    path, _ = _file("torchvision_resnet18", tmp_path)
    message = _refused(build_model(parse_spec("v2:bb=mobilenetv2")), path, "mobilenetv2")
    assert "torchvision's ImageNet ResNet-18 (torchvision_resnet18)" in message
    assert "backbone is mobilenetv2" in message


def test_a_file_of_another_width_is_refused_naming_the_shapes(tmp_path: Path) -> None:
    path, _ = _file("torchvision_shufflenet_v2_x0_5", tmp_path)
    model = build_model(parse_spec("v2:bb=shufflenetv2,bbw=1.5"))
    message = _refused(model, path, "shufflenetv2")
    assert (
        "shape mismatch: stage2.0.branch1.2.weight (file (24, 24, 1, 1), network (88, 24" in message
    )


def test_missing_and_unknown_keys_are_named(tmp_path: Path) -> None:
    _, state = _file("torchvision_mobilenet_v2", tmp_path)
    del state["features.18.1.weight"]
    torch.save(state, tmp_path / "missing.pth")
    model = build_model(parse_spec("v2:bb=mobilenetv2"))
    assert "missing keys: features.18.1.weight" in _refused(
        model, tmp_path / "missing.pth", "mobilenetv2"
    )
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "unknown.pth")
    message = _refused(model, tmp_path / "unknown.pth", "mobilenetv2")
    assert message.count("cannot place 'encoder.weight'") == len(LAYOUTS)


def test_an_ambiguous_file_names_the_candidates(monkeypatch) -> None:
    twin = LAYOUTS["torchvision_resnet18"]
    monkeypatch.setitem(weights.LAYOUTS, "twin_resnet18", twin)
    with pytest.raises(CheckpointError, match="ambiguous layout, fits torchvision_resnet18, twin"):
        detect_layout(["conv1.weight", "layer1.0.bn1.weight"], "f.pth")


def test_files_that_are_not_weights_are_refused(tmp_path: Path, recwarn) -> None:
    model = build_model(parse_spec("v2:bb=resnet18"))
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    assert "expected a state dict" in _refused(model, tmp_path / "list.pth", "resnet18")

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"conv1.weight": Payload()}, tmp_path / "code.pth")
    assert "would run code" in _refused(model, tmp_path / "code.pth", "resnet18")


# --- --pretrained end to end: identity, records, tables --------------------------------

TABLE = """
id = "bb"
title = "a backbone row beside the paper's own branch"
[[rows]]
name = "shuffle"
spec = "v2:bb=shufflenetv2,bbw=0.5,a=0.25,ce=false,bst=none"
paper_init = "imagenet"
[[rows]]
name = "own"
spec = "v2:a=0.25,bst=none"
"""
TINY = "smoke:budget=2,crop_hw=64+64,batch_size=2,warmup_iters=0,eval_hw=64+128"


def test_pretrained_runs_are_their_own_keys_and_say_so(tmp_path: Path, tiny_data: str) -> None:
    table = tmp_path / "bb.toml"
    table.write_text(TABLE)
    weights, _ = _file("torchvision_shufflenet_v2_x0_5", tmp_path)
    copy = tmp_path / "elsewhere.pth"
    copy.write_bytes(weights.read_bytes())
    common = ["--table", str(table), "--recipe", TINY, "--data", tiny_data, "--no-latency",
              "--no-progress", "--results-dir", str(tmp_path / "res")]  # fmt: skip
    first = ablate(*common, "--pretrained", f"shufflenetv2={weights}", "--backbone-lr-mult", "0.1")
    assert first.returncode == 0, first.stderr
    assert "Pretrained: shuffle (torchvision_shufflenetv2@" in first.stdout
    records = {
        json.loads(p.read_text())["spec_string"]: json.loads(p.read_text())
        for p in (tmp_path / "res" / "records").rglob("*.json")
    }
    shuffle = next(r for s, r in records.items() if "shufflenetv2" in s)
    own = next(r for s, r in records.items() if "shufflenetv2" not in s)
    sha = shuffle["train"]["pretrained"]["sha256"]
    assert shuffle["recipe"]["fields"]["pretrained"] == sha
    assert shuffle["recipe"]["fields"]["backbone_lr_mult"] == 0.1
    assert shuffle["train"]["pretrained"]["layout"] == "torchvision_shufflenetv2"
    assert "pretrained" not in own["train"] and "pretrained" not in own["recipe"]["fields"]
    # the same file at another path is the same key: nothing to do
    again = ablate(*common, "--pretrained", f"shufflenetv2={copy}", "--backbone-lr-mult", "0.1")
    assert again.returncode == 0 and "0 to do" in again.stdout, again.stdout
    # from scratch is another key; the table then says the paper's row was pretrained
    scratch = ablate(*common, "--rows", "shuffle", "--dry-run")
    assert scratch.returncode == 0
    status = ablate(*common, "--rows", "shuffle", "--status")
    assert "missing" in status.stdout and sha[:12] not in status.stdout
    # another file is another key
    (tmp_path / "o").mkdir()
    other, _ = _file("torchvision_shufflenet_v2_x0_5", tmp_path / "o", seed=1)
    status = ablate(*common, "--status", "--pretrained", f"shufflenetv2={other}",
                     "--backbone-lr-mult", "0.1")  # fmt: skip
    assert "missing" in status.stdout, status.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--pretrained", "resnet18={w}"], "no run here has the backbone resnet18"),
        (["--pretrained", "bisenetv2={w}"], "for shufflenetv2, not bisenetv2"),
        (["--pretrained", "alexnet={w}"], "unknown backbone 'alexnet'"),
        (["--pretrained", "{w}"], "name the one it is for"),
        (["--backbone-lr-mult", "0.1"], "applies only with --pretrained"),
        (["--pretrained", "shufflenetv2={w}", "--pretrained", "shufflenetv2={w}"], "second file"),
    ],
)
def test_bad_pretrained_arguments_are_one_line(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    weights, _ = _file("torchvision_shufflenet_v2_x0_5", tmp_path)
    table = tmp_path / "bb.toml"
    table.write_text(TABLE)
    res = tmp_path / "res"
    out = ablate("--table", str(table), "--results-dir", str(res), "--dry-run",
                  *[a.format(w=weights) for a in args])  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert not (res / "records").exists()


def test_backbone_lr_mult_scales_the_loaded_part_only() -> None:
    from runners.train.optim import param_groups, set_lr

    model = build_model(parse_spec("v2:bb=resnet18"))
    groups = param_groups(model, 5e-4, ("semantic.backbone.",), 0.1)
    optimizer = torch.optim.SGD(groups, lr=1.0)
    set_lr(optimizer, 0.5)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(lr_of) == len(named)  # every parameter in exactly one group
    for name, p in named.items():
        assert lr_of[id(p)] == (0.05 if name.startswith("semantic.backbone.") else 0.5), name


def test_train_command_starts_from_the_file(tmp_path: Path, tiny_data: str) -> None:
    weights, _ = _file("torchvision_shufflenet_v2_x0_5", tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "runners.train", "--spec", "v2:bb=shufflenetv2,bbw=0.5,a=0.25",
         "--recipe", TINY, "--data", tiny_data, "--out", str(tmp_path / "run"), "--no-eval",
         "--pretrained", str(weights)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "run" / "train_result.json").read_text())
    assert result["pretrained"]["layout"] == "torchvision_shufflenetv2"
    assert result["pretrained"]["dropped"] == ["fc.weight", "fc.bias"]
    assert result["pretrained"]["sha256"] == weights_sha(weights)


def weights_sha(path: Path) -> str:
    return weights.file_sha256(path)


def test_search_trials_take_the_file_of_their_backbone(tmp_path: Path, tiny_data: str) -> None:
    from runners.search.config import SearchConfig
    from runners.search.setup import TrialSetup

    path, _ = _file("torchvision_shufflenet_v2_x0_5", tmp_path)
    cfg = SearchConfig(space="v2-full", study="s", trials=1, data=tiny_data,
                       results_dir=str(tmp_path / "res"),
                       pretrained=(f"shufflenetv2={path}",))  # fmt: skip
    setup = TrialSetup.of(cfg)
    warm = setup.run(parse_spec("v2:bb=shufflenetv2,bbw=0.5"), 0)
    cold = setup.run(parse_spec("bisenetv2"), 0)
    assert warm.recipe.pretrained == weights.file_sha256(path) and warm.pretrained == path.resolve()
    assert warm.base_recipe_id == setup.recipe.recipe_id == cold.recipe.recipe_id
    assert cold.pretrained is None and setup.key(parse_spec("bisenetv2"), 0) == cold.key
    other = SearchConfig(space="multipliers", study="s", trials=1, data=tiny_data,
                         pretrained=(f"shufflenetv2={path}",))  # fmt: skip
    with pytest.raises(UsageError, match="no run here has the backbone shufflenetv2"):
        TrialSetup.of(other)
