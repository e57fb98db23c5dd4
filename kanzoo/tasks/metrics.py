"""Metrics and losses: top-k accuracy, confusion-matrix IoU and Dice, Dice + cross-entropy loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many targets are among the ``k`` largest logits, for each ``k`` (capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top.eq(targets.view(-1, 1))
    return [int(hits[:, :min(k, logits.shape[1])].any(dim=1).sum()) for k in ks]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` counts with rows = true class, columns = predicted class, over every pixel."""
    index = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_dice(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class IoU ``TP / (TP + FP + FN)`` and Dice ``2TP / (2TP + FP + FN)``; NaN for absent classes."""
    confusion = confusion.double()
    tp = confusion.diag()
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    union = tp + fp + fn
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    dice = torch.where(union > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), nan)
    return iou, dice


class DiceCELoss(nn.Module):
    """Cross-entropy plus soft multi-class Dice loss (``1 - mean Dice`` over classes) on logits (N, K, H, W)."""

    def __init__(self, dice_weight: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, target)
        probs = logits.softmax(dim=1)
        one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
        dims = (0, 2, 3)
        intersection = (probs * one_hot).sum(dims)
        total = probs.sum(dims) + one_hot.sum(dims)
        dice = (2 * intersection + self.smooth) / (total + self.smooth)
        return ce + self.dice_weight * (1 - dice.mean())
