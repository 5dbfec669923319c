"""Training: schedule, losses, deterministic data, kill + resume, failures, CLI errors, DDP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from runners import checkpoint as ckpt
from runners.data.labels import IGNORE_INDEX
from runners.data.source import DataSource, parse_data_arg
from runners.device import cuda_available
from runners.train.data import KeyedAugmentedDataset, StreamBatchSampler, make_train_loader
from runners.train.loop import TrainResult, train
from runners.train.losses import ohem_cross_entropy, segmentation_loss
from runners.train.optim import lr_at, param_groups
from searchspace.errors import CheckpointError, SpecError, UsageError
from searchspace.presets import parse_spec
from searchspace.recipes import RECIPES, Recipe, parse_recipe

ROOT = Path(__file__).resolve().parent.parent
SPEC = "bisenetv2:width_mult=0.25"
# tiny crops, no channels_last (exactness is checked against the plain path), few steps
RECIPE = "smoke:crop_hw=64+64,batch_size=4,warmup_iters=2,scales=0.75+1.0,eval_hw=64+128"


def tiny_recipe(**changes: object) -> Recipe:
    return parse_recipe(RECIPE).replace(**{"budget_kind": "iterations", **changes})


pytestmark = pytest.mark.usefixtures("one_thread")


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    data = ckpt.load(run_dir / ckpt.CHECKPOINT_NAME)
    assert data["finished"]
    return data["model"]


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


# ---------------------------------------------------------------- schedule and losses


def test_warmup_then_poly() -> None:
    r = Recipe(lr=0.1, warmup_iters=10, warmup_ratio=0.1, poly_power=0.9, budget=100)
    assert lr_at(r, 0, 0.0) == pytest.approx(0.01)
    assert lr_at(r, 5, 0.05) == pytest.approx(0.1 * 0.55 * 0.95**0.9)
    assert lr_at(r, 50, 0.5) == pytest.approx(0.1 * 0.5**0.9)
    assert lr_at(r, 100, 1.0) == 0.0


def test_weight_decay_on_conv_weights_only() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == {id(model[0].weight), id(model[2].weight)}
    assert ids(no_decay["params"]) == {
        id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].bias)
    }  # fmt: skip


def test_ohem_keeps_only_hard_pixels() -> None:
    # 4 pixels, 2 classes: two easy (p(true) ~ 1), two hard (p(true) ~ 0.12)
    logits = torch.tensor([[5.0, -5.0], [5.0, -5.0], [1.0, -1.0], [1.0, -1.0]])
    logits = logits.T.reshape(1, 2, 2, 2)
    target = torch.tensor([[[0, 0], [1, 1]]])
    hard_loss = -math.log(torch.softmax(torch.tensor([-1.0, 1.0]), 0)[0].item())
    assert ohem_cross_entropy(logits, target, 0.7, 0.25).item() == pytest.approx(hard_loss)
    # nothing is hard: the hardest min_kept pixels are kept
    target = torch.tensor([[[0, 0], [0, 0]]])
    easy = ohem_cross_entropy(logits, target, 0.7, 0.5).item()
    assert easy == pytest.approx(-math.log(torch.softmax(torch.tensor([1.0, -1.0]), 0)[0].item()))
    # ignored pixels never count
    target = torch.full((1, 2, 2), IGNORE_INDEX)
    assert ohem_cross_entropy(logits, target).item() == 0.0


def test_booster_losses_are_weighted() -> None:
    main = torch.randn(2, 3, 4, 4)
    aux = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    base = segmentation_loss(main, target)
    both = segmentation_loss((main, aux), target, booster_weight=0.4)
    assert both.item() == pytest.approx(base.item() + 0.4 * segmentation_loss(aux, target).item())


# ------------------------------------------------------------- deterministic data


def test_stream_sampler_is_a_function_of_seed_and_iteration() -> None:
    s = StreamBatchSampler(n=10, global_batch=4, seed=3)
    batches = [b for _, b in zip(range(5), s)]
    assert [b for _, b in zip(range(2), StreamBatchSampler(10, 4, 3, start=3))] == batches[3:5]
    epoch0 = sorted(i for batch in batches for e, i in batch if e == 0)
    assert epoch0 == list(range(10))  # every sample once per epoch
    assert batches != [b for _, b in zip(range(5), StreamBatchSampler(10, 4, seed=4))]
    ranks = [StreamBatchSampler(10, 4, 3, rank=r, world_size=2).keys(2) for r in (0, 1)]
    assert ranks[0] + ranks[1] == s.keys(2)  # DDP shards partition the global batch


def test_augmentation_depends_on_the_key_not_on_history(tiny: DataSource) -> None:
    recipe = tiny_recipe()
    data = KeyedAugmentedDataset(tiny.dataset("train"), recipe, seed=0)
    a = data[(1, 5)]
    data[(0, 2)]
    b = data[(1, 5)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 64, 64)
    loader = make_train_loader(tiny.dataset("train"), recipe, 0, start=2, stop=3, workers=1)
    (images, labels), = list(loader)  # fmt: skip
    keys = StreamBatchSampler(8, 4, 0).keys(2)
    assert torch.equal(images, torch.stack([data[k][0] for k in keys]))
    assert torch.equal(labels, torch.stack([data[k][1] for k in keys]))  # same in a worker


# ------------------------------------------------------------------- train and resume


def test_paused_and_resumed_run_ends_like_a_straight_run(tiny: DataSource, tmp_path: Path) -> None:
    spec, recipe = parse_spec(SPEC), tiny_recipe(budget=8)
    straight = train(spec, recipe, tiny, 0, tmp_path / "a", progress=False)
    assert straight.status == "ok" and straight.iterations == 8 and straight.images == 32
    assert straight.images_per_s > 0 and math.isfinite(straight.final_loss)
    paused = train(spec, recipe, tiny, 0, tmp_path / "b", progress=False, stop_after=3)
    assert paused.status == "paused" and paused.iterations == 3
    resumed = train(spec, recipe, tiny, 0, tmp_path / "b", progress=False)
    assert resumed.status == "ok" and resumed.resumed_from == 3 and resumed.iterations == 8
    assert_same_state(final_state(tmp_path / "a"), final_state(tmp_path / "b"))
    assert resumed.params_sha1 == straight.params_sha1
    assert resumed.final_loss == pytest.approx(straight.final_loss, abs=1e-5)
    # a finished run is returned, not recomputed
    again = train(spec, recipe, tiny, 0, tmp_path / "b", progress=False)
    assert again.params_sha1 == straight.params_sha1 and again.resumed_from == 3
    saved = json.loads((tmp_path / "a" / "train_result.json").read_text())
    assert saved["status"] == "ok" and saved["spec_id"] == spec.spec_id


def test_stop_request_checkpoints_at_the_next_step_and_resumes_exactly(
    tiny: DataSource, tmp_path: Path
) -> None:
    """A scheduler's signal only notes a request; the loop checkpoints after the step it
    is in and raises, and the resumed run redoes nothing and ends like a straight one."""
    from runners.train import interrupt

    spec, recipe = parse_spec(SPEC), tiny_recipe(budget=8)
    straight = train(spec, recipe, tiny, 0, tmp_path / "a", progress=False)

    def ask_at_3(iteration: int) -> None:
        if iteration == 3:
            os.kill(os.getpid(), signal.SIGUSR2)  # a real signal through the real handler

    previous = signal.getsignal(signal.SIGUSR2)
    interrupt.install([signal.SIGUSR2])
    try:
        with pytest.raises(interrupt.StopRequested) as stop:
            train(spec, recipe, tiny, 0, tmp_path / "b", progress=False, on_step=ask_at_3,
                  checkpoint_every=0)  # fmt: skip
    finally:
        signal.signal(signal.SIGUSR2, previous)
        interrupt.clear()
    assert stop.value.signal_name == "SIGUSR2" and stop.value.iteration == 3
    saved = ckpt.load(tmp_path / "b" / ckpt.CHECKPOINT_NAME)
    assert saved["iteration"] == 3 and not saved["finished"]
    resumed = train(spec, recipe, tiny, 0, tmp_path / "b", progress=False)
    assert resumed.resumed_from == 3 and resumed.iterations == 8  # nothing redone
    assert resumed.params_sha1 == straight.params_sha1


@pytest.mark.parametrize(("every_s", "saved"), [(1e-9, 2), (0.0, None)])
def test_time_bound_checkpoints_besides_the_iteration_interval(
    tiny: DataSource, tmp_path: Path, every_s: float, saved: int | None
) -> None:
    """With no iteration interval, a time bound still leaves a checkpoint at every step
    once its seconds have passed (here: always); 0 turns the bound off."""

    class Killed(Exception):
        pass

    def die_after_2(iteration: int) -> None:
        if iteration == 3:
            raise Killed  # as a SIGKILL during step 3 would, with nothing saved after it

    with pytest.raises(Killed):
        train(parse_spec(SPEC), tiny_recipe(budget=8), tiny, 0, tmp_path, progress=False,
              on_step=die_after_2, checkpoint_every=0, checkpoint_every_s=every_s)  # fmt: skip
    path = tmp_path / ckpt.CHECKPOINT_NAME
    assert (ckpt.load(path)["iteration"] if path.exists() else None) == saved


def test_sigkilled_run_resumes_to_the_same_state(tiny: DataSource, tmp_path: Path) -> None:
    """A real ``kill -9`` of the CLI after a checkpoint, then resume: same final weights."""
    n = 24
    recipe_text = f"{RECIPE},budget={n}"
    spec, recipe = parse_spec(SPEC), parse_recipe(recipe_text)
    # the CLI reads the same files as a plain Cityscapes-layout folder
    source = parse_data_arg(f"cityscapes:{tiny.path}")
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "runners.train", "--spec", SPEC, "--recipe", recipe_text,
        "--data", f"cityscapes:{tiny.path}", "--out", str(killed_dir), "--checkpoint-every", "3",
        "--workers", "0", "--no-eval", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the thread count of this process's runs
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    checkpoint = killed_dir / ckpt.CHECKPOINT_NAME
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, stderr
    killed_at = ckpt.load(checkpoint)["iteration"]
    assert 0 < killed_at < n and not ckpt.load(checkpoint)["finished"]

    straight = train(spec, recipe, source, 0, straight_dir, progress=False)
    resumed = train(spec, recipe, source, 0, killed_dir, progress=False)
    assert resumed.status == "ok" and resumed.resumed_from == killed_at
    assert_same_state(final_state(straight_dir), final_state(killed_dir))
    assert resumed.params_sha1 == straight.params_sha1


def test_non_finite_loss_fails_the_run_with_a_reason(tiny: DataSource, tmp_path: Path) -> None:
    result = train(
        parse_spec(SPEC), tiny_recipe(budget=30, lr=1e6, warmup_iters=0), tiny, 0, tmp_path,
        progress=False,
    )  # fmt: skip
    assert isinstance(result, TrainResult)
    assert result.status == "failed" and result.iterations < 30
    assert result.reason and "loss is" in result.reason and "iteration" in result.reason
    assert result.checkpoint is None
    assert json.loads((tmp_path / "train_result.json").read_text())["status"] == "failed"
    if (tmp_path / ckpt.CHECKPOINT_NAME).exists():  # only a clean, unfinished one may exist
        assert not ckpt.load(tmp_path / ckpt.CHECKPOINT_NAME)["finished"]


def test_checkpoint_of_another_spec_or_a_corrupt_one_is_refused(
    tiny: DataSource, tmp_path: Path
) -> None:
    spec = parse_spec(SPEC)
    train(spec, tiny_recipe(budget=2), tiny, 0, tmp_path, progress=False)
    other = spec.replace(head_width=64)
    with pytest.raises(CheckpointError) as info:
        train(other, tiny_recipe(budget=2), tiny, 0, tmp_path, progress=False)
    assert spec.spec_id in str(info.value) and other.spec_id in str(info.value)
    with pytest.raises(CheckpointError, match="recipe"):
        train(spec, tiny_recipe(budget=3), tiny, 0, tmp_path, progress=False)
    (tmp_path / ckpt.CHECKPOINT_NAME).write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        train(spec, tiny_recipe(budget=2), tiny, 0, tmp_path, progress=False)


def test_budget_in_images_and_zero_budget(tiny: DataSource, tmp_path: Path) -> None:
    result = train(
        parse_spec(SPEC), tiny_recipe(budget_kind="images", budget=10), tiny, 0, tmp_path,
        progress=False,
    )  # fmt: skip
    assert result.iterations == 3 and result.images == 12
    with pytest.raises(SpecError, match="budget"):
        tiny_recipe(budget=0)


def test_budget_in_seconds_stops_on_time(tiny: DataSource, tmp_path: Path) -> None:
    recipe = tiny_recipe(budget_kind="seconds", budget=1)
    result = train(parse_spec(SPEC), recipe, tiny, 0, tmp_path, progress=False)
    assert result.status == "ok" and result.iterations >= 1
    assert 1.0 <= result.seconds < 1.0 + 30  # stops at the first step past the budget


def test_on_eval_is_called_and_may_stop_the_run(tiny: DataSource, tmp_path: Path) -> None:
    calls: list[tuple[int, float]] = []

    class Prune(Exception):
        pass

    def on_eval(iteration: int, miou: float) -> None:
        calls.append((iteration, miou))
        if iteration >= 4:
            raise Prune

    recipe = tiny_recipe(budget=10, eval_every=2, eval_hw=(32, 64))
    with pytest.raises(Prune):
        train(parse_spec(SPEC), recipe, tiny, 0, tmp_path, progress=False, on_eval=on_eval)
    assert [i for i, _ in calls] == [2, 4] and all(0 <= m <= 1 for _, m in calls)


# ------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--budget-iterations", "0"], "recipe.budget=0"),
        (["--recipe", "nope"], "unknown recipe 'nope'"),
        (["--data", "cityscapes:{tmp}/missing"], "missing"),
    ],
)
def test_train_cli_bad_input_is_one_line_and_status_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "runners.train", "--out", str(out), "--no-progress"]
    cmd += [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert not out.exists()  # nothing half-written


def test_paper_recipe_follows_the_v2_protocol() -> None:
    paper = RECIPES["paper"]
    assert (paper.momentum, paper.batch_size, paper.lr, paper.poly_power) == (0.9, 16, 5e-2, 0.9)
    assert (paper.weight_decay, paper.budget_kind, paper.budget) == (5e-4, "iterations", 150_000)
    assert paper.scales == (0.75, 1.0, 1.25, 1.5, 1.75, 2.0) and paper.flip
    assert paper.eval_hw == (512, 1024)


# ------------------------------------------------------------------------------- DDP

DDP_SCRIPT = """
import json, os, sys
from runners.data.source import parse_data_arg
from runners.data.synth import SynthConfig
from runners.train.loop import train
from searchspace.presets import parse_spec
from searchspace.recipes import recipe_from_json_dict
data, out, recipe_json, config = sys.argv[1:5]
source = parse_data_arg("synth:" + data, SynthConfig.from_dict(json.loads(config)))
recipe = recipe_from_json_dict(json.loads(recipe_json))
result = train(parse_spec({spec!r}), recipe, source, 0, out, progress=False)
rank = os.environ["RANK"]
with open(os.path.join(out, f"rank{{rank}}.json"), "w") as fh:
    json.dump(result.to_dict(), fh)
"""


def test_ddp_gloo_two_processes(tiny: DataSource, tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(spec=SPEC))
    out = tmp_path / "run"
    recipe = tiny_recipe(budget=4)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(script), str(tiny.path), str(out), recipe.to_json(),
        json.dumps(tiny.synth_config.to_dict()),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["status"] == "ok" and r["world_size"] == 2 for r in results)
    assert all(r["iterations"] == 4 and r["images"] == 16 for r in results)
    assert results[0]["params_sha1"] == results[1]["params_sha1"]  # ranks agree bit for bit
    assert final_state(out).keys()  # rank 0 wrote the finished checkpoint


# ------------------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU (none here)")
def test_cuda_amp_channels_last_train_and_resume(tiny: DataSource, tmp_path: Path) -> None:
    """fp16 autocast + GradScaler + channels_last on a GPU; resume matches to float tolerance."""
    spec = parse_spec(SPEC)
    recipe = tiny_recipe(budget=6, amp=True, channels_last=True)
    straight = train(spec, recipe, tiny, 0, tmp_path / "a", device="cuda", progress=False)
    assert straight.status == "ok" and straight.device.startswith("cuda")
    train(spec, recipe, tiny, 0, tmp_path / "b", device="cuda", progress=False, stop_after=3)
    resumed = train(spec, recipe, tiny, 0, tmp_path / "b", device="cuda", progress=False)
    assert resumed.resumed_from == 3
    a, b = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-3, rtol=1e-3), key
    assert ckpt.load(tmp_path / "a" / ckpt.CHECKPOINT_NAME)["scaler"] is not None


def test_learning_curve_points_leave_the_training_unchanged(
    tiny: DataSource, tmp_path: Path
) -> None:
    spec, recipe = parse_spec(SPEC), tiny_recipe(budget=8)
    plain = train(spec, recipe, tiny, 0, tmp_path / "a", progress=False)
    curved = train(spec, recipe, tiny, 0, tmp_path / "b", progress=False, curve_at=(0.25, 0.5))
    assert curved.params_sha1 == plain.params_sha1  # evaluating mid-way changes no weight
    assert [e["iteration"] for e in curved.evals] == [2, 4]
    assert [e["images"] for e in curved.evals] == [8, 16]
    assert all(0.0 <= e["miou"] <= 1.0 for e in curved.evals)
    assert plain.evals == []
    with pytest.raises(UsageError, match=r"curve_at=\(0.5, 1.0\)"):
        train(spec, recipe, tiny, 0, tmp_path / "c", progress=False, curve_at=(0.5, 1.0))
