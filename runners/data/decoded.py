"""A pre-decoded copy of a training split: raw pixels in memory-mapped files.

PNG decoding is the floor of any PNG pipeline (about 70 ms for a 2048x1024 image on one
core, benchmarks/loader_bench.py) and the crop needs a fraction of the pixels. Decoded
once into two flat files, a sample is read by touching only the pages its crop samples.
``python -m runners.data cache --data cityscapes:PATH`` builds it; training uses it when
it exists (``--decoded-cache DIR`` names another place).

Safety: it is built in a hidden partial folder and renamed into place only when every
sample is written and the manifest is last (``runners.store.files.building_dir``, the rule
every cache follows), so a folder under the final name is always complete. Builders may
race: each has its own partial folder, only dead builders' partials are removed, and the
first finished cache stays. A stale cache is swapped out in one step where the system can
(Linux). The manifest fingerprints the dataset's files (relative paths, sizes, modification times),
so a cache of another dataset, or of files that changed since, is refused in one line.
What it returns is exactly what ``PairedDataset.read`` returns (RGB and trainIds, the
same checks ran when it was built), so training with or without it is identical and
the exact-resume guarantee of ``runners.train.data`` holds either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from runners.data.cache import cache_root
from runners.store.files import building_dir
from searchspace.errors import DataError

VERSION = 1
MANIFEST = "manifest.json"
IMAGES, LABELS = "images.u8", "labels.u8"


def fingerprint(dataset: Any) -> str:
    """The dataset's files as they are now: relative paths, sizes, modification times."""
    h = hashlib.sha256()
    root = Path(dataset.root)
    for pair in dataset.samples:
        for path in pair:
            st = Path(path).stat()
            rel = os.path.relpath(path, root)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def default_cache_dir(source: Any, split: str) -> Path:
    """Where ``runners.data cache`` puts a split's cache and training looks for it."""
    where = hashlib.sha256(str(Path(source.path).resolve()).encode()).hexdigest()[:10]
    return cache_root() / "decoded" / f"{source.kind}-{where}-{split}"


class DecodedCache:
    """A complete, matching cache, opened lazily in each process (DataLoader workers
    open their own maps, so nothing large is pickled to them)."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder, self.manifest = folder, manifest
        self.count, self.height, self.width = (manifest[k] for k in ("count", "height", "width"))
        self._maps: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": None}

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._maps is None:
            shape = (self.count, self.height, self.width)
            images = np.memmap(self.folder / IMAGES, np.uint8, "r", shape=(*shape, 3))
            labels = np.memmap(self.folder / LABELS, np.uint8, "r", shape=shape)
            self._maps = (images, labels)
        return self._maps

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self._open()
        return images[index], labels[index]


def _expected_bytes(count: int, h: int, w: int) -> dict[str, int]:
    return {IMAGES: count * h * w * 3, LABELS: count * h * w}


def open_cache(
    source: Any, split: str, dataset: Any, folder: Path | None = None
) -> DecodedCache | None:
    """The split's cache when one is there (``folder``, else the default place), checked
    against ``dataset``; None when there is none. DataError when it does not fit."""
    folder = Path(folder) if folder is not None else default_cache_dir(source, split)
    if not folder.exists():
        if folder != default_cache_dir(source, split):
            raise DataError(
                f"decoded cache {folder}: not found (build it: python -m runners.data cache)"
            )
        return None
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        raise DataError(
            f"decoded cache {folder}: incomplete (no readable manifest); delete it and run"
            " python -m runners.data cache again"
        ) from None
    if manifest.get("version") != VERSION or manifest.get("split") != split:
        raise DataError(f"decoded cache {folder}: made for split {manifest.get('split')!r} "
                        f"(version {manifest.get('version')}), not {split!r}")  # fmt: skip
    if manifest.get("data_id") != source.data_id or manifest.get("files") != fingerprint(dataset):
        raise DataError(
            f"decoded cache {folder}: made from another dataset or from files that changed since"
            f" ({manifest.get('data_id')} at {manifest.get('root')}); rebuild it:"
            f" python -m runners.data cache --data {source.kind}:{source.path}"
        )
    for name, size in _expected_bytes(
        manifest["count"], manifest["height"], manifest["width"]
    ).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            raise DataError(
                f"decoded cache {folder}: {name} is incomplete; delete the folder and rebuild it"
            )
    return DecodedCache(folder, manifest)


def build_cache(
    source: Any,
    split: str,
    dataset: Any,
    folder: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, bool]:
    """Decode every sample of ``dataset`` into ``folder`` (default place if None);
    returns (folder, built now). An up-to-date cache is kept as it is."""
    folder = Path(folder) if folder is not None else default_cache_dir(source, split)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"decoded cache {folder}: is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MANIFEST).exists():
        # a stale cache is replaced below; anything else is the user's, never deleted
        raise DataError(
            f"decoded cache {folder}: a folder that is not a decoded cache; choose another"
        )
    if folder.exists():
        try:
            if open_cache(source, split, dataset, folder) is not None:
                return folder, False
        except DataError:
            pass  # stale or broken: rebuilt below, then swapped in
    n = len(dataset)
    if n == 0:
        raise DataError(f"no {split} images in {source.label} at {source.path}")
    first_image, _ = dataset.read(0)
    h, w = first_image.shape[:2]
    need = sum(_expected_bytes(n, h, w).values())
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder.parent).free
    except OSError as exc:
        raise DataError(
            f"decoded cache {folder}: cannot write it ({exc.strerror or exc})"
        ) from None
    if free < need * 1.02:
        raise DataError(
            f"decoded cache {folder}: needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
        )

    def keep(final: Path) -> bool:
        """Another builder's up-to-date cache stays, and so does anything not a cache."""
        if not (final / MANIFEST).is_file():
            return True
        try:
            return open_cache(source, split, dataset, final) is not None
        except DataError:
            return False  # stale: ours replaces it

    try:
        with building_dir(folder, keep) as tmp:
            _write_cache(tmp, source, split, dataset, (n, h, w), on_progress)
    except OSError as exc:
        raise DataError(
            f"decoded cache {folder}: cannot write it ({exc.strerror or exc})"
        ) from None
    return folder, True


def _write_cache(
    tmp: Path,
    source: Any,
    split: str,
    dataset: Any,
    shape: tuple[int, int, int],
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """Every sample into ``tmp``, the manifest last."""
    n, h, w = shape
    images = np.memmap(tmp / IMAGES, np.uint8, "w+", shape=(n, h, w, 3))
    labels = np.memmap(tmp / LABELS, np.uint8, "w+", shape=(n, h, w))
    for i in range(n):
        image, label = dataset.read(i)
        if image.shape[:2] != (h, w):
            raise DataError(
                f"decoded cache: {dataset.samples[i][0]} is {image.shape[1]}x{image.shape[0]},"
                f" the first image {w}x{h}; a cache needs one image size"
            )
        images[i], labels[i] = image, label
        if on_progress is not None:
            on_progress(i + 1, n)
    images.flush(), labels.flush()
    del images, labels
    manifest = {
        "version": VERSION,
        "data_id": source.data_id,
        "root": str(Path(source.path).resolve()),
        "split": split,
        "count": n,
        "height": h,
        "width": w,
        "files": fingerprint(dataset),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))


class CachedDataset(Dataset):
    """``dataset`` with its ``read`` served from a decoded cache (same arrays)."""

    def __init__(self, dataset: Any, cache: DecodedCache) -> None:
        if len(dataset) != cache.count:
            raise DataError(
                f"decoded cache {cache.folder}: {cache.count} samples, the dataset {len(dataset)}"
            )
        self.dataset, self.cache = dataset, cache
        self.samples = dataset.samples

    def __len__(self) -> int:
        return self.cache.count

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.cache.read(index)

    def __getitem__(self, index: int):
        return self.dataset.transform(*self.read(index))
