"""``prune``: structured pruning of a model's KAN convs, as far as a metric on data allows.

The statistics of every layer's inputs come from ``samples`` images (``DIR/train`` when ``DIR`` has ``train/`` and
``val/``, else the evaluation images); :class:`kanzoo.inspect.Pruner` plans, for a growing tolerance, the cheapest
form of every layer; each plan is applied to a copy and evaluated on the evaluation images (top-1 for classifiers,
mIoU for segmentation models). First one tolerance for every layer grows (0 first: only exact changes) while
the metric stays within ``max_drop`` of the unpruned model's; then each layer alone, those that could save the
most first, takes larger tolerances until its first one that drops more. The result is saved as a hub-ready
folder (reloaded and checked against the pruned model before it replaces ``out``) with ``pruning.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from kanzoo.atomic import replace_folder
from kanzoo.inspect import LayerPlan, ModelCost, Pruner, collect_statistics, model_cost

from .classification import evaluate_classifier
from .errors import TaskError
from .inspection import check_output_folder, image_batches, model_input_size
from .modeling import create_task_model, is_segmentation, save_task_model
from .predict import load_for_inference
from .runs import atomic_write_text
from .segmentation import evaluate_segmenter

TOLERANCES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Relative errors tried, smallest first (see :mod:`kanzoo.inspect.prune`)."""
REPORT = "pruning.json"
_FOLDER_FILES = ("config.json", "model.safetensors", REPORT)


@dataclasses.dataclass
class PruneReport:
    """What ``prune`` did: the metric and the cost before and after, every layer's change, every evaluation."""

    out: Path
    metric: str
    before: float
    after: float
    cost_before: ModelCost
    cost_after: ModelCost
    plans: list[LayerPlan]
    evaluations: list[dict[str, Any]]

    def counts(self) -> dict[str, int]:
        """How many layers became plain, partial or smaller."""
        found: dict[str, int] = {}
        for plan in self.plans:
            found[plan.kind] = found.get(plan.kind, 0) + 1
        return found


def _evaluator(model: nn.Module, data: str | Path, batch_size: int, img_size: int | None, workers: int | None,
               device: str | None) -> tuple[str, Callable[[nn.Module], float]]:
    run, metric = (evaluate_segmenter, "miou") if is_segmentation(model) else (evaluate_classifier, "top1")

    def evaluate(net: nn.Module) -> float:
        try:
            return float(run(net, data, batch_size=batch_size, img_size=img_size, workers=workers, device=device,
                             progress=False)[metric])
        finally:
            net.cpu()

    return metric, evaluate


def _check_reload(folder: Path, model: nn.Module, shape: Sequence[int]) -> None:
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    reloaded = create_task_model(str(folder)).eval()
    with torch.no_grad():
        expected, got = model.eval()(x), reloaded(x)
    difference = float((got - expected).abs().max())
    if not difference <= 1e-4 * (1 + float(expected.abs().max())):
        raise TaskError(f"the saved pruned model does not reproduce the pruned model (max difference {difference:.3g});"
                        " nothing was written: please report this")


class _Search:
    """Finds how far each layer can be pruned: one tolerance for every layer first, raised while the metric stays
    within ``max_drop``; then each layer alone (the layers that could save the most first) to larger tolerances,
    until its first one that drops too much."""

    def __init__(self, pruner: Pruner, evaluate: Callable[[nn.Module], float], before: float, max_drop: float,
                 metric: str) -> None:
        self.pruner, self.evaluate, self.before, self.max_drop, self.metric = pruner, evaluate, before, max_drop, metric
        self.assigned: dict[str, float] = {}
        self.plans: list[LayerPlan] = []
        self.pruned: nn.Module | None = None
        self.score = before
        self.tried: list[dict[str, Any]] = []

    def _try(self, tolerances: dict[str, float], label: str) -> bool:
        """Evaluate the plans of ``tolerances``; keep them when the metric holds. False when it drops too much."""
        plans = self.pruner.plan(tolerances)
        if [(p.name, p.change) for p in plans] == [(p.name, p.change) for p in self.plans]:
            return True
        pruned = self.pruner.apply(plans)
        score = self.evaluate(pruned)
        params = sum(p.numel() for p in pruned.parameters())
        self.tried.append({"step": label, self.metric: score, "params": params, "layers_changed": len(plans)})
        if self.before - score > self.max_drop:
            return False
        self.assigned, self.plans, self.pruned, self.score = dict(tolerances), plans, pruned, score
        return True

    def run(self, levels: list[float], progress: bool | None) -> None:
        names = list(self.pruner.candidates)
        for level in [0.0, *levels]:
            if not self._try(dict.fromkeys(names, level), f"every layer at tolerance {level:g}"):
                break
            if self.plans:
                tqdm.write(f"tolerance {level:g} for every layer: {len(self.plans)} layers smaller, "
                           f"{self.metric} {self.score:.4f}")
        self.assigned = self.assigned or dict.fromkeys(names, 0.0)

        def saving(name: str) -> int:
            plan = self.pruner.candidates[name].plan(levels[-1])
            return 0 if plan is None else plan.params_before - plan.params_after

        bar = tqdm(sorted(names, key=saving, reverse=True), desc="per layer", leave=False,
                   disable=None if progress is None else not progress)
        for name in bar:
            for level in (value for value in levels if value > self.assigned[name]):
                if not self._try({**self.assigned, name: level}, f"{name} at tolerance {level:g}"):
                    break
        tqdm.write(f"per layer: {len(self.plans)} layers smaller, {self.metric} {self.score:.4f} "
                   f"({len(self.tried)} evaluations in all)")


def prune(model: str | nn.Module, data: str | Path, out: str | Path, *, max_drop: float = 0.01, samples: int = 256,
          batch_size: int = 32, img_size: int | None = None, workers: int | None = None, device: str | None = None,
          tolerances: Sequence[float] = TOLERANCES, seed: int = 0, overwrite: bool = False,
          progress: bool | None = None) -> PruneReport:
    """Prune ``model`` (a name with weights, ``hf-hub:`` id, hub-ready folder or module) on ``data`` and save it to
    the hub-ready folder ``out`` (see the module doc); parameters, GFLOPs and CPU forward time are measured before
    and after."""
    if not (isinstance(max_drop, (int, float)) and 0 <= max_drop < 1):
        raise TaskError(f"--max-drop must be a fraction from 0 to 1 (0.01: one percentage point), got {max_drop}")
    if not tolerances or any(not (isinstance(t, (int, float)) and t > 0 and math.isfinite(t)) for t in tolerances):
        raise TaskError(f"tolerances must be positive numbers, got {tolerances!r}")
    out = Path(out)
    check_output_folder(out, _FOLDER_FILES, overwrite, "a model")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise TaskError(f"{out} is not empty; --out names the folder the pruned model replaces as a whole: choose a "
                        "new or empty folder")
    net = load_for_inference(model).cpu()
    shape = model_input_size(net, img_size)
    batches, total = image_batches(net, data, samples=samples, batch_size=batch_size, img_size=img_size,
                                      workers=workers, seed=seed)
    try:
        statistics = collect_statistics(net, batches, total=total, progress=progress)
    except ValueError as err:
        raise TaskError(str(err)) from None
    pruner = Pruner(net, statistics, progress=progress)
    metric, evaluate = _evaluator(net, data, batch_size, img_size, workers, device)
    before = evaluate(net)
    tqdm.write(f"unpruned: {metric} {before:.4f}")
    search = _Search(pruner, evaluate, before, max_drop, metric)
    search.run(sorted(tolerances), progress)
    pruned = net if search.pruned is None else search.pruned
    plans, after = search.plans, search.score
    cost_before = model_cost(net, shape, batch_size=batch_size)
    cost_after = model_cost(pruned, shape, batch_size=batch_size)
    report = PruneReport(out, metric, before, after, cost_before, cost_after, plans, search.tried)
    summary = {
        "model": model if isinstance(model, str) else type(model).__name__, "data": str(data), "metric": metric,
        "max_drop": max_drop, "before": {metric: before, **dataclasses.asdict(cost_before)},
        "after": {metric: after, **dataclasses.asdict(cost_after)}, "evaluations": search.tried,
        "layers": [{"name": p.name, "kind": p.kind, "change": p.change, "error": p.error,
                    "tolerance": search.assigned[p.name], "params_before": p.params_before,
                    "params_after": p.params_after} for p in plans],
    }

    def fill(folder: Path) -> None:
        save_task_model(pruned, folder, metrics={metric: after}, dataset=Path(data).resolve().name)
        atomic_write_text(folder / REPORT, json.dumps(summary, indent=2) + "\n")
        _check_reload(folder, pruned, shape)

    out.parent.mkdir(parents=True, exist_ok=True)
    replace_folder(out, fill)
    return report
