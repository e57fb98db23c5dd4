"""Training and evaluating segmentation models (UKANet, U2KANet) on image/mask folders."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import resolve_data_config
from torch import nn
from tqdm.auto import tqdm

from kanzoo.models import KANSegmentationModel

from . import checks, distributed
from .data import SegmentationData, SegmentationDataset, discover_eval_pairs
from .errors import TaskError
from .hfdata import HFOptions, HFSegmentationData, segmentation_source
from .metrics import DiceCELoss, confusion_matrix, iou_dice
from .modeling import create_task_model, is_segmentation, is_timm_name, label_names, save_task_model, set_task_cfg
from .recipe import Recipe, check_model, resolve_recipe
from .runs import OVERLAYS, RunFolder, atomic_write
from .train import (FitResult, TaskSpec, TrainSettings, accumulate, check_run_arguments, eval_loader, fit,
                    kan_regularizer, model_args_info, report_best, seed_everything, with_regularization)

SEGMENTATION_SCORES = ("val_miou", "val_dice", "val_pixel_acc")


def palette(num_classes: int) -> np.ndarray:
    """Distinct RGB colours per class index (class 0 black)."""
    rng = np.random.default_rng(12345)
    base = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60)]
    extra = [tuple(rng.integers(40, 256, 3)) for _ in range(max(num_classes - len(base), 0))]
    return np.asarray(base + extra, dtype=np.uint8)[:num_classes]


def mask_image(mask: np.ndarray, num_classes: int) -> Image.Image:
    """A class-index mask as a PNG image whose pixel values are the class indices: a palette image (a colour per
    class; a one-logit binary model's masks hold 0 and 1, so at least two colours) up to 256 classes, else a 16-bit
    grayscale one (PNG holds no larger palette; up to 65536 classes)."""
    if num_classes > 256:
        if num_classes > 65536:
            raise TaskError(f"a PNG mask holds at most 65536 class indices, the model predicts {num_classes}")
        return Image.fromarray(mask.astype(np.uint16))
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(palette(max(num_classes, 2)).reshape(-1).tolist())
    return image


def overlay(image: Image.Image, mask: np.ndarray, num_classes: int, alpha: float = 0.5) -> Image.Image:
    """``image`` with the classes of ``mask`` blended in colour."""
    colours = palette(num_classes)[mask]
    base = np.asarray(image.resize((mask.shape[1], mask.shape[0]), Image.BILINEAR), dtype=np.float32)
    blended = np.where(mask[..., None] > 0, (1 - alpha) * base + alpha * colours, base)
    return Image.fromarray(blended.astype(np.uint8))


def input_size(model: nn.Module, img_size: int | None) -> tuple[int, int]:
    """Training/inference size: ``img_size`` or the model's default, checked against its output stride."""
    stride = int(getattr(model, "output_stride", 1) or 1)
    checks.image_size(img_size)
    if img_size is None:
        height, width = resolve_data_config(model=model)["input_size"][1:]
    else:
        height = width = img_size
    for side in (height, width):
        if side % stride:
            fixed = math.ceil(side / stride) * stride
            raise TaskError(f"image size {side} is not a multiple of the model's output stride {stride}; use "
                            f"--img-size {fixed}")
    return int(height), int(width)


def _seg_step(num_classes: int, loss_fn: nn.Module):
    def step(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = float(loss_fn(logits, targets)) * len(targets)
        confusion = confusion_matrix(logits.argmax(1), targets, num_classes)
        return torch.cat([torch.tensor([loss, float(len(targets))], dtype=torch.double), confusion.double().flatten()])
    return step


def seg_metrics(sums: torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """Loss, mIoU, mean Dice, pixel accuracy and per-class IoU/Dice from accumulated sums."""
    k = len(class_names)
    loss, count = float(sums[0]), float(sums[1])
    confusion = sums[2:].reshape(k, k)
    iou, dice = iou_dice(confusion)
    metrics = {
        "val_loss": loss / count,
        "val_miou": float(iou.nanmean()),
        "val_dice": float(dice.nanmean()),
        "val_pixel_acc": float(confusion.diag().sum() / confusion.sum().clamp(min=1)),
    }
    for name, value in zip(class_names, iou.tolist()):
        metrics[f"iou_{name}"] = value
    for name, value in zip(class_names, dice.tolist()):
        metrics[f"dice_{name}"] = value
    return metrics


def predict_mask(model: KANSegmentationModel, tensor: torch.Tensor, device: torch.device) -> np.ndarray:
    """Class-index mask (H, W) of one normalised image tensor (C, H, W), from ``model.predict`` in eval mode
    (uint8 up to 256 classes, int32 beyond, so that no index wraps)."""
    model.eval()
    mask = model.predict(tensor.unsqueeze(0).to(device))[0].cpu().numpy()
    return mask.astype(np.uint8 if model.num_classes <= 256 else np.int32)


def _write_overlays(model: nn.Module, dataset: SegmentationDataset, count: int, num_classes: int,
                    run: RunFolder, device: torch.device) -> None:
    folder = run.path / OVERLAYS
    folder.mkdir(exist_ok=True)
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        if not isinstance(sample, tuple):
            continue
        tensor, truth = sample
        predicted = predict_mask(model, tensor, device)
        image = dataset.read_pair(index)[0].resize((truth.shape[1], truth.shape[0]), Image.BILINEAR)
        panels = [image, overlay(image, truth, num_classes), overlay(image, predicted, num_classes)]
        sheet = Image.new("RGB", (3 * truth.shape[1], truth.shape[0]))
        for i, panel in enumerate(panels):
            sheet.paste(panel, (i * truth.shape[1], 0))
        name = Path(dataset.sample_name(index)).stem
        atomic_write(folder / f"{name}.png", lambda tmp: sheet.save(tmp, format="PNG"))


def segment(model: str, data: str | Path, out: str | Path, *, epochs: int = 20, batch_size: int = 8,
            lr: float = 1e-3, weight_decay: float = 1e-4, img_size: int | None = None,
            num_classes: int | None = None, class_names: Sequence[str] | None = None,
            pretrained: bool | None = None, pretrained_encoder: bool | None = None, amp: bool = False,
            workers: int | None = None, seed: int = 0, resume: bool = False, overwrite: bool = False,
            val_split: float | None = None, push_to_hub: str | None = None, overlays: int = 4,
            device: str | None = None, progress: bool | None = None,
            model_kwargs: dict[str, Any] | None = None, kan_l1: float | None = None,
            kan_entropy: float | None = None, recipe: Recipe | None = None, hf: HFOptions | None = None) -> FitResult:
    """Train a segmentation model on ``images/`` + ``masks/`` folders or a Hugging Face data set (``hf:NAME_OR_PATH``,
    read as ``hf`` says) with Dice + cross-entropy loss and the switches of ``recipe`` (not the
    classification-only ``mixup``, ``cutmix``, ``label_smoothing``).

    Writes ``metrics.csv`` (``val_miou``, ``val_dice``, per-class IoU and Dice), ``curves.png``, overlay
    PNGs of a few validation images in ``overlays/`` (image | truth | prediction), the best model as a
    hub-ready folder ``best/`` and the resumable ``last.pt``. ``pretrained_encoder`` (models with a classification
    encoder, e.g. UKANet): None starts the encoder from its pretrained weights when they exist and fit the model
    arguments, True always, False never. ``kan_l1`` and ``kan_entropy``: the KAN sparsity regularisation, as for
    ``finetune``.
    """
    if is_timm_name(model):
        raise TaskError(f"{model} is a classifier; use `kanzoo finetune` for it, or a U-Net on it here: --model "
                        f"ukanet --model-arg encoder={model if model.startswith('kanify:') else 'kanify:' + model}")
    settings = TrainSettings(epochs, batch_size, lr, weight_decay, workers, seed, amp, device, progress,
                             recipe or Recipe())
    settings.check()
    check_run_arguments(data, out, img_size, val_split, push_to_hub)
    if num_classes is not None:
        checks.at_least("--num-classes", num_classes, 1)
    checks.at_least("--overlays", overlays, 0)
    if class_names is not None and (not all(isinstance(n, str) and n.strip() for n in class_names)
                                    or len(set(class_names)) != len(class_names)):
        raise TaskError(f"--class-names must be distinct, non-empty names, one per class, got {list(class_names)}")
    run = RunFolder(out, resume=resume, overwrite=overwrite)
    settings.recipe = resolve_recipe(settings.recipe, run, "segment")
    found = segmentation_source(data, num_classes, val_split, seed, hf)
    names = _class_names(class_names, found)
    info = distributed.setup(device)
    try:
        seed_everything(seed)
        net = create_task_model(model, pretrained=False if resume else pretrained,
                                pretrained_encoder=False if resume else pretrained_encoder,
                                num_classes=found.num_classes, **(model_kwargs or {}))
        if not is_segmentation(net):
            raise TaskError(f"{model} is a classifier; use `kanzoo finetune` for it, or a segmentation model "
                            "such as ukanet_18 or u2kanet_small here")
        regularizer, kan_l1, kan_entropy = kan_regularizer(net, kan_l1, kan_entropy, run)
        check_model(settings.recipe, net)
        size = input_size(net, img_size)
        cfg = resolve_data_config(model=net)
        set_task_cfg(net, classes=names, input_size=(3, *size), mean=cfg["mean"], std=cfg["std"])
        if info.is_main:
            for item in found.skipped:
                warnings.warn(f"skipped unreadable image/mask pair {item.path} ({item.reason})", stacklevel=2)
            run.prepare()
            tqdm.write(f"{model}: {found.num_classes} classes, {len(found.train)} training and {len(found.val)} "
                       f"validation pairs at {size[0]}x{size[1]}, {info.world} process(es) on {info.device}")
        distributed.barrier(info)
        train_set, val_set = found.datasets(size, cfg["mean"], cfg["std"])
        loss_fn = DiceCELoss()
        dataset_name = found.name

        def evaluate(net_: nn.Module, loader, info_) -> dict[str, float]:
            sums, skipped = accumulate(net_, loader, info_, settings.amp, _seg_step(found.num_classes, loss_fn),
                                       settings.progress)
            return {**seg_metrics(sums, names), "skipped_images": skipped}

        def save_best(net_: nn.Module, folder: Path, row: dict[str, float]) -> None:
            save_task_model(net_, folder, metrics={"miou": row["val_miou"], "dice": row["val_dice"]},
                            dataset=dataset_name)

        def on_epoch_end(net_: nn.Module, run_: RunFolder) -> None:
            if overlays > 0:
                _write_overlays(net_, val_set, overlays, found.num_classes, run_, info.device)

        per_class = [f"iou_{n}" for n in names] + [f"dice_{n}" for n in names]
        spec = TaskSpec(
            name="segment", loss_fn=loss_fn, evaluate=evaluate, metric="val_miou",
            columns=with_regularization(("epoch", "train_loss", "val_loss", *SEGMENTATION_SCORES, *per_class, "lr",
                                         "epoch_time_s", "skipped_images"), regularizer),
            score_columns=SEGMENTATION_SCORES,
            run_info={"model": model, "num_classes": found.num_classes, "input_size": list(size),
                      "model_args": model_args_info(model_kwargs), "kan_l1": kan_l1, "kan_entropy": kan_entropy},
            save_best=save_best, on_epoch_end=on_epoch_end, regularizer=regularizer,
        )
        result = fit(net, net.parameters(), train_set, val_set, spec, run, settings, info)
        if info.is_main:
            report_best(result, spec.metric, push_to_hub, dataset_name)
        return result
    finally:
        run.close()
        distributed.teardown(info)


def _class_names(class_names: Sequence[str] | None, found: SegmentationData | HFSegmentationData) -> list[str]:
    if class_names is None:
        return ["background", *[f"class{i}" for i in range(1, found.num_classes)]]
    names = list(class_names)
    if len(names) != found.num_classes:
        raise TaskError(f"got {len(names)} class names for {found.num_classes} classes; give one name per class")
    return names


def evaluate_segmenter(model: nn.Module, data: str | Path, *, batch_size: int = 8, img_size: int | None = None,
                       workers: int | None = None, amp: bool = False, device: str | None = None,
                       progress: bool | None = None) -> dict[str, float]:
    """mIoU, mean Dice, pixel accuracy and per-class scores of a segmentation model on ``data``."""
    settings = TrainSettings(batch_size=batch_size, workers=workers, amp=amp, device=device, progress=progress)
    settings.check()
    checks.image_size(img_size)
    found = discover_eval_pairs(data, model.num_classes)
    names = label_names(model) or [str(i) for i in range(model.num_classes)]
    size = input_size(model, img_size)
    cfg = resolve_data_config(model=model)
    info = distributed.setup(device)
    try:
        model.to(info.device)
        dataset = SegmentationDataset(found.val, size, cfg["mean"], cfg["std"], False, found.binary_255)
        sums, skipped = accumulate(model, eval_loader(dataset, settings, info), info, amp,
                                   _seg_step(model.num_classes, DiceCELoss()), progress)
        metrics = {k.removeprefix("val_"): v for k, v in seg_metrics(sums, names).items()}
        return {**metrics, "images": int(sums[1]), "skipped_images": skipped + len(found.skipped)}
    finally:
        distributed.teardown(info)
