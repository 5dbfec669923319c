"""What a run is, before anything runs: its key, spec, recipe, seed and paper rows, and how
it is profiled. Torch-free, so planning (and ``--status``) never loads torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchspace.recipes import Recipe
from searchspace.records import RecordKey
from searchspace.tables import PaperRow


@dataclass(frozen=True)
class ProfileSettings:
    """How each run's latency is measured (counts are always taken at the row's input)."""

    latency: bool = True
    warmup: int = 2
    repeats: int = 10
    threads: int | None = None
    input_hw: tuple[int, int] | None = None  # None: the paper's input for the row


@dataclass
class PlannedRun:
    """A run to do: its key, what it trains, and the paper rows it stands for (if any)."""

    key: RecordKey
    spec: Any
    recipe: Recipe
    seed: int
    rows: list[PaperRow] = field(default_factory=list)
    # the weights file whose SHA-256 ``recipe.pretrained`` names (None: from scratch)
    pretrained: Path | None = None
    # with ``pretrained``: the row's recipe id before the file's changes (tables find it)
    base_recipe_id: str | None = None

    @property
    def label(self) -> str:
        return ", ".join(r.key for r in self.rows)

    def input_hw(self, settings: ProfileSettings) -> tuple[int, int]:
        """Where it is profiled: the settings' input, else its paper row's."""
        h, w = settings.input_hw or self.rows[0].input_hw
        return int(h), int(w)

    @classmethod
    def of(cls, spec: Any, recipe: Recipe, data: Any, seed: int) -> PlannedRun:
        """``data``: anything with a ``data_id`` (a ``runners.data`` source)."""
        return cls(RecordKey.of(spec, recipe, data.data_id, seed), spec, recipe, seed)
