"""The training recipe's switches, built from timm's implementations: optimizers (``create_optimizer_v2``, layer-wise
learning-rate decay), schedulers (``create_scheduler_v2``), ``ModelEmaV3``, ``Mixup``/CutMix and the label-smoothing
losses; plus gradient accumulation, clipping, channels-last and ``torch.compile``.

A :class:`Recipe` holds what the user asked for, ``None`` meaning "not given". A run records its resolved recipe in
``last.pt``; ``--resume`` fills every switch that is not given from that record and refuses one that contradicts it
(:func:`resolve_recipe`), except the runtime switches (:data:`RUNTIME_SWITCHES`), which may change between sessions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Iterable, Sequence

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, dispatch_clip_grad
from torch import nn

from . import checks
from .errors import TaskError
from .modeling import unwrap
from .runs import RunFolder
from .tracking import LOGGERS, check_loggers

SCHEDULERS = ("cosine", "tanh", "step", "constant", "multistep", "poly")
CLASSIFICATION_ONLY = ("mixup", "cutmix", "label_smoothing")
RUNTIME_SWITCHES = ("log", "compile", "channels_last")
MIN_LR_FACTOR = 0.01
EMA_PREFIX = "ema_"
_DEFAULTS: dict[str, Any] = {
    "opt": None, "sched": None, "warmup_epochs": 0, "layer_decay": None, "clip_grad": None, "grad_accum": 1,
    "ema": False, "ema_decay": 0.9998, "mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.0, "channels_last": False,
    "compile": False, "log": [],
}


def option_name(field_name: str) -> str:
    """The command-line option of a recipe field (``grad_accum`` -> ``--grad-accum``)."""
    return "--" + field_name.replace("_", "-")


@dataclass
class Recipe:
    """The recipe switches of a training run; ``None`` is "not given" (the default, or the resumed run's value).

    ``opt`` and ``sched`` name timm optimizers and schedulers; left out, the run uses AdamW on every trainable
    parameter and a cosine decay to 1% per step, as without a recipe. ``warmup_epochs`` alone selects timm's
    cosine schedule with that warmup.
    """

    opt: str | None = None
    sched: str | None = None
    warmup_epochs: int | None = None
    layer_decay: float | None = None
    clip_grad: float | None = None
    grad_accum: int | None = None
    ema: bool | None = None
    ema_decay: float | None = None
    mixup: float | None = None
    cutmix: float | None = None
    label_smoothing: float | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    log: Sequence[str] | None = None

    def check(self) -> None:
        """Reject values that cannot work (nothing read or written yet)."""
        if self.opt is not None and (not isinstance(self.opt, str) or self.opt.lower() not in list_optimizers()):
            raise TaskError(f"--opt {self.opt!r} is not one of timm's optimizers; pick one of "
                            "timm.optim.list_optimizers() (e.g. adamw, sgd, lamb, lion)")
        if self.sched is not None and self.sched not in SCHEDULERS:
            raise TaskError(f"--sched {self.sched!r} is not a schedule kanzoo drives; pick one of "
                            f"{', '.join(SCHEDULERS)}")
        if self.warmup_epochs is not None:
            checks.at_least("--warmup-epochs", self.warmup_epochs, 0)
        if self.grad_accum is not None:
            checks.at_least("--grad-accum", self.grad_accum, 1)
        for name in ("clip_grad", "layer_decay"):
            if getattr(self, name) is not None:
                checks.positive(option_name(name), getattr(self, name))
        if self.layer_decay is not None and self.layer_decay > 1:
            raise TaskError(f"--layer-decay must be at most 1 (each layer's rate is F times the next one's), got "
                            f"{self.layer_decay}")
        if self.ema_decay is not None:
            checks.fraction("--ema-decay", self.ema_decay)
        for name in ("mixup", "cutmix"):
            if getattr(self, name) is not None:
                checks.at_least(option_name(name), getattr(self, name), 0, float)
        if self.label_smoothing is not None:
            checks.at_least("--label-smoothing", self.label_smoothing, 0, float)
            if self.label_smoothing >= 1:
                raise TaskError(f"--label-smoothing must be below 1 (e.g. 0.1), got {self.label_smoothing}")
        if self.log is not None:
            unknown = sorted(set(self.log) - set(LOGGERS))
            if unknown:
                raise TaskError(f"--log {', '.join(unknown)} is not a tracker; use {' or '.join(LOGGERS)}")

    def record(self) -> dict[str, Any]:
        """The switches as plain values, for ``last.pt``."""
        record = asdict(self)
        record["log"] = list(record["log"] or [])
        return record

    @property
    def mixing(self) -> bool:
        """True when batches are mixed (Mixup or CutMix)."""
        return bool(self.mixup or self.cutmix)


def _same(given: Any, recorded: Any) -> bool:
    if isinstance(given, float) or isinstance(recorded, float):
        return recorded is not None and given is not None and math.isclose(given, recorded)
    return given == recorded


def resolve_recipe(recipe: Recipe | None, run: RunFolder, task: str) -> Recipe:
    """``recipe`` with every switch filled: given, else the resumed run's recorded value, else the default.

    Refuses classification-only switches for other tasks, a resumed run's switch that contradicts its record and
    trackers whose package is missing.
    """
    recipe = recipe or Recipe()
    recipe.check()
    if task != "finetune":
        given = [option_name(name) for name in CLASSIFICATION_ONLY if getattr(recipe, name)]
        if given:
            raise TaskError(f"{', '.join(given)} only apply to classification (kanzoo finetune); drop them here")
    recorded: dict[str, Any] = {}
    if run.resume:
        state = run.load_checkpoint()
        recorded = state.get("recipe", {}) if isinstance(state, dict) else {}
        if not isinstance(recorded, dict):
            raise TaskError(f"{run.checkpoint_path} is damaged (recipe of the wrong type); pass --overwrite to "
                            "start over")
    values = {}
    for item in fields(Recipe):
        given, before = getattr(recipe, item.name), recorded.get(item.name, _DEFAULTS[item.name])
        if given is not None and recorded and item.name not in RUNTIME_SWITCHES and not _same(given, before):
            used = "the default" if before is None else before
            raise TaskError(f"cannot resume: the run in {run.path} used {option_name(item.name)} {used} but this "
                            f"command asks for {given}; drop the option (the run's value is kept) or pass "
                            "--overwrite to start over")
        values[item.name] = before if given is None else given
    values["log"] = list(dict.fromkeys(values["log"] or []))
    resolved = Recipe(**values)
    if recipe.ema_decay is not None and not resolved.ema:
        raise TaskError("--ema-decay sets the decay of --ema's averaged model; add --ema")
    check_loggers(resolved.log)
    return resolved


def check_model(recipe: Recipe, model: nn.Module) -> None:
    """Refuse switches that this model cannot take (layer-wise decay needs timm's ``group_matcher``)."""
    if recipe.layer_decay is not None and not hasattr(unwrap(model), "group_matcher"):
        raise TaskError(f"--layer-decay needs a model that groups its layers (timm's group_matcher), and "
                        f"{type(unwrap(model)).__name__} has none; drop --layer-decay")


def classification_loss(recipe: Recipe) -> nn.Module:
    """The training loss: soft-target cross-entropy for mixed batches (Mixup smooths their labels), label-smoothing
    cross-entropy with ``label_smoothing``, else plain cross-entropy."""
    if recipe.mixing:
        return SoftTargetCrossEntropy()
    if recipe.label_smoothing:
        return LabelSmoothingCrossEntropy(smoothing=recipe.label_smoothing)
    return nn.CrossEntropyLoss()


class Training:
    """The optimizer, schedule, gradient scaler and EMA of one run, and the optimiser step they make together.

    Every ``grad_accum`` batches (and at the end of an epoch) one update: unscale, clip, step, zero the gradients,
    advance the schedule by one update and the EMA by one step.
    """

    def __init__(self, recipe: Recipe, model: nn.Module, params: Iterable[nn.Parameter], *, lr: float,
                 weight_decay: float, epochs: int, batches_per_epoch: int, scaler: torch.amp.GradScaler,
                 num_classes: int, classification: bool) -> None:
        self.recipe = recipe
        self.model = model
        self.scaler = scaler
        self.batches_per_epoch = max(batches_per_epoch, 1)
        self.updates_per_epoch = math.ceil(self.batches_per_epoch / recipe.grad_accum)
        self.updates = 0
        self.params = [p for p in params if p.requires_grad]
        if recipe.opt is None and recipe.layer_decay is None:
            self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        else:
            self.optimizer = create_optimizer_v2(model, opt=recipe.opt or "adamw", lr=lr, weight_decay=weight_decay,
                                                 layer_decay=recipe.layer_decay)
        if recipe.sched is None and not recipe.warmup_epochs:
            total = epochs * self.updates_per_epoch
            self.scheduler: Any = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _cosine(total))
        else:
            sched = recipe.sched or "cosine"
            self.scheduler, _ = create_scheduler_v2(
                self.optimizer, sched=sched, num_epochs=epochs, warmup_epochs=recipe.warmup_epochs,
                min_lr=lr * MIN_LR_FACTOR, step_on_epochs=False, updates_per_epoch=self.updates_per_epoch)
        self.ema = ModelEmaV3(model, decay=recipe.ema_decay, use_warmup=True) if recipe.ema else None
        self.mixup = (Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                            label_smoothing=recipe.label_smoothing, num_classes=num_classes)
                      if classification and recipe.mixing else None)
        self._pending = False

    def lr(self) -> float:
        """The largest learning rate of the parameter groups (layer-wise decay scales the others down)."""
        return max(group["lr"] for group in self.optimizer.param_groups)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train: ``torch.compile`` of ``model`` with ``compile`` (the original keeps the weights that
        are saved and evaluated)."""
        return torch.compile(model) if self.recipe.compile else model

    def usable(self, size: int) -> int:
        """How many of a batch's ``size`` samples train (Mixup pairs samples, so an odd last one is left out)."""
        return size - size % 2 if self.mixup is not None else size

    def prepare(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channels-last layout and Mixup/CutMix (soft targets) for a training batch."""
        if self.recipe.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self.mixup is not None:
            inputs, targets = self.mixup(inputs, targets)
        return inputs, targets

    def start_epoch(self, epoch: int) -> None:
        """Start counting updates where epoch ``epoch`` (1-based) begins."""
        self.updates = (epoch - 1) * self.updates_per_epoch
        self.optimizer.zero_grad(set_to_none=True)
        self._pending = False

    def backward(self, loss: torch.Tensor, index: int) -> None:
        """Back-propagate the ``index``-th batch's loss, scaled to its share of the accumulation group; then
        :meth:`step` (the update happens when the group is complete)."""
        group_start = index - index % self.recipe.grad_accum
        group_size = min(self.recipe.grad_accum, self.batches_per_epoch - group_start)
        self.scaler.scale(loss / group_size).backward()
        self._pending = True
        self.step(index)

    def step(self, index: int) -> None:
        """After the ``index``-th batch: one update when it ends an accumulation group with gradients pending."""
        ends_group = (index + 1) % self.recipe.grad_accum == 0 or index + 1 >= self.batches_per_epoch
        if not (ends_group and self._pending):
            return
        if self.recipe.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            dispatch_clip_grad(self.params, self.recipe.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._pending = False
        self.updates += 1
        if isinstance(self.scheduler, torch.optim.lr_scheduler.LRScheduler):
            self.scheduler.step()
        else:
            self.scheduler.step_update(num_updates=self.updates)
        if self.ema is not None:
            self.ema.update(self.model, step=self.updates)

    def evaluate_ema(self, evaluate: Callable[[nn.Module], dict[str, float]]) -> dict[str, float]:
        """The EMA model's validation metrics, prefixed ``ema_`` (empty without ``--ema``)."""
        if self.ema is None:
            return {}
        metrics = evaluate(self.ema.module)
        metrics.pop("skipped_images", None)
        return {EMA_PREFIX + key: value for key, value in metrics.items()}

    def best_candidate(self, model: nn.Module, row: dict[str, Any], metric: str) -> tuple[nn.Module, float,
                                                                                            dict[str, Any]]:
        """The better of the model and its EMA by ``metric``: the module, its score and the row as its metrics
        (the EMA's ``ema_`` values under the plain names when it wins)."""
        ema_score = row.get(EMA_PREFIX + metric)
        if self.ema is None or ema_score is None or not ema_score > row[metric]:
            return model, row[metric], row
        ema_row = {**row, **{key.removeprefix(EMA_PREFIX): value for key, value in row.items()
                             if key.startswith(EMA_PREFIX)}}
        return self.ema.module, ema_score, ema_row

    def state(self) -> dict[str, Any]:
        """The optimizer, schedule, scaler and EMA states and the recipe, for ``last.pt``."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "recipe": self.recipe.record(),
                "ema": None if self.ema is None else self.ema.module.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved; a timm schedule follows from the update count alone, so a run trained
        further with a larger ``--epochs`` takes the new schedule's length."""
        self.optimizer.load_state_dict(state["optimizer"])
        if isinstance(self.scheduler, torch.optim.lr_scheduler.LRScheduler):
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])


def ema_columns(recipe: Recipe, score_columns: Sequence[str]) -> list[str]:
    """The ``metrics.csv`` columns the EMA model adds: its validation loss and scores."""
    return [EMA_PREFIX + name for name in ("val_loss", *score_columns)] if recipe.ema else []


def with_defaults(recipe: Recipe | None) -> Recipe:
    """``recipe`` with every switch that is not given at its default (for runs that are not resumed)."""
    recipe = recipe or Recipe()
    return replace(recipe, **{k: v for k, v in _DEFAULTS.items() if getattr(recipe, k) is None})


def _cosine(total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        progress = min(step / max(total_steps, 1), 1.0)
        return MIN_LR_FACTOR + (1 - MIN_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor
