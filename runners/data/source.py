"""The ``--data`` argument: which dataset a command uses, and its identity in result keys.

Torch-free (numpy and PIL only, through the synthetic set's config), so planning a table
and ``--status`` can name every run's key without loading torch; opening and checking a
split imports ``runners.data.datasets`` when it is asked for.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runners.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from runners.data.synth import (
    SynthConfig,
    default_synth_root,
    ensure_synth,
    manifest_matches,
    read_manifest,
)
from searchspace.errors import DataError, one_line

if TYPE_CHECKING:
    from runners.data.datasets import PairedDataset

#: The splits every run reads (train, then evaluation on val); checked when data is opened.
RUN_SPLITS = ("train", "val")


def read_class_names(root: Path) -> tuple[str, ...]:
    """Class names from ``root/classes.txt``, one per line (blank lines skipped)."""
    path = root / "classes.txt"
    if not root.is_dir():
        raise DataError(f"folder dataset folder not found: {root}")
    try:
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    except FileNotFoundError:
        raise DataError(f"class list not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read class list {path}: {one_line(exc)}") from None
    if not names:
        raise DataError(f"class list is empty: {path}")
    if len(names) > IGNORE_INDEX:
        raise DataError(f"class list has {len(names)} classes, at most {IGNORE_INDEX} fit: {path}")
    return names


@dataclass(frozen=True)
class DataSource:
    """A dataset chosen on the command line (``parse_data_arg``, which checks its splits).

    ``prepare`` makes its files exist, ``dataset`` opens a split (checked), ``check``
    verifies splits on demand.
    """

    kind: str  # "synth", "cityscapes" or "folder"
    path: Path
    num_classes: int
    class_names: tuple[str, ...]
    label: str  # for tables and plots, e.g. "Cityscapes"
    data_id: str  # stable, for result keys
    synth_config: SynthConfig | None = None

    @property
    def is_builtin(self) -> bool:
        return self.kind == "synth"

    def prepare(self, progress: bool = False) -> Path:
        """Make the files exist (generates the synthetic set if needed); returns the root.

        The synthetic set is checked like any other data (once per generation).
        """
        if self.kind == "synth":
            root = ensure_synth(self.path, self.synth_config, progress=progress)
            self._check(root, self._synth_splits(RUN_SPLITS), False, progress)
            return root
        return self.path

    def check(
        self, splits: Sequence[str] = RUN_SPLITS, force: bool = False, progress: bool | None = None
    ) -> dict[str, int]:
        """Verify ``splits`` (remembered verdicts; ``force`` re-checks); images per split.

        The synthetic set is generated first if needed.
        """
        root = self.path
        if self.kind == "synth":
            root = ensure_synth(self.path, self.synth_config, progress=bool(progress))
        return self._check(root, splits, force, progress)

    def _check(
        self, root: Path, splits: Sequence[str], force: bool, progress: bool | None
    ) -> dict[str, int]:
        from runners.data.datasets import check_split

        counts = {}
        for split in splits:
            dataset = self._open(root, split, None)
            counts[split] = check_split(dataset, force=force, progress=progress)
        return counts

    def _synth_splits(self, splits: Sequence[str]) -> list[str]:
        config = self.synth_config or SynthConfig()
        return [s for s in splits if s not in RUN_SPLITS or config.count(s) > 0]

    def _open(self, root: Path, split: str, transform: Callable | None) -> PairedDataset:
        from runners.data.datasets import CityscapesDataset, FolderDataset

        if self.kind == "folder":
            return FolderDataset(root, split, transform)
        return CityscapesDataset(root, split, transform)

    def splits(self) -> list[str]:
        """The split folders present on disk (after ``prepare``)."""
        sub = "images" if self.kind == "folder" else "leftImg8bit"
        folder = self.path / sub
        if not folder.is_dir():
            raise DataError(f"{self.label} has no {sub}/ folder: {folder}")
        return sorted(p.name for p in folder.iterdir() if p.is_dir())

    def dataset(
        self, split: str, transform: Callable | None = None, check: bool = True
    ) -> PairedDataset:
        """The dataset of one split; ``transform=None`` means ``eval_transform()``.

        With ``check`` (default) the split is verified first (``check_split``: remembered,
        so only the first open of a dataset reads every file).
        """
        from runners.data.datasets import check_split

        dataset = self._open(self.prepare(), split, transform)
        if check:
            check_split(dataset)
        return dataset


SYNTH_LABEL = "synthetic street scenes (built-in, NOT Cityscapes)"
_KINDS = ("synth", "cityscapes", "folder")


def _existing_config(root: Path) -> SynthConfig | None:
    manifest = read_manifest(root)
    try:
        return SynthConfig.from_dict(manifest["config"]) if manifest else None  # type: ignore[arg-type]
    except (DataError, TypeError, KeyError):
        return None  # a damaged manifest: the dataset will be regenerated


def parse_data_arg(
    text: str | None = "synth",
    synth_config: SynthConfig | None = None,
    check: Sequence[str] = RUN_SPLITS,
) -> DataSource:
    """Parse ``synth`` (default), ``synth:PATH``, ``cityscapes:PATH`` or ``folder:PATH``.

    ``synth`` is the default synthetic dataset in ``default_synth_root()``; ``synth:PATH``
    is the one generated at PATH (default config if there is none yet); ``synth_config``
    asks for a particular one. The config's id is the ``data_id``.

    The ``check`` splits (default: train and val, which every run reads; ``()`` for none)
    are verified before the source is returned, so a broken dataset is a ``DataError``
    before any run starts. Verdicts are remembered (``check_split``): only the first open
    of a dataset reads every file. A synthetic set that is not generated yet is checked
    when ``prepare`` generates it.
    """
    source = _parse_data_arg(text, synth_config)
    splits = list(check)
    if source.kind == "synth":
        if not splits or not manifest_matches(read_manifest(source.path), source.synth_config):
            return source
        splits = source._synth_splits(splits)
    if splits:
        source._check(source.path, splits, False, None)
    return source


def _parse_data_arg(text: str | None, synth_config: SynthConfig | None) -> DataSource:
    text = (text or "synth").strip()
    kind, sep, path_text = text.partition(":")
    kind = kind.lower()
    if kind not in _KINDS:
        raise DataError(f"unknown data source {text!r}: use synth, cityscapes:PATH or folder:PATH")
    if kind == "synth":
        path = Path(path_text).expanduser() if path_text else default_synth_root()
        config = synth_config or (_existing_config(path) if path_text else None) or SynthConfig()
        return DataSource(
            "synth", path, NUM_CLASSES, CLASS_NAMES, SYNTH_LABEL, config.data_id, config
        )
    if not sep or not path_text:
        raise DataError(f"data source {kind!r} needs a folder: {kind}:PATH")
    path = Path(path_text).expanduser()
    if not path.is_dir():
        raise DataError(f"{kind} dataset folder not found: {path}")
    if kind == "cityscapes":
        return DataSource("cityscapes", path, NUM_CLASSES, CLASS_NAMES, "Cityscapes", "cityscapes")
    names = read_class_names(path)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", path.resolve().name).strip("-") or "data"
    return DataSource(
        "folder", path, len(names), names, f"folder dataset {path.name}", f"folder-{slug}"
    )
