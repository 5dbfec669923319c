"""Segmentation datasets: Cityscapes (official layout) and a generic folder layout, opened
through the ``--data`` argument's ``runners.data.source.DataSource``.

Every problem with the files raises ``DataError`` with one line naming the file: the
folder scan checks pairing when the dataset is built, decoding and label values are
checked when a sample is loaded, and ``verify()`` loads every sample to check all of it
up front. ``parse_data_arg`` (how every command opens its data) and ``DataSource.dataset``
verify the splits they open before any run starts, once per dataset: the verdict is
remembered in the cache folder under a fingerprint of the files (``check_split``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from runners.cpus import usable_cpus
from runners.data.cache import load_verdict, save_verdict
from runners.data.labels import (
    CLASS_NAMES,
    IGNORE_INDEX,
    LABEL_TO_TRAIN,
    NUM_CLASSES,
    VALID_LABEL_MASK,
)
from runners.data.source import read_class_names
from runners.data.transforms import eval_transform
from runners.data.workers import toolkit_errors_leave_workers
from searchspace.errors import DataError, one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Bump when the checks change: every remembered verdict is then reached again.
CHECK_VERSION = 1


def _open_image(path: Path, what: str, decode: bool = True) -> Image.Image:
    """Open ``path`` and, with ``decode``, decode it fully (lazy PIL decoding would hide
    truncated files); without, only its header is read (format, size, mode)."""
    try:
        with Image.open(path) as im:
            if decode:
                im.load()
            return im
    except FileNotFoundError:
        raise DataError(f"{what} file disappeared: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode {what} {path}: {one_line(exc)}") from None


# PNGs of these modes decode to the same pixels with OpenCV, which is faster (about 20%
# on 2048x1024 images: benchmarks/loader_bench.py); other formats keep PIL's decoder, so a
# JPEG dataset's pixels do not depend on which library decoded them.
_CV2_FLAGS = {"RGB": cv2.IMREAD_COLOR, "L": cv2.IMREAD_GRAYSCALE}


def _decode(path: Path, what: str, rgb: bool) -> tuple[Image.Image, np.ndarray]:
    """(header, pixels) of an image file, decoded the fastest exact way: HxWx3 RGB when
    ``rgb``, else the file's own single channel (labels)."""
    head = _open_image(path, what, decode=False)
    want = "RGB" if rgb else "L"
    flag = _CV2_FLAGS.get(want) if head.format == "PNG" and head.mode == want else None
    if flag is not None:
        arr = cv2.imread(str(path), flag)
        if arr is None or arr.shape[:2] != (head.size[1], head.size[0]):
            raise DataError(f"cannot decode {what} {path}: truncated or damaged PNG")
        return head, cv2.cvtColor(arr, cv2.COLOR_BGR2RGB) if rgb else arr
    im = _open_image(path, what)
    return im, np.asarray(im.convert("RGB") if rgb and im.mode != "RGB" else im)


def _label_array(im: Image.Image, arr: np.ndarray, path: Path) -> np.ndarray:
    """A single-channel label image as uint8; rejects colour and non-integer labels."""
    if len(im.getbands()) != 1 or im.mode == "F":
        raise DataError(f"label PNG must be single-channel integer, got mode {im.mode}: {path}")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"label values outside 0..255 (max {int(arr.max())}) in {path}")
        arr = arr.astype(np.uint8)
    return arr


class PairedDataset(Dataset):
    """Image/label pairs found on disk; subclasses find them and map label values.

    Items are ``transform(image, label)``; with the default ``eval_transform()`` that is
    (float32 CHW normalised image, int64 HxW trainIds with 255 = ignore).
    """

    kind = "dataset"

    def __init__(self, root: Path | str, split: str, transform: Callable | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform if transform is not None else eval_transform()
        if not self.root.is_dir():
            raise DataError(f"{self.kind} folder not found: {self.root}")
        self.samples: list[tuple[Path, Path]] = self._scan()

    def _scan(self) -> list[tuple[Path, Path]]:
        raise NotImplementedError

    def _to_train_ids(self, raw: np.ndarray, path: Path) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 HxWx3, trainIds uint8 HxW) of one sample, checked, not transformed.

        A ``DataError`` raised in a DataLoader worker reaches the caller as it was raised.
        """
        with toolkit_errors_leave_workers():
            image_path, label_path = self.samples[index]
            label = _open_image(label_path, "label", decode=False)
            if label.format != "PNG":  # lossy formats change label values at the edges
                raise DataError(f"label is not a PNG ({label.format} data): {label_path}")
            image, rgb = _decode(image_path, "image", rgb=True)
            if image.size != label.size:
                raise DataError(
                    f"image is {image.size[0]}x{image.size[1]} but its label is "
                    f"{label.size[0]}x{label.size[1]}: {label_path}"
                )
            label, raw = _decode(label_path, "label", rgb=False)
            raw = _label_array(label, raw, label_path)
            return rgb, self._to_train_ids(raw, label_path)

    def __getitem__(self, index: int):
        image, label = self.read(index)
        return self.transform(image, label)

    def verify(self, progress: bool = False, threads: int | None = None) -> int:
        """Decode and check every sample; returns how many were checked.

        Samples are read by ``threads`` threads (default: up to 8; PIL decodes without the
        GIL); the error reported is that of the first bad sample in order.
        """
        n = len(self)
        if threads is None:
            threads = min(8, usable_cpus()) if n >= 32 else 1
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n, desc=f"check {self.split}", unit="img", leave=False)

        def check(index: int) -> None:
            self.read(index)

        try:
            if threads <= 1:
                for index in range(n):
                    check(index)
                    if bar is not None:
                        bar.update(1)
            else:
                pool = ThreadPoolExecutor(threads)
                try:
                    for _ in pool.map(check, range(n)):
                        if bar is not None:
                            bar.update(1)
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if bar is not None:
                bar.close()
        return n

    def fingerprint(self) -> str:
        """A hash of what the checks depend on: the checks' version, this class and its
        classes, and every sample's paths, sizes and modification times."""
        h = hashlib.sha256()
        head = [CHECK_VERSION, type(self).__name__, str(self.root.resolve()), self.split]
        h.update(json.dumps([*head, list(getattr(self, "class_names", ()))]).encode())
        for pair in self.samples:
            for path in pair:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    raise DataError(f"file disappeared: {path}") from None
                rel = path.relative_to(self.root).as_posix()
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
        return h.hexdigest()

    def _pair(
        self,
        images: dict[str, Path],
        labels: dict[str, Path],
        expected_label: Callable[[Path], Path],
        expected_image: Callable[[Path], Path],
        where: Path,
    ) -> list[tuple[Path, Path]]:
        if not images:
            raise DataError(f"no images found in {where}")
        for key, path in sorted(images.items()):
            if key not in labels:
                raise DataError(f"image has no label (expected {expected_label(path)}): {path}")
        for key, path in sorted(labels.items()):
            if key not in images:
                raise DataError(f"label has no image (expected {expected_image(path)}): {path}")
        return [(images[key], labels[key]) for key in sorted(images)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {self.split!r}, {len(self)} samples)"


class CityscapesDataset(PairedDataset):
    """Cityscapes in its official layout; labelIds are mapped to the 19 trainIds (255 = ignore).

    ``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` pairs with
    ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``. The built-in synthetic scenes use
    the same layout and ids, so this class reads them too.
    """

    kind = "Cityscapes"
    num_classes = NUM_CLASSES
    class_names = CLASS_NAMES
    _IMG = "_leftImg8bit.png"
    _GT = "_gtFine_labelIds.png"

    def _scan(self) -> list[tuple[Path, Path]]:
        img_dir = self.root / "leftImg8bit" / self.split
        gt_dir = self.root / "gtFine" / self.split
        for folder in (img_dir, gt_dir):
            if not folder.is_dir():
                raise DataError(f"Cityscapes split folder not found: {folder}")
        images = {
            f"{p.parent.name}/{p.name[: -len(self._IMG)]}": p
            for p in img_dir.glob(f"*/*{self._IMG}")
        }
        labels = {
            f"{p.parent.name}/{p.name[: -len(self._GT)]}": p for p in gt_dir.glob(f"*/*{self._GT}")
        }
        if not images:
            raise DataError(f"no *{self._IMG} images found in {img_dir}/<city>/")
        return self._pair(
            images,
            labels,
            lambda p: gt_dir / p.parent.name / (p.name[: -len(self._IMG)] + self._GT),
            lambda p: img_dir / p.parent.name / (p.name[: -len(self._GT)] + self._IMG),
            img_dir,
        )

    def _to_train_ids(self, raw: np.ndarray, path: Path) -> np.ndarray:
        # a 256-bin histogram and a lookup table: one pass each, about 1 ms apiece on a
        # 2048x1024 label (numpy's fancy indexing took 6-7 ms for each)
        present = cv2.calcHist([raw], [0], None, [256], [0, 256]).ravel() > 0
        if (present & ~VALID_LABEL_MASK).any():
            bad = np.flatnonzero(present & ~VALID_LABEL_MASK)[:5].tolist()
            raise DataError(f"label ids {bad} are not Cityscapes labelIds: {path}")
        return cv2.LUT(raw, LABEL_TO_TRAIN)


class FolderDataset(PairedDataset):
    """A generic layout: ``images/{split}/*.png|jpg``, ``labels/{split}/<stem>.png`` holding
    trainIds directly (255 = ignore), and ``classes.txt`` with one class name per line."""

    kind = "folder dataset"

    def __init__(self, root: Path | str, split: str, transform: Callable | None = None) -> None:
        self.class_names = read_class_names(Path(root))
        self.num_classes = len(self.class_names)
        super().__init__(root, split, transform)

    def _scan(self) -> list[tuple[Path, Path]]:
        img_dir = self.root / "images" / self.split
        lab_dir = self.root / "labels" / self.split
        for folder in (img_dir, lab_dir):
            if not folder.is_dir():
                raise DataError(f"folder dataset split folder not found: {folder}")
        images: dict[str, Path] = {}
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                if p.stem in images:
                    raise DataError(
                        f"two images share the name {p.stem!r}: {images[p.stem]} and {p}"
                    )
                images[p.stem] = p
        labels = {p.stem: p for p in lab_dir.glob("*.png") if p.is_file()}
        return self._pair(
            images,
            labels,
            lambda p: lab_dir / f"{p.stem}.png",
            lambda p: img_dir / f"{p.stem}.png|.jpg",
            img_dir,
        )

    def _to_train_ids(self, raw: np.ndarray, path: Path) -> np.ndarray:
        bad = (raw >= self.num_classes) & (raw != IGNORE_INDEX)
        if bad.any():
            values = np.unique(raw[bad])[:5].tolist()
            raise DataError(
                f"label values {values} are not class ids 0..{self.num_classes - 1} or {IGNORE_INDEX}: {path}"
            )
        return raw


def check_split(dataset: PairedDataset, force: bool = False, progress: bool | None = None) -> int:
    """Verify every sample of ``dataset`` once per version of its files; returns the count.

    The verdict (ok, or the first problem found) is remembered in the cache folder under the
    dataset's ``fingerprint()``, so a large dataset is decoded once, not at every run, and
    is checked again when a file is added, removed or changed (or with ``force``). A bad
    dataset raises ``DataError`` with the same one line every time.
    """
    identity = f"{type(dataset).__name__}|{dataset.root.resolve()}|{dataset.split}"
    fingerprint = dataset.fingerprint()
    if not force:
        verdict = load_verdict(identity, fingerprint)
        if verdict is not None:
            if verdict.get("ok") is True and verdict.get("images") == len(dataset):
                return len(dataset)
            if verdict.get("ok") is False and verdict.get("error"):
                raise DataError(str(verdict["error"]))
    if progress is None:
        progress = sys.stderr.isatty()
    start = time.perf_counter()
    common = {"root": str(dataset.root), "split": dataset.split, "kind": dataset.kind}
    try:
        n = dataset.verify(progress=progress)
    except DataError as exc:
        save_verdict(identity, fingerprint, {**common, "ok": False, "error": one_line(exc)})
        raise
    seconds = round(time.perf_counter() - start, 3)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    verdict = {**common, "ok": True, "images": n, "check_s": seconds, "checked_at": stamp}
    save_verdict(identity, fingerprint, verdict)
    return n
