"""``inspect``: the learned functions and per-layer statistics of a model's KAN convs on real images.

The images come from the layouts training reads: class folders (``DIR/train`` when ``DIR`` has ``train/`` and
``val/``, else the evaluation folder ``DIR/val`` or ``DIR``) for classifiers, ``images/`` + ``masks/`` for
segmentation models, preprocessed as for evaluation. The report itself is :func:`kanzoo.inspect.inspect_model`'s.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import torch
from timm.data import resolve_data_config
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kanzoo.inspect import LayerAnalysis, inspect_model, kan_layers

from . import checks
from .classification import data_config, transforms
from .data import (ImageDataset, SegmentationDataset, collate_skipping, discover_eval_images, discover_eval_pairs,
                   discover_classification, discover_segmentation)
from .errors import TaskError
from .modeling import is_segmentation
from .predict import load_for_inference
from .segmentation import input_size

REPORT_FILES = ("summary.csv", "report.md", "layers")


def model_input_size(model: nn.Module, img_size: int | None) -> tuple[int, int, int]:
    """``(C, H, W)`` the model is evaluated at: its cfg's size, or ``img_size``."""
    if is_segmentation(model):
        return (3, *input_size(model, img_size))
    return tuple(data_config(model, img_size)["input_size"])


def _sample_dataset(model: nn.Module, data: str | Path, img_size: int | None, prefer_train: bool) -> Dataset:
    """Every image the statistics may use, preprocessed for ``model`` (labels unused)."""
    root = Path(data)
    use_train = prefer_train and (root / "train").is_dir() and (root / "val").is_dir()
    if is_segmentation(model):
        if use_train:
            pairs = discover_segmentation(root, model.num_classes).train
        else:
            pairs = discover_eval_pairs(root, model.num_classes).val
        cfg = resolve_data_config(model=model)
        return SegmentationDataset(pairs, input_size(model, img_size), cfg["mean"], cfg["std"])
    if use_train:
        samples = discover_classification(root).train
    else:
        samples = discover_eval_images(root)[1]
    return ImageDataset([(path, 0) for path, _ in samples], transforms(data_config(model, img_size))[1])


def image_batches(model: nn.Module, data: str | Path, *, samples: int, batch_size: int, img_size: int | None,
                  workers: int | None = None, seed: int = 0, prefer_train: bool = True
                  ) -> tuple[Iterator[torch.Tensor], int]:
    """Batches of up to ``samples`` images drawn at random (seeded) from ``data`` for ``model``, and how many."""
    checks.at_least("--samples", samples, 1)
    checks.at_least("--batch-size", batch_size, 1)
    dataset = _sample_dataset(model, data, img_size, prefer_train)
    chosen = sorted(random.Random(seed).sample(range(len(dataset)), min(samples, len(dataset))))
    subset = torch.utils.data.Subset(dataset, chosen)
    loader = DataLoader(subset, batch_size=batch_size, num_workers=0 if workers is None else workers,
                        collate_fn=collate_skipping)

    def batches() -> Iterator[torch.Tensor]:
        for batch in loader:
            if batch.inputs is not None:
                yield batch.inputs

    return batches(), len(loader)


def check_output_folder(out: Path, names: tuple[str, ...], overwrite: bool, what: str) -> None:
    """Refuse a file, or a folder that already holds ``names``, unless ``overwrite``."""
    checks.output_folder("--out", out)
    existing = [name for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise TaskError(f"{out} already holds {what} ({', '.join(existing)}); pass --overwrite to replace it or "
                        "choose another --out folder")


def check_layers(model: nn.Module, layers: str | None) -> None:
    """A :class:`TaskError` naming the model's KAN convs when ``layers`` matches none of them (or it has none)."""
    everything = [name for name, _ in kan_layers(model)]
    if not everything:
        raise TaskError(f"{type(model).__name__} has no KAN convolutions to inspect")
    if layers is not None and not kan_layers(model, layers):
        shown = ", ".join(everything[:6]) + (" ..." if len(everything) > 6 else "")
        raise TaskError(f"no KAN convolution matches --layers {layers!r} (shell-style wildcards, e.g. 'layer1.*'); "
                        f"the model's are: {shown}")


def inspect(model: str | nn.Module, data: str | Path, out: str | Path, *, samples: int = 64,
            layers: str | None = None, top: int = 16, batch_size: int = 16, img_size: int | None = None,
            workers: int | None = None, seed: int = 0, overwrite: bool = False,
            progress: bool | None = None) -> list[LayerAnalysis]:
    """Write ``out/summary.csv``, one PNG per KAN conv in ``out/layers/`` and ``out/report.md`` for ``model`` (a name
    with weights, ``hf-hub:`` id, hub-ready folder or module) on ``samples`` images of ``data``."""
    out = Path(out)
    check_output_folder(out, REPORT_FILES, overwrite, "an inspection report")
    checks.at_least("--top", top, 1)
    net = load_for_inference(model).cpu()
    check_layers(net, layers)
    batches, total = image_batches(net, data, samples=samples, batch_size=batch_size, img_size=img_size,
                                      workers=workers, seed=seed)
    title = model if isinstance(model, str) else type(model).__name__
    try:
        return inspect_model(net, batches, out, layers=layers, top=top, title=title, total=total, progress=progress)
    except ValueError as err:
        raise TaskError(str(err)) from None
