"""``evaluate``: top-1/top-5 for classifiers, mIoU and Dice for segmentation models."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from . import checks
from .classification import evaluate_classifier
from .modeling import is_segmentation
from .predict import load_for_inference
from .segmentation import evaluate_segmenter
from .train import TrainSettings


def evaluate(model: str | nn.Module, data: str | Path, *, batch_size: int = 32, img_size: int | None = None,
             workers: int | None = None, amp: bool = False, device: str | None = None,
             progress: bool | None = None) -> dict[str, float]:
    """Evaluate a model (name with weights, ``hf-hub:`` id, hub-ready folder or module) on ``data``."""
    TrainSettings(batch_size=batch_size, workers=workers, amp=amp, device=device, progress=progress).check()
    checks.image_size(img_size)
    checks.text("--data", str(data))
    net = load_for_inference(model)
    run = evaluate_segmenter if is_segmentation(net) else evaluate_classifier
    return run(net, data, batch_size=batch_size, img_size=img_size, workers=workers, amp=amp, device=device,
               progress=progress)
