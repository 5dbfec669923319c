"""Evaluation: mIoU from a confusion matrix, the paper's protocol, folder scoring, baselines."""

from __future__ import annotations

from runners.evaluation.metrics import EvalResult, confusion_matrix, iou_per_class, mean_iou
from runners.evaluation.predict import evaluate, predict

__all__ = ["EvalResult", "confusion_matrix", "evaluate", "iou_per_class", "mean_iou", "predict"]
