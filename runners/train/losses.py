"""Segmentation losses: cross-entropy, OHEM cross-entropy, and the booster-weighted sum."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from runners.data.labels import IGNORE_INDEX


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh: float = 0.7,
    min_kept_frac: float = 1 / 16,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Cross-entropy over the hard pixels only (online hard example mining, as in BiSeNet).

    A pixel is hard when the probability of its true class is below ``thresh`` (its loss
    above ``-log(thresh)``). At least ``min_kept_frac`` of the labelled pixels are kept, the
    hardest ones, so a nearly solved batch still gives a gradient.
    """
    pixel_loss = F.cross_entropy(
        logits, target, ignore_index=ignore_index, reduction="none"
    ).reshape(-1)
    labelled = target.reshape(-1) != ignore_index
    losses = pixel_loss[labelled]
    if losses.numel() == 0:
        return pixel_loss.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) intact
    n_min = max(1, int(min_kept_frac * losses.numel()))
    hard = losses[losses > -math.log(thresh)]
    if hard.numel() >= n_min:
        return hard.mean()
    return torch.topk(losses, n_min, sorted=False).values.mean()


def segmentation_loss(
    outputs: torch.Tensor | tuple[torch.Tensor, ...],
    target: torch.Tensor,
    kind: str = "ce",
    booster_weight: float = 1.0,
    ohem_thresh: float = 0.7,
    ohem_min_kept_frac: float = 1 / 16,
) -> torch.Tensor:
    """Main loss plus ``booster_weight`` times each booster head's loss (V2 paper, Sec. 4.1).

    Logits are cast to float32 first, so an AMP forward pass still gets a float32 loss.
    """
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)

    def one(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if kind == "ohem":
            return ohem_cross_entropy(logits, target, ohem_thresh, ohem_min_kept_frac)
        if kind == "ce":
            if not bool((target != IGNORE_INDEX).any()):
                return logits.sum() * 0.0
            return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
        raise ValueError(f"unknown loss {kind!r}")

    main, *boosters = outputs
    total = one(main)
    for aux in boosters:
        total = total + booster_weight * one(aux)
    return total
