"""The built-in synthetic dataset: generation in the official Cityscapes layout, and its cache.

It lets every command run without Cityscapes (which users must bring themselves). It is
written exactly like Cityscapes -- ``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` and
``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png`` with real labelIds -- so
``CityscapesDataset`` reads it, and it is labelled as synthetic wherever results are shown.
The pictures come from ``runners.data.scene``.

Every image draws from its own ``numpy.random.Generator`` seeded by (seed, split, index):
the same config always gives byte-identical PNGs, and image 7 does not depend on how many
images are generated. ``ensure_synth`` caches a generated dataset; ``synth.json`` is
written last and is the "complete" marker.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from runners.cpus import usable_cpus
from runners.data.cache import CACHE_ENV, cache_root
from runners.data.labels import CLASS_NAMES, IGNORE_INDEX, LABEL_TO_TRAIN
from runners.data.scene import render_scene
from runners.store.files import building_dir
from searchspace.atomic import write_json
from searchspace.errors import DataError

#: Bump whenever the pictures change, so cached datasets from older code are regenerated.
GENERATOR_VERSION = 1
MANIFEST_NAME = "synth.json"
#: Written first: marks a folder as ours, so it may be replaced even without a manifest.
OWNER_MARK = ".bisenet-synth"
SPLITS = ("train", "val")
_CITY_RE = re.compile(r"^[a-z][a-z0-9]*$")  # no "_": it separates the parts of a file stem


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. The dict form (``to_dict``) is the cache key."""

    train_count: int = 300
    val_count: int = 60
    height: int = 256  # half of Cityscapes' 512x1024 protocol input, so CPU demos stay fast
    width: int = 512
    seed: int = 0
    cities: tuple[str, ...] = ("synthtown", "gridville", "parkdale")

    def __post_init__(self) -> None:
        for name in ("train_count", "val_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise DataError(f"synth config: {name} must be an integer >= 0, got {value!r}")
        if self.train_count + self.val_count == 0:
            raise DataError("synth config: train_count and val_count are both 0")
        if not isinstance(self.height, int) or self.height < 32:
            raise DataError(f"synth config: height must be an integer >= 32, got {self.height!r}")
        if not isinstance(self.width, int) or self.width < 64:
            raise DataError(f"synth config: width must be an integer >= 64, got {self.width!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise DataError(f"synth config: seed must be an integer >= 0, got {self.seed!r}")
        cities = tuple(self.cities)
        object.__setattr__(self, "cities", cities)
        bad = [c for c in cities if not isinstance(c, str) or not _CITY_RE.match(c)]
        if not cities or bad:
            raise DataError(
                f"synth config: cities must be lowercase names like 'synthtown', got {cities!r}"
            )

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able form; ``from_dict(to_dict())`` gives the same config."""
        data = asdict(self)
        data["cities"] = list(self.cities)
        return dict(sorted(data.items()))

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SynthConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "cities" in known:
            known["cities"] = tuple(known["cities"])  # type: ignore[arg-type]
        return cls(**known)  # type: ignore[arg-type]

    @property
    def data_id(self) -> str:
        """Short stable id of the pictures this config gives (config + generator version)."""
        text = json.dumps(
            {"config": self.to_dict(), "generator_version": GENERATOR_VERSION}, sort_keys=True
        )
        return "synth-" + hashlib.sha1(text.encode()).hexdigest()[:10]

    def count(self, split: str) -> int:
        return {"train": self.train_count, "val": self.val_count}[split]


#: Names the built-in dataset's folder itself (``$BISENET_LAB_CACHE`` moves the whole cache).
DATA_ENV = "BISENET_DATA"


def default_synth_root() -> Path:
    """Where the built-in dataset is cached: ``$BISENET_DATA``, else ``synth/`` in the
    toolkit's cache folder (``$BISENET_LAB_CACHE``, else ``~/.cache/bisenet-lab``: see
    ``runners.data.cache``), the same whatever folder a command runs from."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else cache_root() / "synth"


def image_stem(config: SynthConfig, split: str, index: int) -> tuple[str, str]:
    """(city, Cityscapes-style stem) of one generated image; depends only on the index."""
    city = config.cities[index % len(config.cities)]
    return city, f"{city}_{index:06d}_{19:06d}"  # frame 19, as in Cityscapes' gtFine frames


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for one image: independent of the count and of other images."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


# ------------------------------------------------------------------ dataset files and cache


def _write_png(image: np.ndarray, path: Path) -> None:
    # Level 1: noise makes PNGs nearly incompressible, and level 6 only costs time.
    Image.fromarray(image).save(path, format="PNG", compress_level=1)


def _render_files(root: Path, config: SynthConfig, jobs: list[tuple[str, int]]) -> np.ndarray:
    """Render and write some images; returns trainId pixel counts (256 bins)."""
    pixels = np.zeros(256, dtype=np.int64)
    for split, index in jobs:
        city, stem = image_stem(config, split, index)
        img_dir = root / "leftImg8bit" / split / city
        gt_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        rng = image_rng(config.seed, split, index)
        image, label_ids = render_scene(rng, config.height, config.width)
        _write_png(image, img_dir / f"{stem}_leftImg8bit.png")
        _write_png(label_ids, gt_dir / f"{stem}_gtFine_labelIds.png")
        pixels += np.bincount(LABEL_TO_TRAIN[label_ids].ravel(), minlength=256)
    return pixels


def generate_synth(
    root: Path, config: SynthConfig, workers: int | None = None, progress: bool = False
) -> dict[str, object]:
    """Write the dataset into ``root`` (created, expected empty) and return its manifest.

    ``workers`` processes share the images (default: up to 2, 1 for small sets, where
    starting processes costs more than it saves); the files do not depend on it. The
    manifest is written last, so a dataset without one is incomplete. Prefer
    ``ensure_synth``, which generates into a temporary folder and renames it into place.
    """
    start = time.perf_counter()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / OWNER_MARK).write_text("generated by runners.data.synth; safe to delete\n")
    jobs = [(split, i) for split in SPLITS for i in range(config.count(split))]
    if workers is None:
        workers = min(2, usable_cpus()) if len(jobs) >= 64 else 1
    chunks = [jobs[i : i + 16] for i in range(0, len(jobs), 16)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synth", unit="img", leave=False)
    pixels = np.zeros(256, dtype=np.int64)

    def done(n: int) -> None:
        if bar is not None:
            bar.update(n)

    if workers <= 1:
        for chunk in chunks:
            pixels += _render_files(root, config, chunk)
            done(len(chunk))
    else:
        # "spawn": a forked child of a process that already runs torch threads can hang.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_render_files, root, config, c): len(c) for c in chunks}
            for future in as_completed(futures):
                pixels += future.result()
                done(futures[future])
    if bar is not None:
        bar.close()
    total = max(int(pixels.sum()), 1)
    manifest: dict[str, object] = {
        "format": "bisenet-lab synthetic street scenes (Cityscapes layout, NOT Cityscapes)",
        "generator_version": GENERATOR_VERSION,
        "config": config.to_dict(),
        "data_id": config.data_id,
        "seed": config.seed,
        "counts": {split: config.count(split) for split in SPLITS},
        "class_pixel_fraction": {
            name: float(pixels[i]) / total for i, name in enumerate(CLASS_NAMES)
        },
        "ignore_pixel_fraction": float(pixels[IGNORE_INDEX]) / total,
        "generation_s": round(time.perf_counter() - start, 3),
    }
    write_json(root / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(root: Path) -> dict[str, object] | None:
    """The manifest of a complete synthetic dataset, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(root) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_matches(manifest: dict[str, object] | None, config: SynthConfig) -> bool:
    """True when ``manifest`` describes exactly what ``config`` and this generator would write."""
    return (
        manifest is not None
        and manifest.get("generator_version") == GENERATOR_VERSION
        and manifest.get("config") == config.to_dict()
    )


def ensure_synth(
    root: Path | str | None = None,
    config: SynthConfig | None = None,
    force: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Return a complete synthetic dataset at ``root``, generating it only when needed.

    It is regenerated when ``synth.json`` is missing, when its config or generator version
    differs, or with ``force``. Generation goes to a partial folder beside ``root`` that is
    renamed into place (``runners.store.files.building_dir``, the rule every cache
    follows), so an interrupted run never leaves a dataset that looks complete and
    processes that generate at once never remove each other's work. A non-empty folder
    that this module did not write is refused rather than replaced.
    """
    root = Path(root) if root is not None else default_synth_root()
    config = config or SynthConfig()
    if not force and manifest_matches(read_manifest(root), config):
        return root
    if root.exists() and not root.is_dir():
        raise DataError(f"synthetic data folder is a file: {root}")
    if root.is_dir() and any(root.iterdir()) and not (root / OWNER_MARK).exists():
        raise DataError(
            f"{root} is not empty and is not a generated dataset; refusing to overwrite it "
            "(choose an empty or new folder)"
        )

    def keep(final: Path) -> bool:
        """A matching dataset another process finished first stays (unless forced), and
        so does a folder this module did not write."""
        if not (final / OWNER_MARK).exists():
            return True
        return not force and manifest_matches(read_manifest(final), config)

    try:
        with building_dir(root, keep) as tmp:
            generate_synth(tmp, config, workers=workers, progress=progress)
    except OSError as exc:
        raise DataError(
            f"cannot create the synthetic dataset at {root}: {exc.strerror or exc} "
            f"(choose another folder with synth:PATH, ${DATA_ENV} or ${CACHE_ENV})"
        ) from None
    return root
