"""How many optimiser steps a recipe's budget allows: one rule for training and search."""

from __future__ import annotations

import math

from searchspace.recipes import Recipe


def iterations_for(recipe: Recipe) -> int | None:
    """The optimiser steps of an iteration or image budget; None for a wall-clock budget.

    An image budget that is not a multiple of the batch rounds *up*: the last, partial
    step still runs, so every budgeted image is seen (rounding down would silently drop
    up to a batch of them, and a budget smaller than one batch would train zero steps).
    The training loop stops at this count and the search treats this step's evaluation
    as the run's last (never pruned), so both must agree, which is why it is written once.
    """
    if recipe.budget_kind == "iterations":
        return recipe.budget
    if recipe.budget_kind == "images":
        return math.ceil(recipe.budget / recipe.batch_size)
    return None
