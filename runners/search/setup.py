"""What every trial of one worker shares, built once: the space, recipe, data and store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runners.data.source import DataSource, parse_data_arg
from runners.pretrained import NONE as NO_PRETRAINING
from runners.pretrained import Pretraining, resolve_pretrained
from runners.runs import PlannedRun
from runners.search.config import SearchConfig
from runners.store import Store
from runners.train.budget import iterations_for
from searchspace.optuna_spaces import SearchSpace, get_space
from searchspace.presets import backbone_of
from searchspace.recipes import Recipe, parse_recipe
from searchspace.records import RecordKey
from searchspace.tables import for_dataset

# evaluations per run when a pruner needs intermediate mIoU and the recipe has none
PRUNING_EVALS = 4
# iterations assumed for a wall-clock budget when spacing those evaluations
SECONDS_BUDGET_ITERATIONS = 100


def space_backbones(space: SearchSpace) -> set[str | None]:
    """The backbones a space's points can have: its ``backbone`` knob's choices, else the
    one of its cheapest point."""
    for knob in space.knobs:
        if knob.name == "backbone":
            return set(knob.choices)
    return {backbone_of(space.to_spec(space.cheapest_params()))}


def pretraining_of(cfg: SearchConfig) -> Pretraining:
    space = get_space(cfg.space)
    return resolve_pretrained(cfg.pretrained, space_backbones(space), cfg.backbone_lr_mult)


@dataclass(frozen=True)
class TrialSetup:
    space: SearchSpace
    recipe: Recipe
    data: DataSource
    store: Store
    pretraining: Pretraining = NO_PRETRAINING

    @classmethod
    def of(cls, cfg: SearchConfig) -> TrialSetup:
        recipe = parse_recipe(cfg.recipe)
        if cfg.pruner != "none" and recipe.eval_every == 0:
            total = iterations_for(recipe) or SECONDS_BUDGET_ITERATIONS
            recipe = recipe.replace(eval_every=max(1, total // PRUNING_EVALS))
        data, store = parse_data_arg(cfg.data), Store(cfg.results_dir)
        return cls(get_space(cfg.space), recipe, data, store, pretraining_of(cfg))

    def run(self, spec: Any, seed: int) -> PlannedRun:
        """The run of ``spec``: the study's recipe, plus a weights file where one fits."""
        recipe, weights = self.pretraining.apply(spec, self.recipe)
        base = self.recipe.recipe_id if weights is not None else None
        key = RecordKey.of(spec, recipe, self.data.data_id, seed)
        return PlannedRun(key, spec, recipe, seed, [], weights, base)

    def adapt(self, spec: Any) -> Any:
        """``spec`` with its classifier sized for the data (the one rule, ``for_dataset``)."""
        return for_dataset(spec, self.data.num_classes)

    def key(self, spec: Any, seed: int) -> RecordKey:
        return self.run(spec, seed).key
