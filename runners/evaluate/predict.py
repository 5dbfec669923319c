"""The paper's evaluation protocol on a model: resize in, predict, resize back, argmax.

The V2 paper resizes the 2048x1024 image to a 1024x512 network input, resizes the
prediction back and scores it at full resolution (no multi-scale, no sliding window).
``input_hw`` is that network input; multi-scale and flip are optional extras that average
softmax probabilities, as common reimplementations do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from runners.data.labels import train_to_label
from runners.data.source import DataSource
from runners.data.transforms import eval_transform
from runners.device import autocast, resolve_device
from runners.evaluate.metrics import (
    EvalResult,
    PerImage,
    confusion_matrix,
    image_id,
    intersection_union,
)
from searchspace.errors import DataError, UsageError
from searchspace.outputs import make_output_dir, output_file


def scaled_hw(hw: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


@torch.inference_mode()
def predict(
    model: nn.Module,
    image: torch.Tensor,
    out_hw: tuple[int, int],
    input_hw: tuple[int, int] | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    amp: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """Class map (N, H, W) at ``out_hw`` for normalised images (N, 3, h, w); model in eval mode.

    One pass: argmax of the logits resized back (bilinear). Several passes (scales, flip):
    argmax of the mean softmax, so no single pass dominates by its logit scale.
    """
    base_hw = input_hw or (int(image.shape[-2]), int(image.shape[-1]))
    passes = len(scales) * (2 if flip else 1)
    total: torch.Tensor | None = None
    for scale in scales:
        x = image
        size = scaled_hw(base_hw, scale)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for flipped in (False, True) if flip else (False,):
            with autocast(image.device, amp):
                logits = model(x.flip(-1) if flipped else x)
            logits = logits.float()
            if flipped:
                logits = logits.flip(-1)
            if tuple(logits.shape[-2:]) != tuple(out_hw):
                logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
            if passes == 1:
                return logits.argmax(1)
            probs = logits.softmax(1)
            total = probs if total is None else total.add_(probs)
    assert total is not None
    return total.argmax(1)


def prediction_path(out_dir: Path, image_path: Path, cityscapes_layout: bool) -> Path:
    """Where a saved prediction goes: ``<city>/<stem>_leftImg8bit.png`` as in Cityscapes
    (the official script finds predictions by the ``city_seq_frame`` part of the name)."""
    if cityscapes_layout:
        return out_dir / image_path.parent.name / image_path.name
    return out_dir / f"{image_path.stem}.png"


def _samples(dataset: Dataset, max_images: int | None) -> Dataset:
    if max_images is None or max_images >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, range(max_images))


def _batches(
    dataset: Dataset, workers: int, pin: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    # batch 1: label sizes may differ between images, and the paper times batch 1 too
    yield from DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers, pin_memory=pin)


def evaluate(
    model: nn.Module,
    data_source: DataSource,
    split: str = "val",
    input_hw: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    max_images: int | None = None,
    save_predictions: Path | str | None = None,
    workers: int = 0,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = False,
    per_image: bool = True,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> EvalResult:
    """Score ``model`` on a split: one confusion matrix over all images at label resolution.

    ``per_image`` also keeps each image's per-class intersection and union counts
    (``EvalResult.per_image``; benchmarks/eval_bench.py measures what that costs).

    ``input_hw`` is the network input (None: each image's own size). With
    ``save_predictions`` each prediction is also written as a PNG of Cityscapes labelIds
    (trainIds for folder datasets) named after its image. ``normalize`` is the (mean, std)
    the weights were trained with (a recipe's ``input_mean``/``input_std``; None: ImageNet).
    """
    if max_images is not None and max_images < 1:
        raise UsageError(f"max_images={max_images}: must be >= 1")
    if not scales or min(scales) <= 0:
        raise UsageError(f"scales={tuple(scales)}: need positive scales")
    dev = resolve_device(device)
    transform = eval_transform(*normalize) if normalize is not None else None
    dataset = data_source.dataset(split, transform=transform)
    image_paths = [p for p, _ in dataset.samples]
    subset = _samples(dataset, max_images)
    n = len(subset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"no images in split {split!r} of {data_source.label}")
    out_dir = Path(save_predictions) if save_predictions is not None else None
    cityscapes_layout = data_source.kind != "folder"

    was_training = model.training
    model.eval()
    conf = torch.zeros(data_source.num_classes, data_source.num_classes, dtype=torch.int64)
    conf = conf.to(dev)
    counts: list[torch.Tensor] = []  # (2, C) per image: intersection, union
    start = time.perf_counter()
    batches = _batches(subset, workers, dev.type == "cuda")
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=n, desc=f"eval {split}", unit="img", leave=False)
    try:
        for i, (image, label) in enumerate(batches):
            image = image.to(dev, non_blocking=True)
            label = label.to(dev, non_blocking=True)
            pred = predict(
                model, image, tuple(label.shape[-2:]), input_hw, scales, flip, amp, channels_last
            )
            image_conf = confusion_matrix(label, pred, data_source.num_classes)
            conf += image_conf
            if per_image:
                counts.append(intersection_union(image_conf))
            if out_dir is not None:
                _save_prediction(
                    pred[0],
                    prediction_path(out_dir, image_paths[i], cityscapes_layout),
                    cityscapes_layout,
                )
    finally:
        model.train(was_training)
    stacked = torch.stack(counts).cpu() if counts else None  # one transfer, not one per image
    return EvalResult.from_confusion(
        conf,
        n,
        data_source.class_names,
        input_hw=input_hw,
        scales=tuple(float(s) for s in scales),
        flip=flip,
        seconds=time.perf_counter() - start,
        per_image=None
        if stacked is None
        else PerImage(
            ids=tuple(image_id(p) for p in image_paths[:n]),
            intersection=stacked[:, 0].tolist(),
            union=stacked[:, 1].tolist(),
        ),
    )


def _save_prediction(pred: torch.Tensor, path: Path, to_label_ids: bool) -> None:
    arr = pred.to("cpu", torch.uint8).numpy()
    if to_label_ids:
        arr = train_to_label(arr)
    make_output_dir(path.parent)
    with output_file(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")
