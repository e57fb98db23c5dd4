"""Prediction on image files: top-k classes with names, or class-index masks saved as PNG."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import resolve_data_config
from torch import nn

from .classification import data_config, transforms
from .data import DECODE_ERRORS, SegmentationDataset, load_rgb
from . import checks
from .errors import TaskError
from .modeling import (check_model_name, create_task_model, has_pretrained, is_folder_source, is_segmentation,
                       label_names)
from .runs import atomic_write
from .segmentation import input_size, mask_image, predict_mask


@dataclass
class Prediction:
    """The result for one image: ``top`` (label, probability) pairs, or the saved ``mask``, or an ``error``."""

    image: str
    top: list[tuple[str, float]] = field(default_factory=list)
    mask: Path | None = None
    error: str | None = None


def load_for_inference(source: str | nn.Module) -> nn.Module:
    """A model ready for inference from a name with weights, an ``hf-hub:`` id, a hub-ready folder or a module."""
    if isinstance(source, nn.Module):
        return source.eval()
    if not (source.startswith("hf-hub:") or is_folder_source(source) or has_pretrained(source)):
        check_model_name(source)
        raise TaskError(f"{source} has no pretrained weights, so its predictions would be random; pass a "
                        "tagged name with weights, an hf-hub: id or a folder written by finetune/segment")
    return create_task_model(source).eval()


def predict(model: str | nn.Module, images: Sequence[str | Path], *, top_k: int = 5, out_dir: str | Path = "predictions",
            img_size: int | None = None, device: str | None = None) -> list[Prediction]:
    """Classify ``images`` (top-k with class names) or segment them (masks saved as ``out_dir/<stem>.png``).

    Unreadable images get a :class:`Prediction` with ``error`` set; the others are still predicted. Two images
    whose masks would have the same name (``a/x.png`` and ``b/x.jpg``) are refused before anything is predicted.
    """
    if not images:
        raise TaskError("no image files given; pass at least one")
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise TaskError(f"image files not found: {', '.join(missing[:5])}; check the paths")
    checks.at_least("--top-k", top_k, 1)
    checks.image_size(img_size)
    checks.device(device)
    checks.text("--out", str(out_dir))
    net = load_for_inference(model)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net.to(target)
    if is_segmentation(net):
        predict_one = _segmenter(net, _mask_targets(images, Path(out_dir)), img_size, target)
    else:
        predict_one = _classifier(net, top_k, img_size, target)
    results = []
    for path in images:
        try:
            image = load_rgb(path)
        except DECODE_ERRORS as err:
            results.append(Prediction(str(path), error=f"unreadable image ({type(err).__name__}: {err})"))
            continue
        results.append(predict_one(str(path), image))
    return results


def _classifier(model: nn.Module, top_k: int, img_size: int | None,
                device: torch.device) -> Callable[[str, Image.Image], Prediction]:
    _, transform = transforms(data_config(model, img_size))
    names = label_names(model) or [str(i) for i in range(model.num_classes)]

    def classify(path: str, image: Image.Image) -> Prediction:
        with torch.no_grad():
            probs = model(transform(image).unsqueeze(0).to(device)).float().softmax(dim=1)[0]
        values, indices = probs.topk(min(top_k, probs.numel()))
        return Prediction(path, top=[(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())])
    return classify


def _mask_targets(images: Sequence[str | Path], out_dir: Path) -> dict[str, Path]:
    """``out_dir/<stem>.png`` for each image; an error when ``out_dir`` is a file or two images would share a mask."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TaskError(f"--out {out_dir} is a file; pass a folder for the masks")
    targets: dict[str, Path] = {}
    claimed: dict[Path, str] = {}
    for image in map(str, images):
        target = out_dir / f"{Path(image).stem}.png"
        other = claimed.setdefault(target, image)
        if other != image and Path(other).resolve() != Path(image).resolve():
            raise TaskError(f"{other} and {image} would both write their mask to {target}; rename one, or predict "
                            "them in separate runs with different --out folders")
        targets[image] = target
    return targets


def _segmenter(model: nn.Module, targets: dict[str, Path], img_size: int | None,
               device: torch.device) -> Callable[[str, Image.Image], Prediction]:
    size = input_size(model, img_size)
    cfg = resolve_data_config(model=model)
    prepare = SegmentationDataset([], size, cfg["mean"], cfg["std"])

    def segment(path: str, image: Image.Image) -> Prediction:
        mask = predict_mask(model, prepare.image_tensor(image), device)
        full = np.asarray(Image.fromarray(mask).resize(image.size, Image.NEAREST))
        target = targets[path]
        target.parent.mkdir(parents=True, exist_ok=True)
        png = mask_image(full, model.num_classes)
        atomic_write(target, lambda tmp: png.save(tmp, format="PNG"))
        return Prediction(path, mask=target)
    return segment
