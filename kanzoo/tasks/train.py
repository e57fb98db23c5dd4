"""The training loop shared by fine-tuning and segmentation: AdamW + cosine, AMP, DDP, atomic resumable state."""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm.auto import tqdm

import kanzoo
from kanzoo.inspect import KANRegularizer
from kanzoo.layers import KANConvBase

from . import checks, distributed
from .data import Batch, ShardSampler, Skipped, collate_skipping
from .distributed import DistInfo
from .errors import TaskError, TaskRuntimeError
from .modeling import create_task_model
from .recipe import Recipe, Training, ema_columns, with_defaults
from .runs import RunFolder, rng_state, set_rng_state
from .tracking import THROUGHPUT, Tracker, new_run_id

CHECKPOINT_FORMAT = "kanzoo-run/2"
_OLD_FORMATS = ("kanzoo-run/1",)
REGULARIZATION_COLUMNS = ("train_kan_l1", "train_kan_entropy")


@dataclass
class TrainSettings:
    """Optimisation and runtime settings common to every training task."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    workers: int | None = None
    seed: int = 0
    amp: bool = False
    device: str | None = None
    progress: bool | None = None
    recipe: Recipe = field(default_factory=Recipe)

    def check(self) -> None:
        """Reject settings that cannot work (before anything is read or written)."""
        self.recipe.check()
        checks.at_least("--epochs", self.epochs, 1)
        checks.at_least("--batch-size", self.batch_size, 1)
        checks.positive("--lr", self.lr)
        checks.at_least("--weight-decay", self.weight_decay, 0, float)
        if self.workers is not None:
            checks.at_least("--workers", self.workers, 0)
        checks.seed(self.seed)
        checks.device(self.device)

    @property
    def num_workers(self) -> int:
        """Data-loading worker processes (default: up to 4, leaving a core free)."""
        if self.workers is not None:
            return self.workers
        return min(4, max((os.cpu_count() or 1) - 1, 0))


def check_run_arguments(data: str | Path, out: str | Path, img_size: int | None, val_split: float | None,
                        push_to_hub: str | None) -> None:
    """The checks of a training command's arguments besides :class:`TrainSettings`' (nothing read or written)."""
    checks.text("--data", str(data))
    checks.text("--out", str(out))
    checks.image_size(img_size)
    if val_split is not None:
        checks.fraction("--val-split", val_split)
    if push_to_hub is not None:
        checks.repo_id("--push-to-hub", push_to_hub)


def model_args_info(model_kwargs: dict[str, Any] | None) -> dict[str, str]:
    """The model arguments as ``last.pt`` records them to compare on resume: each value's ``repr`` (plain strings,
    whatever the value, so that the checkpoint stays loadable with ``weights_only``)."""
    return {key: repr(value) for key, value in sorted((model_kwargs or {}).items())}


@dataclass
class FitResult:
    """What a training run produced."""

    out: Path
    best_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float = -math.inf
    best_epoch: int = 0


@dataclass
class TaskSpec:
    """What differs between tasks: loss, evaluation, metric to select the best model, outputs."""

    name: str
    loss_fn: nn.Module
    evaluate: Callable[[nn.Module, DataLoader, DistInfo], dict[str, float]]
    metric: str
    columns: Sequence[str]
    score_columns: Sequence[str]
    run_info: dict[str, Any]
    save_best: Callable[[nn.Module, Path, dict[str, float]], None]
    on_epoch_end: Callable[[nn.Module, RunFolder], None] | None = None
    regularizer: Callable[[nn.Module], tuple[torch.Tensor, dict[str, float]]] | None = None
    """Adds a penalty to each step's loss; its terms' epoch means are logged (e.g. ``kan_l1``, ``kan_entropy``)."""


def kan_regularizer(model: nn.Module, l1: float | None, entropy: float | None, run: RunFolder
                    ) -> tuple[KANRegularizer | None, float, float]:
    """The KAN sparsity regularisation of ``--kan-l1 L1 --kan-entropy ENTROPY`` (None when ``l1`` is 0) and the two
    weights; a weight left out (None) is the resumed run's, else 0."""
    recorded: dict[str, Any] = {}
    if run.resume and (l1 is None or entropy is None):
        state = run.load_checkpoint()
        info = state.get("run_info") if isinstance(state, dict) else None
        recorded = info if isinstance(info, dict) else {}
    l1 = recorded.get("kan_l1", 0.0) if l1 is None else l1
    entropy = recorded.get("kan_entropy", 0.0) if entropy is None else entropy
    try:
        regularizer = KANRegularizer(l1, entropy)
    except ValueError as err:
        raise TaskError(str(err).replace("weight l1", "--kan-l1").replace("weight entropy", "--kan-entropy")
                        .replace("give l1 > 0", "give --kan-l1 too")) from None
    if regularizer.l1 == 0:
        return None, regularizer.l1, regularizer.entropy
    if not any(isinstance(module, KANConvBase) for module in model.modules()):
        raise TaskError(f"--kan-l1 regularises KAN convolutions, but {type(model).__name__} has none; drop --kan-l1")
    return regularizer, regularizer.l1, regularizer.entropy


def with_regularization(columns: Sequence[str], regularizer: KANRegularizer | None) -> tuple[str, ...]:
    """``columns`` with the regularisation's (``train_kan_l1``, ``train_kan_entropy``) after ``train_loss``."""
    if regularizer is None:
        return tuple(columns)
    at = list(columns).index("train_loss") + 1
    return (*columns[:at], *REGULARIZATION_COLUMNS, *columns[at:])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(info: DistInfo, enabled: bool):
    """Mixed precision context: float16 on CUDA, bfloat16 on CPU."""
    dtype = torch.float16 if info.device.type == "cuda" else torch.bfloat16
    return torch.autocast(info.device.type, dtype=dtype, enabled=enabled)


def make_loader(dataset: Dataset, batch_size: int, workers: int, sampler: Sampler, info: DistInfo,
                drop_last: bool = False) -> DataLoader:
    """A loader that drops unreadable samples (see :func:`collate_skipping`)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_skipping, pin_memory=info.device.type == "cuda", drop_last=drop_last)


def eval_loader(dataset: Dataset, settings: TrainSettings, info: DistInfo) -> DataLoader:
    """An in-order loader over this process's share of ``dataset``."""
    return make_loader(dataset, settings.batch_size, settings.num_workers,
                       ShardSampler(len(dataset), info.rank, info.world), info)


def accumulate(model: nn.Module, loader: DataLoader, info: DistInfo, amp: bool,
               step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], progress: bool | None = False,
               desc: str = "eval") -> tuple[torch.Tensor, int]:
    """Sum ``step(outputs, targets)`` over the loader without gradients, reduced over processes.

    Returns the summed tensor and the number of skipped (unreadable) samples over all processes.
    """
    model.eval()
    total: torch.Tensor | None = None
    skipped = 0
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, disable=_bar_disabled(progress, info)):
            skipped += len(batch.skipped)
            _warn_skipped(batch.skipped, info)
            if batch.inputs is None:
                continue
            with autocast(info, amp):
                outputs = model(batch.inputs.to(info.device, non_blocking=True))
            sums = step(outputs.float(), batch.targets.to(info.device)).double().cpu()
            total = sums if total is None else total + sums
    if total is None:
        raise TaskError("no readable validation samples; check the validation images")
    counts = distributed.all_sum(torch.cat([total, torch.tensor([float(skipped)], dtype=torch.double)]), info)
    return counts[:-1], int(counts[-1])


def _bar_disabled(progress: bool | None, info: DistInfo) -> bool | None:
    if not info.is_main:
        return True
    return None if progress is None else not progress


def _warn_skipped(skipped: Iterable[Skipped], info: DistInfo) -> None:
    if info.is_main:
        for item in skipped:
            warnings.warn(f"skipped unreadable image {item.path} ({item.reason})", stacklevel=2)


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    states: list[Any] = [None] * info.world
    if info.enabled:
        dist.all_gather_object(states, rng_state())
    else:
        states[0] = rng_state()
    return states


_CHECKPOINT_FIELDS = {"epoch": int, "run_info": dict, "model": dict, "optimizer": dict, "scheduler": dict,
                      "scaler": dict, "rng": list, "best_metric": (int, float), "best_epoch": int, "history": list}


def _check_resumable(state: Any, spec: TaskSpec, run: RunFolder) -> None:
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt in _OLD_FORMATS:
        raise TaskError(f"{run.checkpoint_path} was written by an older kanzoo (format {fmt}) and cannot be resumed; "
                        "pass --overwrite to start over")
    if fmt != CHECKPOINT_FORMAT or state.get("task") != spec.name:
        raise TaskError(f"{run.checkpoint_path} is not a kanzoo {spec.name} checkpoint; pass --overwrite to start over")
    bad = [key for key, kind in _CHECKPOINT_FIELDS.items() if not isinstance(state.get(key), kind)]
    if bad:
        raise TaskError(f"{run.checkpoint_path} is damaged ({', '.join(bad)} missing or of the wrong type); pass "
                        "--overwrite to start over")
    saved = state["run_info"]
    for key, value in spec.run_info.items():
        if key in saved and saved[key] != value:
            raise TaskError(f"cannot resume: the run in {run.path} used {key}={saved[key]!r} but this command asks "
                            f"for {value!r}; repeat the original arguments or pass --overwrite to start over")


def _restore(state: dict[str, Any], model: nn.Module, training: Training, run: RunFolder, info: DistInfo) -> None:
    try:
        model.load_state_dict(state["model"])
        training.load(state)
        if len(state["rng"]) == info.world:
            set_rng_state(state["rng"][info.rank])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TaskError(f"cannot resume from {run.checkpoint_path}: it does not fit this model and optimizer "
                        f"({reason}); repeat the original arguments or pass --overwrite to start over") from None


def fit(model: nn.Module, params: Iterable[nn.Parameter], train_set: Dataset, val_set: Dataset, spec: TaskSpec,
        run: RunFolder, settings: TrainSettings, info: DistInfo) -> FitResult:
    """Train ``model`` on ``train_set``, validating every epoch; writes the run's outputs on the main process."""
    recipe = with_defaults(settings.recipe)
    model.to(info.device, memory_format=torch.channels_last if recipe.channels_last else torch.preserve_format)
    sampler = DistributedSampler(train_set, num_replicas=info.world, rank=info.rank, shuffle=True,
                                 seed=settings.seed)
    train_loader = make_loader(train_set, settings.batch_size, settings.num_workers, sampler, info,
                               drop_last=len(sampler) > settings.batch_size)
    val_loader = eval_loader(val_set, settings, info)
    scaler = torch.amp.GradScaler(info.device.type, enabled=settings.amp and info.device.type == "cuda")
    training = Training(recipe, model, params, lr=settings.lr, weight_decay=settings.weight_decay,
                        epochs=settings.epochs, batches_per_epoch=len(train_loader), scaler=scaler,
                        num_classes=getattr(model, "num_classes", 0), classification=spec.name == "finetune")
    columns = [*spec.columns, *ema_columns(recipe, spec.score_columns)]
    result = FitResult(run.path, run.best_dir)
    start_epoch, run_id = 0, new_run_id()
    if run.resume:
        state = run.load_checkpoint()
        _check_resumable(state, spec, run)
        _restore(state, model, training, run, info)
        run_id = str(state.get("tracking", {}).get("run_id", run_id))
        start_epoch = state["epoch"]
        result.history = state["history"]
        result.best_metric, result.best_epoch = float(state["best_metric"]), state["best_epoch"]
        if info.is_main:
            tqdm.write(f"resuming {run.path} after epoch {start_epoch}")
    if start_epoch >= settings.epochs and info.is_main:
        tqdm.write(f"{run.path} already finished {start_epoch} epochs; pass a larger --epochs to train more")
    train_model = model
    if info.enabled:
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    train_model = training.wrap(train_model)
    tracker = Tracker(recipe.log if info.is_main else [], run.path, columns,
                      {**spec.run_info, **_plain_settings(settings), **recipe.record()}, run_id)
    try:
        epochs = tqdm(range(start_epoch + 1, settings.epochs + 1), desc=spec.name, initial=start_epoch,
                      total=settings.epochs, disable=_bar_disabled(settings.progress, info))
        for epoch in epochs:
            row = _train_epoch(train_model, train_loader, sampler, epoch, training, spec, settings, info)
            started = row.pop("_started")
            metrics = spec.evaluate(model, val_loader, info)
            row["skipped_images"] += metrics.pop("skipped_images", 0)
            row.update(metrics)
            row.update(training.evaluate_ema(lambda averaged: spec.evaluate(averaged, val_loader, info)))
            row["epoch_time_s"] = time.perf_counter() - started
            result.history.append(row)
            candidate, score, best_row = training.best_candidate(model, row, spec.metric)
            improved = score > result.best_metric
            if improved:
                result.best_metric, result.best_epoch = score, epoch
            rngs = _gather_rng(info)
            if info.is_main:
                with _interrupt_after():
                    _write_epoch(model, training, epoch, rngs, result, spec, run, candidate if improved else None,
                                 best_row, columns, run_id)
                    epochs.write(_summary(row, spec))
                tracker.log(row)
            distributed.barrier(info)
    except KeyboardInterrupt:
        if info.is_main:
            if result.history:
                tqdm.write(f"interrupted; {run.checkpoint_path} holds the state after epoch "
                           f"{result.history[-1]['epoch']}: run the same command with --resume to continue")
            else:
                tqdm.write("interrupted before the first epoch finished; nothing was saved: run the command again")
        raise
    finally:
        tracker.close()
    return result


def report_best(result: FitResult, metric: str, push_to_hub: str | None, dataset: str) -> None:
    """Print the best epoch's ``metric`` and, with ``push_to_hub``, push the best model to that Hub repo."""
    tqdm.write(f"best {metric} {result.best_metric:.4f} (epoch {result.best_epoch}); hub-ready model in "
               f"{result.best_dir}")
    if not push_to_hub:
        return
    best = create_task_model(str(result.best_dir))
    row = next(r for r in result.history if r["epoch"] == result.best_epoch)
    metrics = {k: row[k] for k in ("val_top1", "val_top5", "val_miou", "val_dice") if k in row}
    url = kanzoo.push_to_hub(best, push_to_hub, metrics=metrics, dataset=dataset)
    tqdm.write(f"pushed the best model to {push_to_hub}" + (f" ({url})" if url else ""))


def _train_epoch(model: nn.Module, loader: DataLoader, sampler: DistributedSampler, epoch: int, training: Training,
                 spec: TaskSpec, settings: TrainSettings, info: DistInfo) -> dict[str, Any]:
    started = time.perf_counter()
    sampler.set_epoch(epoch)
    model.train()
    loss_sum, seen, skipped = 0.0, 0, 0
    terms: dict[str, float] = {}
    lr = training.lr()
    training.start_epoch(epoch)
    batches = tqdm(loader, desc=f"epoch {epoch}", leave=False, unit="batch",
                   disable=_bar_disabled(settings.progress, info))
    for index, batch in enumerate(batches):
        batch: Batch
        skipped += len(batch.skipped)
        _warn_skipped(batch.skipped, info)
        size = training.usable(0 if batch.inputs is None else len(batch.inputs))
        if distributed.all_min(size, info) == 0:
            training.step(index)
            continue
        inputs, targets = training.prepare(batch.inputs[:size].to(info.device, non_blocking=True),
                                           batch.targets[:size].to(info.device, non_blocking=True))
        with autocast(info, settings.amp):
            loss = spec.loss_fn(model(inputs), targets)
        objective = loss
        if spec.regularizer is not None:
            penalty, values = spec.regularizer(model)
            objective = loss + penalty
            for key, value in values.items():
                terms[key] = terms.get(key, 0.0) + value * size
        training.backward(objective, index)
        loss_sum += float(loss.detach()) * size
        seen += size
        batches.set_postfix(loss=f"{loss_sum / seen:.4f}",
                            img_s=f"{seen * info.world / (time.perf_counter() - started):.1f}")
    sums = distributed.all_sum(torch.tensor([loss_sum, float(seen), float(skipped)], dtype=torch.double), info)
    if sums[1] == 0:
        raise TaskError("no readable training samples in this epoch; check the training images")
    train_loss = float(sums[0] / sums[1])
    if not math.isfinite(train_loss):
        raise TaskRuntimeError(f"the training loss became {train_loss} in epoch {epoch}; lower --lr (now {settings.lr})"
                        + (" or drop --amp" if settings.amp else ""))
    row = {"epoch": epoch, "train_loss": train_loss, "lr": lr, "skipped_images": int(sums[2]), "_started": started,
           THROUGHPUT: float(sums[1]) / (time.perf_counter() - started)}
    if terms:
        keys = sorted(terms)
        totals = distributed.all_sum(torch.tensor([terms[k] for k in keys], dtype=torch.double), info)
        row.update({f"train_{key}": float(total / sums[1]) for key, total in zip(keys, totals)})
    return row


@contextlib.contextmanager
def _interrupt_after() -> Iterator[None]:
    """Hold back Ctrl-C until the block is done (so an epoch's outputs are written together)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _write_epoch(model: nn.Module, training: Training, epoch: int, rngs: list[dict[str, Any]], result: FitResult,
                 spec: TaskSpec, run: RunFolder, best: nn.Module | None, best_row: dict[str, Any],
                 columns: Sequence[str], run_id: str) -> None:
    run.begin_epoch_write()
    if best is not None:
        run.replace_dir(run.best_dir.name, lambda folder: spec.save_best(best, folder, best_row))
    if spec.on_epoch_end is not None:
        spec.on_epoch_end(model, run)
    run.save_checkpoint({
        "format": CHECKPOINT_FORMAT, "task": spec.name, "epoch": epoch, "run_info": spec.run_info,
        "model": model.state_dict(), **training.state(), "rng": rngs, "best_metric": result.best_metric,
        "best_epoch": result.best_epoch, "history": result.history, "tracking": {"run_id": run_id},
    })
    run.write_metrics(result.history, columns)
    run.write_curves(result.history, ["train_loss", "val_loss"], spec.score_columns)
    run.end_epoch_write()


def _plain_settings(settings: TrainSettings) -> dict[str, Any]:
    return {"epochs": settings.epochs, "batch_size": settings.batch_size, "lr": settings.lr,
            "weight_decay": settings.weight_decay, "seed": settings.seed, "amp": settings.amp}


def _summary(row: dict[str, Any], spec: TaskSpec) -> str:
    shown = ["train_loss", "val_loss", *spec.score_columns]
    shown += [key for key in row if key.startswith("ema_") and key.removeprefix("ema_") in spec.score_columns]
    parts = [f"{key} {row[key]:.4f}" for key in shown]
    parts.append(f"{row[THROUGHPUT]:.1f} img/s, {row['epoch_time_s']:.1f} s")
    if row["skipped_images"]:
        parts.append(f"skipped {row['skipped_images']} unreadable images")
    return f"epoch {row['epoch']}: " + ", ".join(parts)
