"""Baselines a trained model must beat to show it learned anything beyond class frequencies."""

from __future__ import annotations

import time

import numpy as np
import torch

from runners.data.labels import IGNORE_INDEX
from runners.data.source import DataSource
from runners.evaluate.metrics import EvalResult
from searchspace.errors import DataError


def class_pixel_counts(
    data_source: DataSource, split: str = "train", max_images: int | None = None
) -> np.ndarray:
    """Labelled pixels per class over a split (ignored pixels excluded)."""
    dataset = data_source.dataset(split)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    if n == 0:
        raise DataError(f"no images in split {split!r} of {data_source.label}")
    counts = np.zeros(256, dtype=np.int64)
    for i in range(n):
        _, label = dataset.read(i)
        counts += np.bincount(label.ravel(), minlength=256)
    counts[IGNORE_INDEX] = 0
    return counts[: data_source.num_classes]


def majority_class_baseline(
    data_source: DataSource,
    split: str = "val",
    train_split: str = "train",
    max_images: int | None = None,
) -> EvalResult:
    """Predict the most frequent training class at every pixel and score it on ``split``.

    Its mIoU is (that class's IoU) / (number of classes present): the floor any model
    must clear by a wide margin before its mIoU says anything.
    """
    start = time.perf_counter()
    majority = int(np.argmax(class_pixel_counts(data_source, train_split)))
    gt_counts = class_pixel_counts(data_source, split, max_images)
    c = data_source.num_classes
    conf = np.zeros((c, c), dtype=np.int64)
    conf[:, majority] = gt_counts
    dataset = data_source.dataset(split)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    result = EvalResult.from_confusion(
        torch.from_numpy(conf), n, data_source.class_names, seconds=time.perf_counter() - start
    )
    return result
