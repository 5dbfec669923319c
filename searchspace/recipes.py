"""Training recipes as data: everything that decides a run's result except spec, data, seed.

A recipe has its own id (hash of its canonical JSON), so a result is keyed by
(spec_id, recipe_id, dataset, seed). Runtime choices that do not change the result
(data-loader workers, progress bars, device) are deliberately not recipe fields.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from searchspace.errors import SpecError
from searchspace.serialize import (
    SCHEMA_VERSION,
    added_field,
    canonical_json,
    check_applicable,
    from_dict,
    normalise_numbers,
    parse_overrides,
    replace_paths,
    short_hash,
)

KIND = "recipe"
BudgetKind = Literal["iterations", "seconds", "images"]
Loss = Literal["ce", "ohem"]
Pipeline = Literal["resize_first", "crop_first"]
# RGB in [0, 1]; mmsegmentation's 123.675/116.28/103.53 and 58.395/57.12/57.375 on 0-255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check(cond: bool, name: str, value: object, why: str) -> None:
    if not cond:
        raise SpecError(f"recipe.{name}={value!r}: {why}")


@dataclass(frozen=True)
class Recipe:
    """Defaults are the "smoke" recipe: a few CPU minutes on the built-in data.

    Smoke is sized so that training ``bisenetv2`` and scoring it on the 60 built-in val
    images takes about 80 s on 2 CPU cores (16 images/s with bf16 + channels_last on a
    CPU with AVX512-BF16; fp32 is about 1.5x slower), a 5-row table fits in 10 minutes,
    and the val mIoU (about 19-20 %) is 10x the majority-class baseline (1.9 %).
    """

    # random crop fed to the network during training (height, width); smoke: the whole
    # image at scale 0.5, part of it at 0.75 and 1.0 (the built-in images are 256x512)
    crop_hw: tuple[int, int] = (128, 256)
    batch_size: int = 8
    # the fixed budget: optimiser steps, wall-clock seconds, or training images seen.
    # "seconds" is not reproducible across machines; prefer iterations for comparisons.
    budget_kind: BudgetKind = "iterations"
    budget: int = 150
    # smoke: the paper's 5e-2 at batch 16, scaled linearly to batch 8
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 5e-4  # applied to conv weights only (not BN, not biases)
    poly_power: float = 0.9
    warmup_iters: int = 10  # linear warm-up from lr * warmup_ratio
    warmup_ratio: float = 0.1
    loss: Loss = "ce"
    # OHEM: keep pixels whose probability of the true class is below this, at least min_kept
    ohem_thresh: float = 0.7
    ohem_min_kept_frac: float = 1 / 16  # of the labelled pixels in the batch
    booster_weight: float = 1.0
    # random rescale factors drawn from this set before the crop (the paper's set below)
    scales: tuple[float, ...] = (0.5, 0.75, 1.0)
    flip: bool = True
    color_jitter: float = 0.2
    # mixed precision: fp16 on CUDA, bf16 on a CPU with native bf16 kernels (AVX-512), fp32
    # on other CPUs, where bf16 is ~10x slower (runners.device.amp_dtype; records say which)
    amp: bool = True
    channels_last: bool = True
    # network input at evaluation (the paper resizes 2048x1024 to 1024x512); None: native.
    # smoke: half the built-in 256x512 images, as the paper halves Cityscapes
    eval_hw: tuple[int, int] | None = (128, 256)
    # evaluate every N iterations during training (0: only at the end); used for pruning
    eval_every: int = 0
    # input normalisation, (x - mean) / std per RGB channel of x in [0, 1]: the network's
    # weights depend on it, so a converted checkpoint carries its source's (CoinCheung's
    # Cityscapes statistics differ from ImageNet's)
    input_mean: tuple[float, float, float] = added_field(IMAGENET_MEAN)
    input_std: tuple[float, float, float] = added_field(IMAGENET_STD)
    # how a training sample is made: resize the whole image, then crop (PIL; the pipeline
    # every stored smoke/synth result was trained with), or draw the crop first and
    # compute only its pixels (OpenCV; runners/data/sample.py: the same crops, pixels
    # within one grey level, 4x less work at the paper recipe). A field, because the
    # pixels differ and a stored result must be reproducible from its recipe.
    pipeline: Pipeline = added_field("resize_first")
    # ImageNet (or other) initialisation of the backbone: the SHA-256 of the weights file
    # ("" trains from scratch). The file, not its path, is part of the run's identity;
    # the path is given at run time (``--pretrained``), and its layout is told from its
    # keys (blocks/keymaps.py), which also says its input normalisation.
    pretrained: str = added_field("")
    # the backbone's learning rate over the rest's (fine-tuning pretrained weights)
    backbone_lr_mult: float = added_field(1.0)

    def __post_init__(self) -> None:
        normalise_numbers(self)
        _check(
            self.pretrained == "" or re.fullmatch(r"[0-9a-f]{64}", self.pretrained) is not None,
            "pretrained",
            self.pretrained,
            "expected a weights file's SHA-256 (64 hex digits) or '' (from scratch)",
        )
        _check(
            0 <= self.backbone_lr_mult <= 100,
            "backbone_lr_mult",
            self.backbone_lr_mult,
            "must be in [0, 100]",
        )
        _check(
            all(0 <= m <= 1 for m in self.input_mean),
            "input_mean",
            self.input_mean,
            "expects values in [0, 1] (images are scaled to [0, 1] first)",
        )
        _check(all(s > 0 for s in self.input_std), "input_std", self.input_std, "must be > 0")
        _check(
            self.pipeline in ("resize_first", "crop_first"),
            "pipeline",
            self.pipeline,
            "expected resize_first or crop_first",
        )
        _check(
            len(self.crop_hw) == 2 and min(self.crop_hw) >= 32,
            "crop_hw",
            self.crop_hw,
            "needs two sizes of at least 32",
        )
        _check(self.batch_size >= 2, "batch_size", self.batch_size, "must be >= 2 (BatchNorm)")
        _check(
            self.budget_kind in ("iterations", "seconds", "images"),
            "budget_kind",
            self.budget_kind,
            "expected iterations, seconds or images",
        )
        _check(self.budget > 0, "budget", self.budget, "must be > 0")
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(0 <= self.momentum < 1, "momentum", self.momentum, "must be in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        _check(self.poly_power >= 0, "poly_power", self.poly_power, "must be >= 0")
        _check(self.warmup_iters >= 0, "warmup_iters", self.warmup_iters, "must be >= 0")
        _check(0 < self.warmup_ratio <= 1, "warmup_ratio", self.warmup_ratio, "must be in (0, 1]")
        _check(self.loss in ("ce", "ohem"), "loss", self.loss, "expected ce or ohem")
        _check(0 < self.ohem_thresh < 1, "ohem_thresh", self.ohem_thresh, "must be in (0, 1)")
        _check(
            0 < self.ohem_min_kept_frac <= 1,
            "ohem_min_kept_frac",
            self.ohem_min_kept_frac,
            "must be in (0, 1]",
        )
        _check(self.booster_weight >= 0, "booster_weight", self.booster_weight, "must be >= 0")
        _check(
            len(self.scales) >= 1 and all(s > 0 for s in self.scales),
            "scales",
            self.scales,
            "needs positive scales",
        )
        _check(0 <= self.color_jitter < 1, "color_jitter", self.color_jitter, "must be in [0, 1)")
        if self.eval_hw is not None:
            _check(
                len(self.eval_hw) == 2 and min(self.eval_hw) >= 32,
                "eval_hw",
                self.eval_hw,
                "needs two sizes of at least 32",
            )
        _check(self.eval_every >= 0, "eval_every", self.eval_every, "must be >= 0")

        check_applicable(self)

    @staticmethod
    def inapplicable(data: dict) -> list[tuple[str, str, object]]:
        """Fields the recipe's switches turn off (one training run, one recipe_id)."""
        out: list[tuple[str, str, object]] = []
        if data["loss"] != "ohem":
            why = f"when loss={data['loss']!r} (OHEM settings)"
            out += [(f, why, getattr(Recipe, f)) for f in ("ohem_thresh", "ohem_min_kept_frac")]
        if data["warmup_iters"] == 0:
            out.append(("warmup_ratio", "when warmup_iters=0 (no warm-up)", Recipe.warmup_ratio))
        if data["pretrained"] == "":
            why = "when pretrained='' (from scratch; with weights: --pretrained PATH --backbone-lr-mult X)"
            out.append(("backbone_lr_mult", why, 1.0))
        return out

    def to_json(self, indent: int | None = None) -> str:
        return canonical_json(self, KIND, indent)

    @property
    def recipe_id(self) -> str:
        return short_hash(self.to_json())

    @property
    def name(self) -> str:
        """The preset's name when this is one, else ``custom-<id>``."""
        for name, recipe in RECIPES.items():
            if recipe == self:
                return name
        return f"custom-{self.recipe_id}"

    def replace(self, **changes: object) -> Recipe:
        return replace_paths(self, changes)


RECIPES: dict[str, Recipe] = {
    "smoke": Recipe(),
    # The committed ablations on the built-in data (results/v2-synth): smoke with 4x the
    # budget (600 iterations, about 3 min a run on 2 cores). Chosen from the learning
    # curves of results/pilot-600 (Table 3a, 2 seeds): at 150 iterations the rows sit
    # within 1 point of each other and of the detail branch alone; mIoU is still rising
    # fast at 600 (18.7 -> 22.4 -> 28.4 mean at 150 / 300 / 600), so longer is better,
    # and 600 is the longest budget whose whole plan (every V2 table, 3-6 seeds: about
    # 200 run-equivalents) fits in ~10 CPU hours. The report flags the verdicts that
    # still changed over the last doubling.
    "synth": Recipe(budget=600),
    # The V2 paper's Cityscapes protocol (../shared/paper/README.md, "V2 protocol").
    # The crop size is not stated unambiguously; 1024x1024 is what reimplementations use.
    "paper": Recipe(
        crop_hw=(1024, 1024),
        batch_size=16,
        budget_kind="iterations",
        budget=150_000,
        lr=5e-2,
        momentum=0.9,
        weight_decay=5e-4,
        poly_power=0.9,
        warmup_iters=1000,
        loss="ce",
        scales=(0.75, 1.0, 1.25, 1.5, 1.75, 2.0),
        flip=True,
        color_jitter=0.0,
        amp=True,
        channels_last=False,
        eval_hw=(512, 1024),
        eval_every=0,
        pipeline="crop_first",
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise SpecError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})") from None


def parse_recipe(text: str) -> Recipe:
    """``smoke``, ``paper``, ``NAME:field=value,...`` (``smoke:budget=400``) or a .json file.

    A JSON file holds a recipe's canonical JSON, e.g. the ``recipe`` of a stored record,
    so a past run's exact recipe can be named even after a preset has changed.
    """
    if text.strip().endswith(".json"):
        path = Path(text.strip())
        try:
            data = json.loads(path.read_text())
        except OSError:
            raise SpecError(f"recipe file {path}: cannot be read") from None
        except json.JSONDecodeError as exc:
            raise SpecError(f"recipe file {path}: malformed JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise SpecError(f"recipe file {path}: expected a JSON object")
        return recipe_from_json_dict(data)
    base, _, overrides = text.strip().partition(":")
    recipe = get_recipe(base)
    aliases = {f: f for f in Recipe.__dataclass_fields__}
    changes = parse_overrides(overrides, Recipe, aliases, what="recipe field")
    return recipe.replace(**changes) if changes else recipe


def recipe_from_json_dict(data: dict) -> Recipe:
    if data.get("schema") != SCHEMA_VERSION or data.get("kind") != KIND:
        raise SpecError(f"not a recipe (schema={data.get('schema')!r}, kind={data.get('kind')!r})")
    return from_dict(Recipe, data.get("fields", {}))
