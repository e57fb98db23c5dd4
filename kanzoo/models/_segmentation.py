"""The base class of kanzoo's segmentation models (UKANet, U2KANet): input checks, prediction, encoder freezing."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

__all__ = ["KANSegmentationModel", "check_input_size"]


def check_input_size(x: torch.Tensor, multiple: int, name: str) -> None:
    """Raise a ``ValueError`` naming the multiple when H or W of ``x`` is not a multiple of ``multiple``."""
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        fit_h, fit_w = (math.ceil(s / multiple) * multiple for s in (height, width))
        raise ValueError(f"{name} needs input height and width that are multiples of {multiple} (its output "
                         f"stride), got {height}x{width}; pad or resize the input, e.g. to {fit_h}x{fit_w}")


class KANSegmentationModel(nn.Module):
    """A model mapping images ``(N, in_chans, H, W)`` to per-pixel logits ``(N, num_classes, H, W)``.

    A subclass sets ``output_stride`` (H and W must be multiples of it) and ``encoder`` (the module that
    downsamples the image), and starts its ``forward`` with :meth:`check_input`.
    """

    is_segmentation: ClassVar[bool] = True
    """Kept for code that reads this flag; ``isinstance(model, KANSegmentationModel)`` is the check to use."""
    output_stride: int
    encoder: nn.Module

    def __init__(self, num_classes: int, in_chans: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 for a segmentation model, got {num_classes}")
        self.num_classes = num_classes
        self.in_chans = in_chans

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` naming ``output_stride`` and a size that fits when H or W is not a multiple of it."""
        check_input_size(x, self.output_stride, type(self).__name__)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class-index masks ``(N, H, W)`` (int64) of a batch, without gradients, in the model's current mode.

        Several classes: the argmax over the logits. One logit channel (binary): 1 where the logit is
        positive (probability above 0.5), else 0, the indices of a two-class mask. Call ``eval()`` first
        for inference.
        """
        logits = self(x)
        if logits.shape[1] == 1:
            return (logits[:, 0] > 0).long()
        return logits.argmax(1)

    def freeze_encoder(self, freeze: bool = True) -> None:
        """Stop (``freeze=True``) or resume (``freeze=False``) gradients of every encoder parameter.

        Only ``requires_grad`` changes: in training mode the encoder's norm layers still update their
        running statistics (call ``model.encoder.eval()`` to keep them too).
        """
        self.encoder.requires_grad_(not freeze)
