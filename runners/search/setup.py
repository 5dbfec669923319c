"""What every trial of one worker shares, built once: the space, recipe, data and store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runners.data.source import DataSource, parse_data_arg
from runners.search.config import SearchConfig
from runners.store import Store
from runners.train.budget import iterations_for
from searchspace.optuna_spaces import SearchSpace, get_space
from searchspace.recipes import Recipe, parse_recipe
from searchspace.records import RecordKey
from searchspace.tables import for_dataset

# evaluations per run when a pruner needs intermediate mIoU and the recipe has none
PRUNING_EVALS = 4
# iterations assumed for a wall-clock budget when spacing those evaluations
SECONDS_BUDGET_ITERATIONS = 100


@dataclass(frozen=True)
class TrialSetup:
    space: SearchSpace
    recipe: Recipe
    data: DataSource
    store: Store

    @classmethod
    def of(cls, cfg: SearchConfig) -> TrialSetup:
        recipe = parse_recipe(cfg.recipe)
        if cfg.pruner != "none" and recipe.eval_every == 0:
            total = iterations_for(recipe) or SECONDS_BUDGET_ITERATIONS
            recipe = recipe.replace(eval_every=max(1, total // PRUNING_EVALS))
        return cls(get_space(cfg.space), recipe, parse_data_arg(cfg.data), Store(cfg.results_dir))

    def adapt(self, spec: Any) -> Any:
        """``spec`` with its classifier sized for the data (the one rule, ``for_dataset``)."""
        return for_dataset(spec, self.data.num_classes)

    def key(self, spec: Any, seed: int) -> RecordKey:
        return RecordKey.of(spec, self.recipe, self.data.data_id, seed)
