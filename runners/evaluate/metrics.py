"""Confusion matrix and the scores derived from it (mIoU, per-class IoU, pixel accuracy).

One confusion matrix is accumulated over the whole split and the scores are computed once
at the end (the Cityscapes convention), not averaged per image. Rows are ground truth,
columns are predictions; pixels whose ground truth is the ignore index never count, so a
prediction on an ignored pixel is neither right nor wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from runners.data.labels import CLASS_NAMES, IGNORE_INDEX


def confusion_matrix(
    gt: torch.Tensor | np.ndarray,
    pred: torch.Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """(C, C) int64 counts, rows = ground truth, from one ``bincount`` (fast on CPU and GPU).

    Ground-truth values outside ``[0, C)`` (the ignore index included) are skipped. A
    prediction outside ``[0, C)`` on a labelled pixel is a bug upstream, so it raises.
    """
    gt_t = torch.as_tensor(gt).reshape(-1).long()
    pred_t = torch.as_tensor(pred).reshape(-1).long().to(gt_t.device)
    if gt_t.shape != pred_t.shape:
        raise ValueError(f"gt has {gt_t.numel()} pixels, prediction {pred_t.numel()}")
    keep = (gt_t >= 0) & (gt_t < num_classes) & (gt_t != ignore_index)
    gt_t, pred_t = gt_t[keep], pred_t[keep]
    if pred_t.numel() and (int(pred_t.min()) < 0 or int(pred_t.max()) >= num_classes):
        raise ValueError(f"prediction outside [0, {num_classes}) on a labelled pixel")
    counts = torch.bincount(gt_t * num_classes + pred_t, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def intersection_union(conf: torch.Tensor) -> torch.Tensor:
    """(2, C): per class, the pixels both labelled and predicted as it (the intersection)
    and those labelled or predicted as it (the union). Both add up over images, so the
    mIoU of any subset of images is exact from them (per-image bootstraps need this)."""
    inter = torch.diagonal(conf)
    return torch.stack((inter, conf.sum(1) + conf.sum(0) - inter))


def image_id(path: Path | str) -> str:
    """A val image's id in records: its file name without the Cityscapes suffix."""
    name = Path(path).name
    for suffix in ("_leftImg8bit.png", ".png", ".jpg", ".jpeg"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class PerImage:
    """Per val image and class: intersection and union pixel counts (integers)."""

    ids: tuple[str, ...]
    intersection: list[list[int]]
    union: list[list[int]]

    def to_dict(self) -> dict[str, object]:
        return {"ids": list(self.ids), "intersection": self.intersection, "union": self.union}


def _as_array(conf: torch.Tensor | np.ndarray) -> np.ndarray:
    c = np.asarray(torch.as_tensor(conf).cpu(), dtype=np.float64)
    if c.ndim != 2 or c.shape[1] not in (c.shape[0], c.shape[0] + 1):
        raise ValueError(f"confusion matrix must be (C, C) or (C, C + 1), got {c.shape}")
    return c


def iou_per_class(conf: torch.Tensor | np.ndarray) -> np.ndarray:
    """IoU of each class; NaN where the class is in neither ground truth nor prediction.

    A (C, C + 1) matrix has an extra last column of "void" predictions (a non-class
    prediction on a labelled pixel, possible in scored PNG folders): a miss, never a hit.
    """
    c = _as_array(conf)
    n = c.shape[0]
    tp = np.diag(c[:, :n])
    union = c.sum(1) + c[:, :n].sum(0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(conf: torch.Tensor | np.ndarray) -> float:
    """Mean over the classes whose IoU is defined (absent classes do not count as 0)."""
    ious = iou_per_class(conf)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else math.nan


def pixel_accuracy(conf: torch.Tensor | np.ndarray) -> float:
    """Correct labelled pixels / labelled pixels (ignored pixels are not in the matrix)."""
    c = _as_array(conf)
    total = c.sum()
    return float(np.trace(c[:, : c.shape[0]]) / total) if total > 0 else math.nan


@dataclass
class EvalResult:
    """Scores of one evaluation. ``miou`` and ``pixel_acc`` are fractions in [0, 1]."""

    miou: float
    per_class_iou: dict[str, float]  # by class name; NaN for classes absent from gt and pred
    pixel_acc: float
    # (C, C) int64, rows = ground truth; (C, C + 1) with a "void prediction" column when
    # scoring PNG folders
    confusion: np.ndarray = field(repr=False)
    n_images: int
    input_hw: tuple[int, int] | None = None  # network input; None: each image's own size
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    seconds: float = 0.0
    per_image: PerImage | None = field(default=None, repr=False)

    @classmethod
    def from_confusion(
        cls,
        conf: torch.Tensor | np.ndarray,
        n_images: int,
        class_names: tuple[str, ...] | None = None,
        **extra: object,
    ) -> EvalResult:
        c = np.asarray(torch.as_tensor(conf).cpu(), dtype=np.int64)
        names = class_names or _class_names(c.shape[0])
        ious = iou_per_class(c)
        return cls(
            miou=mean_iou(c),
            per_class_iou={n: float(v) for n, v in zip(names, ious)},
            pixel_acc=pixel_accuracy(c),
            confusion=c,
            n_images=n_images,
            **extra,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-able form (NaN becomes None, since JSON has no NaN)."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {
            "miou": clean(self.miou),
            "per_class_iou": {k: clean(v) for k, v in self.per_class_iou.items()},
            "pixel_acc": clean(self.pixel_acc),
            "confusion": self.confusion.tolist(),
            "n_images": self.n_images,
            "input_hw": list(self.input_hw) if self.input_hw else None,
            "scales": list(self.scales),
            "flip": self.flip,
            "seconds": self.seconds,
            "per_image": self.per_image.to_dict() if self.per_image else None,
        }

    def summary(self) -> str:
        """A few lines for a terminal: mIoU, pixel accuracy and the per-class IoUs."""
        lines = [
            f"mIoU {100 * self.miou:.2f}  pixel acc {100 * self.pixel_acc:.2f}  "
            f"({self.n_images} images)"
        ]
        width = max(len(n) for n in self.per_class_iou)
        for name, iou in self.per_class_iou.items():
            shown = "   n/a" if math.isnan(iou) else f"{100 * iou:6.2f}"
            lines.append(f"  {name:<{width}} {shown}")
        return "\n".join(lines)


def _class_names(num_classes: int) -> tuple[str, ...]:
    if num_classes == len(CLASS_NAMES):
        return CLASS_NAMES
    return tuple(f"class_{i}" for i in range(num_classes))
