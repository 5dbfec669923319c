"""``train``: one spec, one recipe, one dataset, one seed -> a trained checkpoint and a result.

What makes a run comparable and resumable:

- the budget is fixed (iterations, images or wall-clock seconds) and the poly schedule
  decays over exactly that budget;
- every batch and every augmentation is a function of (seed, iteration) (``data.py``), and
  the checkpoint holds everything else the next step depends on, so a run killed and
  resumed ends in the same state as one that ran straight through;
- a checkpoint made for another spec, recipe, seed or dataset is refused, and a non-finite
  loss ends the run as ``failed`` with the reason instead of training on garbage.
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from blocks.builder import build_model
from blocks.weights import Pretrained, file_sha256, load_pretrained
from runners import checkpoint as ckpt
from runners.data.decoded import CachedDataset, open_cache
from runners.data.source import DataSource
from runners.device import autocast, precision_name, resolve_device
from runners.env import cpu_model
from runners.evaluate.predict import evaluate
from runners.train import distributed as dist_utils
from runners.train import interrupt
from runners.train.budget import iterations_for
from runners.train.data import make_train_loader
from runners.train.interrupt import CHECKPOINT_EVERY_S
from runners.train.losses import segmentation_loss
from runners.train.optim import lr_at, make_optimizer, set_lr
from searchspace.atomic import write_json
from searchspace.errors import DataError, UsageError
from searchspace.presets import backbone_of
from searchspace.recipes import Recipe

RESULT_NAME = "train_result.json"
LOG_EVERY = 10  # iterations per history record (and the window of ``final_loss``)

OnEval = Callable[[int, float], None]


@dataclass
class TrainResult:
    """What a training run did. ``status`` is "ok", "failed" (``reason`` says why) or
    "paused" (``stop_after`` reached; call ``train`` again to resume)."""

    status: str
    reason: str | None
    iterations: int
    images: int
    seconds: float  # time in training steps (data loading included; evaluations excluded)
    images_per_s: float
    final_loss: float | None  # mean loss of the last LOG_EVERY iterations
    history: list[dict[str, float]] = field(default_factory=list)
    # {"iteration", "images", "miou"} of each evaluation during training (eval_every, curve_at)
    evals: list[dict[str, float]] = field(default_factory=list)
    checkpoint: str | None = None
    spec_id: str = ""
    recipe_id: str = ""
    data_id: str = ""
    seed: int = 0
    device: str = "cpu"
    world_size: int = 1
    resumed_from: int = 0  # iteration the run was resumed at (0: started fresh)
    params_sha1: str = ""  # digest of the learned weights: equal digests, equal models
    # the backbone weights it started from: layout, sha256, tensors loaded, keys dropped
    pretrained: dict[str, object] | None = None
    # what the recipe's amp ran as here: "fp16", "bf16", "fp32"; "bf16+fp32" when a resume
    # on another machine changed it part-way
    precision: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _deterministic(device: torch.device) -> None:
    """Cheap determinism: CPU kernels already are; on CUDA pick deterministic cuDNN convs.

    Full determinism on CUDA (``use_deterministic_algorithms``) would also forbid the
    atomic-add backward of bilinear upsampling, which every head uses, so CUDA runs are
    reproducible to float tolerance only.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def params_digest(model: nn.Module) -> str:
    """SHA-1 of every parameter's bytes in name order (BN buffers excluded: under DDP
    without SyncBatchNorm each rank keeps its own running statistics)."""
    h = hashlib.sha1()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def train(
    spec: Any,
    recipe: Recipe,
    data_source: DataSource,
    seed: int,
    run_dir: Path | str,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_eval: OnEval | None = None,
    *,
    resume: bool = True,
    checkpoint_every: int = 100,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
    workers: int = 0,
    stop_after: int | None = None,
    curve_at: Sequence[float] = (),
    decoded_cache: Path | str | None = None,
    on_step: Callable[[int], None] | None = None,
    pretrained: Path | str | None = None,
) -> TrainResult:
    """Train ``spec`` under ``recipe`` on the source's train split; results go to ``run_dir``.

    ``on_eval(iteration, miou)`` is called after each evaluation every
    ``recipe.eval_every`` iterations (val split, ``recipe.eval_hw``); it may raise (e.g.
    Optuna's ``TrialPruned``) to end the run, and the exception propagates. With
    ``resume`` an existing ``run_dir/checkpoint.pt`` of the same spec, recipe, seed and
    dataset is continued (a finished one is returned as is, not recomputed).
    ``checkpoint_every`` (0: only at the end) iterations and ``checkpoint_every_s`` seconds
    (0: no time bound), whichever comes first, set how much a kill can lose.
    A stop request (``runners.train.interrupt``: a scheduler's signal) saves a checkpoint
    after the current step and raises ``StopRequested``.
    ``stop_after`` pauses after that many iterations with a checkpoint, as if killed.
    ``curve_at``: fractions of the budget (in (0, 1)) after which the val split is scored
    as well, for a learning curve in ``TrainResult.evals``; like every evaluation it is
    outside the budget and leaves the training itself unchanged (same weights).
    Without ``resume`` the folder's old checkpoint and result are deleted first.
    The train split is read from its pre-decoded cache (``runners.data.decoded``) when
    one exists at the default place or at ``decoded_cache``: the same pixels, less work.
    ``on_step(iteration)`` is called after every step (a status view's "iteration reached").
    ``pretrained``: the backbone weights file whose SHA-256 ``recipe.pretrained`` names;
    it initialises the backbone (``blocks.weights.load_pretrained``) before training.
    Run under ``torchrun`` for DDP: ``recipe.batch_size`` is then the global batch.
    """
    if seed < 0:
        raise UsageError(f"seed={seed}: must be >= 0")
    if checkpoint_every < 0:
        raise UsageError(f"checkpoint_every={checkpoint_every}: must be >= 0 (0: only at the end)")
    if checkpoint_every_s < 0:
        raise UsageError(f"checkpoint_every_s={checkpoint_every_s}: must be >= 0 (0: no bound)")
    if workers < 0:
        raise UsageError(f"workers={workers}: must be >= 0")
    if any(not 0 < f < 1 for f in curve_at):
        raise UsageError(f"curve_at={tuple(curve_at)}: fractions of the budget in (0, 1)")
    num_classes = getattr(spec, "num_classes", None)
    if num_classes != data_source.num_classes:
        raise UsageError(
            f"spec has {num_classes} classes but {data_source.label} has {data_source.num_classes}"
        )
    pretrained = check_pretrained(recipe, pretrained)
    requested = torch.device(device)
    info = dist_utils.setup(requested.type)
    try:
        dev = resolve_device(requested, local_rank=info.local_rank)
        if recipe.batch_size % info.world_size:
            raise UsageError(
                f"recipe.batch_size={recipe.batch_size} does not split over "
                f"{info.world_size} processes"
            )
        run = _Run(spec, recipe, data_source, seed, Path(run_dir), dev, info, progress, workers)
        run.curve_at = tuple(sorted(set(curve_at)))
        run.decoded_cache = Path(decoded_cache) if decoded_cache is not None else None
        run.on_step = on_step
        run.checkpoint_every_s = checkpoint_every_s
        run.pretrained_path = pretrained
        return run.execute(on_eval, resume, checkpoint_every, stop_after)
    finally:
        dist_utils.teardown(info)


def check_pretrained(recipe: Recipe, path: Path | str | None) -> Path | None:
    """The weights file a recipe names, checked: given exactly when the recipe has a
    SHA-256, and that file's (another file is another run)."""
    if not recipe.pretrained:
        if path is not None:
            raise UsageError(
                f"pretrained weights {path}: the recipe trains from scratch (pretrained='')"
            )
        return None
    if path is None:
        raise UsageError(
            f"recipe pretrained={recipe.pretrained[:12]}...: needs its weights file"
            " (--pretrained PATH)"
        )
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"pretrained weights {path}: file not found")
    digest = file_sha256(path)
    if digest != recipe.pretrained:
        raise UsageError(
            f"pretrained weights {path}: SHA-256 {digest[:12]}... is not the recipe's"
            f" {recipe.pretrained[:12]}... (another file is another run)"
        )
    return path


class _Run:
    """The state of one training run; ``execute`` is the loop."""

    def __init__(
        self,
        spec: Any,
        recipe: Recipe,
        data_source: DataSource,
        seed: int,
        run_dir: Path,
        device: torch.device,
        info: dist_utils.DistInfo,
        progress: bool,
        workers: int,
    ) -> None:
        self.spec, self.recipe, self.source, self.seed = spec, recipe, data_source, seed
        self.run_dir, self.device, self.info = run_dir, device, info
        self.progress = progress and info.is_main
        self.workers = workers
        self.decoded_cache: Path | None = None
        self.on_step: Callable[[int], None] | None = None
        self.checkpoint_every_s = CHECKPOINT_EVERY_S
        self.pretrained_path: Path | None = None
        self.ckpt_path = run_dir / ckpt.CHECKPOINT_NAME
        self.amp = recipe.amp
        self.precision = precision_name(device, recipe.amp)
        if recipe.amp and self.precision == "fp32" and info.is_main:
            print(
                f"note: recipe amp=True, but this CPU ({cpu_model()}) has no native bf16 "
                "kernels (AVX-512 needed), where bf16 is ~10x slower: training in fp32 "
                "(records say precision=fp32)",
                file=sys.stderr,
            )
        self.iteration = 0
        self.images = 0
        self.seconds = 0.0
        self.history: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []
        self.window: list[float] = []
        self.final_loss: float | None = None
        self.resumed_from = 0
        self.curve_at: tuple[float, ...] = ()

    # ------------------------------------------------------------------ setup and state

    def _build(self) -> None:
        seed_everything(self.seed)
        _deterministic(self.device)
        model = build_model(self.spec)
        self.loaded: Pretrained | None = None
        if self.pretrained_path is not None:
            backbone = backbone_of(self.spec) or "none"
            sha = self.recipe.pretrained  # check_pretrained proved it is the file's
            self.loaded = load_pretrained(model, self.pretrained_path, backbone, sha)
        self.model = model.to(self.device)
        if self.info.enabled and self.device.type == "cuda":
            # batch statistics over all GPUs; gloo on CPU has no SyncBatchNorm kernels
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if self.recipe.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        prefixes = self.loaded.prefixes if self.loaded is not None else ()
        self.optimizer = make_optimizer(self.model, self.recipe, prefixes)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.device.type == "cuda")

    def _wrap(self) -> nn.Module:
        if not self.info.enabled:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids)

    def state(self, finished: bool, result: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT,
            "version": ckpt.VERSION,
            "spec_json": self.spec.to_json(),
            "recipe_json": self.recipe.to_json(),
            "spec_id": self.spec.spec_id,
            "recipe_id": self.recipe.recipe_id,
            "spec_string": self.spec.to_string(),
            "recipe_name": self.recipe.name,
            "data_id": self.source.data_id,
            "seed": self.seed,
            "world_size": self.info.world_size,
            "iteration": self.iteration,
            "images": self.images,
            "seconds": self.seconds,
            "history": self.history,
            "evals": self.evals,
            "window": self.window,
            "final_loss": self.final_loss,
            "precision": self.precision,
            "finished": finished,
            "result": result,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": ckpt.rng_state(),
            "torch_version": str(torch.__version__),
        }

    def save(self, finished: bool = False, result: dict[str, Any] | None = None) -> None:
        if self.info.is_main:
            ckpt.save_atomic(self.state(finished, result), self.ckpt_path)
        dist_utils.barrier(self.info)
        self.saved_at, self.saved_iteration = time.monotonic(), self.iteration

    def _load(self) -> dict[str, Any] | None:
        data = ckpt.load(self.ckpt_path, map_location="cpu")
        ckpt.check_compatible(
            data,
            self.ckpt_path,
            self.spec.spec_id,
            self.recipe.recipe_id,
            self.seed,
            self.source.data_id,
        )
        if data.get("finished"):
            return data
        self.model.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        if self.scaler.is_enabled() and data.get("scaler"):
            self.scaler.load_state_dict(data["scaler"])
        ckpt.set_rng_state(data["rng"])
        self.iteration = self.resumed_from = int(data["iteration"])
        if self.info.is_main:
            print(f"resumed from iteration {self.iteration} ({self.ckpt_path})", file=sys.stderr)
        self.images = int(data["images"])
        self.seconds = float(data["seconds"])
        self.history = list(data["history"])
        self.evals = list(data["evals"])
        self.window = list(data["window"])
        self.final_loss = data["final_loss"]
        before = data.get("precision", self.precision)
        if self.precision not in before.split("+"):
            self.precision = f"{before}+{self.precision}"
        return None

    # ---------------------------------------------------------------------------- loop

    def _bar(self, total: int | None) -> Any:
        if not self.progress:
            return None
        initial = self.seconds if total is None else self.iteration
        return _bar_for(total, self.recipe, initial)

    def _progress_fraction(self) -> float:
        """How much of the budget is spent, in its own unit (drives the poly decay)."""
        kind, budget = self.recipe.budget_kind, self.recipe.budget
        if kind == "iterations":
            return self.iteration / budget
        if kind == "images":
            return self.images / budget
        return self.seconds / budget

    def _done(self, total: int | None) -> bool:
        if total is not None:
            return self.iteration >= total
        return self.seconds >= self.recipe.budget

    def execute(
        self,
        on_eval: OnEval | None,
        resume: bool,
        checkpoint_every: int,
        stop_after: int | None,
    ) -> TrainResult:
        if self.info.is_main:
            self.source.prepare(progress=self.progress)  # once, before other ranks read it
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:  # start over: a later resume must not find the old run's files
                self.ckpt_path.unlink(missing_ok=True)
                (self.run_dir / RESULT_NAME).unlink(missing_ok=True)
        dist_utils.barrier(self.info)
        self._build()
        if resume and self.ckpt_path.exists():
            finished = self._load()
            if finished is not None and finished.get("result"):
                known = TrainResult.__dataclass_fields__
                return TrainResult(**{k: v for k, v in finished["result"].items() if k in known})
        dataset = self.source.dataset("train")
        if len(dataset) == 0:
            raise DataError(f"no training images in {self.source.label} at {self.source.path}")
        cache = open_cache(self.source, "train", dataset, self.decoded_cache)
        if cache is not None:
            dataset = CachedDataset(dataset, cache)
        total = iterations_for(self.recipe)
        net = self._wrap()
        net.train()
        loader = make_train_loader(
            dataset,
            self.recipe,
            self.seed,
            start=self.iteration,
            stop=total,
            rank=self.info.rank,
            world_size=self.info.world_size,
            workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        bar = self._bar(total)
        status, reason = "ok", None
        self.saved_at = time.monotonic()
        self.saved_iteration = self.iteration if self.ckpt_path.exists() else -1
        try:
            self._stop_if_asked()  # a request that came while the run was being set up
            step_start = time.perf_counter()
            for images, labels in loader:
                if self._done(total):
                    break
                before = self._progress_fraction()
                loss_value, lr = self._step(net, images, labels)
                if not math.isfinite(loss_value):
                    status = "failed"
                    reason = f"loss is {loss_value} at iteration {self.iteration + 1}"
                    break
                now = time.perf_counter()
                self.seconds += now - step_start
                self.iteration += 1
                self.images += self.recipe.batch_size
                self._record(loss_value, lr, bar, now - step_start)
                if self.on_step is not None:
                    self.on_step(self.iteration)
                if total is None and self._time_is_up():
                    break
                after = self._progress_fraction()
                periodic = self.recipe.eval_every and self.iteration % self.recipe.eval_every == 0
                # (ranks' clocks differ: a seconds budget gets curve points in one process only)
                curve = any(before < f <= after for f in self.curve_at) and not (
                    self.info.enabled and self.recipe.budget_kind == "seconds"
                )
                if periodic or curve:
                    self._evaluate(on_eval if periodic else None)
                if self._done(total):
                    break
                if stop_after is not None and self.iteration >= stop_after:
                    self.save()
                    status, reason = "paused", f"stop_after={stop_after} reached"
                    break
                if (checkpoint_every and self.iteration % checkpoint_every == 0) or (
                    self.checkpoint_every_s
                    and time.monotonic() - self.saved_at >= self.checkpoint_every_s
                ):
                    self.save()
                self._stop_if_asked()
                step_start = time.perf_counter()
        finally:
            if bar is not None:
                bar.close()
        return self._finish(status, reason)

    def _step(
        self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[float, float]:
        lr = lr_at(self.recipe, self.iteration, self._progress_fraction())
        set_lr(self.optimizer, lr)
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.recipe.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            outputs = net(images)
        loss = segmentation_loss(
            outputs,
            labels,
            self.recipe.loss,
            self.recipe.booster_weight,
            self.recipe.ohem_thresh,
            self.recipe.ohem_min_kept_frac,
        )
        # the mean over ranks, so that every rank stops together on a non-finite loss
        value = float(dist_utils.all_mean(self.info, loss.detach().double().reshape(1))[0])
        if not math.isfinite(value):
            return value, lr  # stop before the step: the last checkpoint stays clean
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return value, lr

    def _stop_if_asked(self) -> None:
        """On a stop request: checkpoint now (unless the last save is this iteration's) and
        raise ``StopRequested``; the next start resumes here exactly."""
        name = interrupt.requested()
        if name is None:
            return
        if self.saved_iteration != self.iteration:
            self.save()
        if self.info.is_main:
            print(
                f"{name}: stopping at iteration {self.iteration}, checkpoint saved", file=sys.stderr
            )
        raise interrupt.StopRequested(name, self.iteration)

    def _time_is_up(self) -> bool:
        """Any rank out of time stops every rank (their clocks differ slightly)."""
        up = torch.tensor([float(self.seconds >= self.recipe.budget)], dtype=torch.float64)
        return float(dist_utils.all_mean(self.info, up)[0]) > 0

    def _record(self, loss: float, lr: float, bar: Any, step_s: float) -> None:
        self.window.append(loss)
        if len(self.window) > LOG_EVERY:
            self.window.pop(0)
        self.final_loss = sum(self.window) / len(self.window)
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        if self.iteration % LOG_EVERY == 0:
            self.history.append(
                {
                    "iteration": self.iteration,
                    "loss": self.final_loss,
                    "lr": lr,
                    "images_per_s": rate,
                }
            )
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}", refresh=False)
            if self.recipe.budget_kind == "seconds":
                bar.update(max(0.0, min(step_s, bar.total - bar.n)))  # the last step overshoots
            else:
                bar.update(1)

    def _evaluate(self, on_eval: OnEval | None) -> None:
        """Rank 0 evaluates and calls ``on_eval``; every rank learns whether to go on."""
        error: BaseException | None = None
        if self.info.is_main:
            # the val loader draws from the global RNG; training must not see that draw
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                result = evaluate(
                    self.model,
                    self.source,
                    "val",
                    input_hw=self.recipe.eval_hw,
                    device=self.device,
                    amp=self.amp,
                    channels_last=self.recipe.channels_last,
                    normalize=(self.recipe.input_mean, self.recipe.input_std),
                )
            self.evals.append(
                {"iteration": self.iteration, "images": self.images, "miou": result.miou}
            )
            if on_eval is not None:
                try:
                    on_eval(self.iteration, result.miou)
                except BaseException as exc:  # re-raised below, after telling the other ranks
                    error = exc
        stop = dist_utils.broadcast_object(self.info, error is not None)
        if error is not None:
            raise error
        if stop:
            raise RuntimeError("stopped by on_eval on rank 0")

    def _finish(self, status: str, reason: str | None) -> TrainResult:
        digest = params_digest(self.model)
        digests = dist_utils.all_gather_object(self.info, digest)
        if status == "ok" and len(set(digests)) != 1:
            raise RuntimeError(f"DDP ranks hold different weights: {digests}")
        result = TrainResult(
            status=status,
            reason=reason,
            iterations=self.iteration,
            images=self.images,
            seconds=self.seconds,
            images_per_s=self.images / self.seconds if self.seconds > 0 else 0.0,
            final_loss=self.final_loss,
            history=self.history,
            evals=self.evals,
            checkpoint=str(self.ckpt_path) if status != "failed" else None,
            spec_id=self.spec.spec_id,
            recipe_id=self.recipe.recipe_id,
            data_id=self.source.data_id,
            seed=self.seed,
            device=str(self.device),
            world_size=self.info.world_size,
            resumed_from=self.resumed_from,
            params_sha1=digest,
            precision=self.precision,
            pretrained=self.loaded.to_record() if self.loaded is not None else None,
        )
        if status == "ok":
            self.save(finished=True, result=result.to_dict())
        if self.info.is_main:
            write_json(self.run_dir / RESULT_NAME, result.to_dict())  # NaN loss -> null
        return result


def _bar_for(total: int | None, recipe: Recipe, initial: float) -> Any:
    from tqdm import tqdm

    if total is None:
        return tqdm(
            total=float(recipe.budget),
            initial=initial,
            unit="s",
            desc="train",
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]",
        )
    return tqdm(total=total, initial=int(initial), unit="it", desc="train", dynamic_ncols=True)
