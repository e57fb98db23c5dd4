"""Fine-tuning a classifier on an ImageFolder tree, and evaluating one (top-1 / top-5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from timm.data import create_transform, resolve_data_config
from torch import nn
from tqdm.auto import tqdm

from . import checks, distributed
from .data import ImageDataset, discover_eval_images
from .errors import TaskError
from .hfdata import HFOptions, classification_source
from .metrics import topk_correct
from .modeling import create_task_model, is_segmentation, label_names, save_task_model, set_task_cfg
from .recipe import Recipe, check_model, classification_loss, resolve_recipe
from .runs import RunFolder
from .train import (FitResult, TaskSpec, TrainSettings, accumulate, check_run_arguments, eval_loader, fit,
                    kan_regularizer, model_args_info, report_best, seed_everything, with_regularization)

CLASSIFICATION_COLUMNS = ("epoch", "train_loss", "val_loss", "val_top1", "val_top5", "lr", "epoch_time_s",
                          "skipped_images")
TRAIN_CROP_SCALE = (0.25, 1.0)


def data_config(model: nn.Module, img_size: int | None = None) -> dict[str, Any]:
    """timm's preprocessing config for ``model``, with the input size overridden by ``img_size``."""
    cfg = resolve_data_config(model=model)
    if img_size is not None:
        checks.image_size(img_size)
        cfg["input_size"] = (cfg["input_size"][0], img_size, img_size)
    return cfg


def transforms(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """Training (random resized crop, flip, colour jitter) and evaluation (resize, centre crop) transforms."""
    train = create_transform(**cfg, is_training=True, scale=TRAIN_CROP_SCALE)
    val = create_transform(**cfg)
    return train, val


def _classifier_step(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-batch sums: loss, top-1 hits, top-5 hits, images."""
    top1, top5 = topk_correct(logits, targets, (1, 5))
    loss = float(F.cross_entropy(logits, targets, reduction="sum"))
    return torch.tensor([loss, float(top1), float(top5), float(len(targets))], dtype=torch.double)


def _classification_metrics(sums: torch.Tensor) -> dict[str, float]:
    loss, top1, top5, count = sums.tolist()
    return {"val_loss": loss / count, "val_top1": top1 / count, "val_top5": top5 / count}


def _freeze_backbone(model: nn.Module) -> None:
    head = list(model.get_classifier().parameters())
    if not head:
        raise TaskError("--freeze-backbone needs a classifier with parameters, but this model's head has none")
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head:
        p.requires_grad_(True)


def finetune(model: str, data: str | Path, out: str | Path, *, epochs: int = 10, batch_size: int = 32,
             lr: float = 1e-3, weight_decay: float = 0.05, img_size: int | None = None, pretrained: bool | None = None,
             freeze_backbone: bool = False, amp: bool = False, workers: int | None = None, seed: int = 0,
             resume: bool = False, overwrite: bool = False, val_split: float | None = None,
             push_to_hub: str | None = None, device: str | None = None, progress: bool | None = None,
             model_kwargs: dict[str, Any] | None = None, kan_l1: float | None = None,
             kan_entropy: float | None = None, recipe: Recipe | None = None, hf: HFOptions | None = None) -> FitResult:
    """Fine-tune ``model`` (``name[.tag]``, ``hf-hub:`` id or hub-ready folder) on an ImageFolder tree or a Hugging
    Face data set (``hf:NAME_OR_PATH``, read as ``hf`` says), with the switches of ``recipe``.

    Writes ``out/metrics.csv``, ``out/curves.png``, the best model as a hub-ready folder ``out/best`` and the
    resumable ``out/last.pt``. Under ``torchrun`` every process trains a shard (DDP); only rank 0 writes.
    ``kan_l1`` (with ``kan_entropy``) adds the KAN paper's sparsity regularisation of the basis weights
    (:class:`kanzoo.inspect.KANRegularizer`), logged as ``train_kan_l1`` and ``train_kan_entropy``; left out
    (None), the resumed run's values, else 0.
    """
    settings = TrainSettings(epochs, batch_size, lr, weight_decay, workers, seed, amp, device, progress,
                             recipe or Recipe())
    settings.check()
    check_run_arguments(data, out, img_size, val_split, push_to_hub)
    run = RunFolder(out, resume=resume, overwrite=overwrite)
    settings.recipe = resolve_recipe(settings.recipe, run, "finetune")
    found = classification_source(data, val_split, seed, hf)
    info = distributed.setup(device)
    try:
        seed_everything(seed)
        net = create_task_model(model, pretrained=False if resume else pretrained, num_classes=len(found.classes),
                                **(model_kwargs or {}))
        if is_segmentation(net):
            raise TaskError(f"{model} is a segmentation model; use `kanzoo segment` for it")
        regularizer, kan_l1, kan_entropy = kan_regularizer(net, kan_l1, kan_entropy, run)
        check_model(settings.recipe, net)
        cfg = data_config(net, img_size)
        train_tf, val_tf = transforms(cfg)
        if freeze_backbone:
            _freeze_backbone(net)
        set_task_cfg(net, classes=found.classes, input_size=cfg["input_size"], mean=cfg["mean"], std=cfg["std"])
        if info.is_main:
            run.prepare()
            tqdm.write(f"{model}: {len(found.classes)} classes, {len(found.train)} training and {len(found.val)} "
                       f"validation images, input {cfg['input_size']}, {info.world} process(es) on {info.device}")
        distributed.barrier(info)
        dataset_name = found.name

        def evaluate(net_: nn.Module, loader, info_) -> dict[str, float]:
            sums, skipped = accumulate(net_, loader, info_, settings.amp, _classifier_step,
                                       settings.progress)
            return {**_classification_metrics(sums), "skipped_images": skipped}

        def save_best(net_: nn.Module, folder: Path, row: dict[str, float]) -> None:
            save_task_model(net_, folder, metrics={"top1": row["val_top1"], "top5": row["val_top5"]},
                            dataset=dataset_name)

        spec = TaskSpec(
            name="finetune", loss_fn=classification_loss(settings.recipe), evaluate=evaluate, metric="val_top1",
            columns=with_regularization(CLASSIFICATION_COLUMNS, regularizer), score_columns=("val_top1", "val_top5"),
            run_info={"model": model, "classes": found.classes, "input_size": list(cfg["input_size"]),
                      "model_args": model_args_info(model_kwargs), "freeze_backbone": freeze_backbone,
                      "kan_l1": kan_l1, "kan_entropy": kan_entropy},
            save_best=save_best, regularizer=regularizer,
        )
        result = fit(net, net.parameters(), *found.datasets(train_tf, val_tf), spec, run, settings, info)
        if info.is_main:
            report_best(result, spec.metric, push_to_hub, dataset_name)
        return result
    finally:
        run.close()
        distributed.teardown(info)


def class_mapping(data_classes: Sequence[str], model: nn.Module) -> list[int]:
    """For each data-set class, the model output it corresponds to (by saved class names, else by order)."""
    names = label_names(model)
    synsets = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    for known in (names, synsets):
        if known and set(data_classes) <= set(known):
            index = {name: i for i, name in enumerate(known)}
            return [index[name] for name in data_classes]
    if names:
        missing = sorted(set(data_classes) - set(names))
        raise TaskError(f"the model does not know the classes {', '.join(missing[:5])}; its classes are "
                        f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
    if len(data_classes) != model.num_classes:
        raise TaskError(f"the data has {len(data_classes)} classes but the model predicts {model.num_classes}; "
                        "evaluate a model fine-tuned on these classes")
    return list(range(len(data_classes)))


def evaluate_classifier(model: nn.Module, data: str | Path, *, batch_size: int = 64, img_size: int | None = None,
                        workers: int | None = None, amp: bool = False, device: str | None = None,
                        progress: bool | None = None) -> dict[str, float]:
    """Top-1 / top-5 accuracy and loss of a classifier on ``data/val`` (or ``data``'s class folders)."""
    settings = TrainSettings(batch_size=batch_size, workers=workers, amp=amp, device=device, progress=progress)
    settings.check()
    checks.image_size(img_size)
    classes, samples = discover_eval_images(data)
    mapping = class_mapping(classes, model)
    samples = [(path, mapping[label]) for path, label in samples]
    info = distributed.setup(device)
    try:
        _, val_tf = transforms(data_config(model, img_size))
        model.to(info.device)
        loader = eval_loader(ImageDataset(samples, val_tf), settings, info)
        sums, skipped = accumulate(model, loader, info, amp, _classifier_step, progress)
        metrics = _classification_metrics(sums)
        return {"top1": metrics["val_top1"], "top5": metrics["val_top5"], "loss": metrics["val_loss"],
                "images": int(sums[3]), "skipped_images": skipped}
    finally:
        distributed.teardown(info)
