"""Score a folder of labelId prediction PNGs against a gtFine folder, like the official script.

Predictions are matched to ground truth by the ``city_seq_frame`` part of their names (as
cityscapesscripts' ``evalPixelLevelSemanticLabeling`` does), so any of its layouts works.
Both sides are mapped from labelIds to trainIds. A predicted labelId that is not one of the
19 classes (e.g. 0, "unlabeled") on a labelled pixel is a miss for the true class and a hit
for nothing, which is what the official script counts; it goes to an extra "void" column.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from runners.data.labels import CLASS_NAMES, IGNORE_INDEX, LABEL_TO_TRAIN, NUM_CLASSES
from runners.evaluate.metrics import EvalResult
from searchspace.errors import DataError, one_line

GT_SUFFIX = "_gtFine_labelIds.png"
_KEY = re.compile(r"^([^_]+_\d+_\d+)")


def _key(name: str) -> str | None:
    match = _KEY.match(name)
    return match.group(1) if match else None


def _read_label_ids(path: Path, what: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if len(im.getbands()) != 1:
                raise DataError(
                    f"{what} must be a single-channel labelIds PNG, got {im.mode}: {path}"
                )
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode {what} {path}: {one_line(exc)}") from None
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"{what} values outside 0..255: {path}")
        arr = arr.astype(np.uint8)
    return arr


def find_pairs(pred_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    """(prediction, ground truth) for every ``*_gtFine_labelIds.png`` under ``gt_dir``."""
    for folder, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not folder.is_dir():
            raise DataError(f"{what} folder not found: {folder}")
    gts = sorted(gt_dir.rglob(f"*{GT_SUFFIX}"))
    if not gts:
        raise DataError(f"no *{GT_SUFFIX} files found in {gt_dir}")
    preds: dict[str, Path] = {}
    for path in sorted(pred_dir.rglob("*.png")):
        key = _key(path.name)
        if key is None:
            continue
        if key in preds:
            raise DataError(f"two predictions for {key}: {preds[key]} and {path}")
        preds[key] = path
    pairs = []
    for gt in gts:
        key = _key(gt.name)
        if key is None or key not in preds:
            raise DataError(
                f"no prediction for {gt} (expected a PNG named {key}*.png in {pred_dir})"
            )
        pairs.append((preds[key], gt))
    return pairs


def score_folder(pred_dir: Path | str, gt_dir: Path | str) -> EvalResult:
    """mIoU of labelId prediction PNGs against Cityscapes gtFine labelIds PNGs."""
    start = time.perf_counter()
    pairs = find_pairs(Path(pred_dir), Path(gt_dir))
    c = NUM_CLASSES
    counts = np.zeros(c * (c + 1), dtype=np.int64)
    for pred_path, gt_path in pairs:
        gt = LABEL_TO_TRAIN[_read_label_ids(gt_path, "ground truth")]
        pred = LABEL_TO_TRAIN[_read_label_ids(pred_path, "prediction")]
        if pred.shape != gt.shape:
            raise DataError(
                f"prediction is {pred.shape[1]}x{pred.shape[0]} but its ground truth is "
                f"{gt.shape[1]}x{gt.shape[0]}: {pred_path}"
            )
        keep = gt != IGNORE_INDEX
        g = gt[keep].astype(np.int64)
        p = pred[keep].astype(np.int64)
        p[p == IGNORE_INDEX] = c  # a void prediction: the extra column
        counts += np.bincount(g * (c + 1) + p, minlength=c * (c + 1))
    conf = torch.from_numpy(counts.reshape(c, c + 1))
    return EvalResult.from_confusion(
        conf, len(pairs), CLASS_NAMES, seconds=time.perf_counter() - start
    )
