"""Structured pruning of KAN convolutions that makes a model cheaper for real: smaller layers, not zeros.

Given the inputs each layer saw (:func:`~kanzoo.inspect.statistics.collect_statistics`), a layer may become

- a **plain convolution** when its edges are nearly linear: every edge ``phi`` refitted as ``a t + b``;
- a **lower degree** (fewer grid cells or wavelets) when its top bases carry little: the edges refitted on the
  smaller basis;
- a :class:`~kanzoo.layers.partial.PartialKANConv` in which the **input channels whose functions are nearly
  their base branch keep only that branch**: those channels' edges refitted as ``a * base_activation(t) + b``.

Refits are least squares over each input channel's observed inputs (its sample), so they are exact where the
removed part was exactly representable (e.g. zero basis weights) and close where the channel's data lives.
Constants ``b`` go into the bias (exact except at borders padded with zeros). The error of a change is the mean
squared change of the edges' functions over the observed inputs, relative to the sum of their variances (the
denominator of the layer's nonlinearity); :meth:`Pruner.plan` picks, for a tolerance, the cheapest form of
every layer whose error stays within it. Choosing the tolerance against a metric on data is the task's job
(``kanzoo prune``, ``kanzoo.tasks.prune``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..layers import KANConvBase
from ..layers.partial import PartialKANConv, family_arguments, smaller_kan_conv
from ..models.pruned import PruningRecord
from .functions import responses, weight_view
from .statistics import LayerStatistics, edge_quadratic

__all__ = ["LayerPlan", "Pruner", "prune_model"]

_CAPACITY_ARGUMENTS = ("degree", "grid_size", "num_wavelets")
_PLAIN = {"kan_channels": [], "linear_activation": "identity"}


@dataclasses.dataclass
class LayerPlan:
    """What one layer becomes: ``change`` (an entry of a pruning stage, see :mod:`kanzoo.models.pruned`), its
    relative error and the layer's weights before and after."""

    name: str
    change: dict[str, Any]
    error: float
    params_before: int
    params_after: int

    @property
    def kind(self) -> str:
        """``'plain'``, ``'partial'`` (some channels keep only their base branch) or ``'smaller'`` (fewer bases)."""
        if self.change.get("linear_activation") == "identity" or self.change.get("kan_channels") == []:
            return "plain"
        return "partial" if "kan_channels" in self.change else "smaller"


def _fit(values: torch.Tensor, design: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares of every response row on the design rows, per channel: coefficients ``(C, P, R)`` and the
    second moment of the residuals ``(C, R, R)`` (``values`` ``(C, R, S)``, ``design`` ``(C, P, S)``)."""
    count = values.shape[-1]
    gram = design @ design.transpose(1, 2) / count
    ridge = 1e-10 * gram.diagonal(dim1=1, dim2=2).mean(-1, keepdim=True).clamp(min=1e-30)
    gram = gram + torch.diag_embed(ridge.expand(-1, gram.shape[-1]))
    coefficients = torch.linalg.solve(gram, design @ values.transpose(1, 2) / count)
    residual = values - coefficients.transpose(1, 2) @ design
    return coefficients, residual @ residual.transpose(1, 2) / count


def _per_channel(layer: KANConvBase, edges: torch.Tensor) -> torch.Tensor:
    """Sum ``(O, C / groups, *k)`` over outputs and taps, per input channel of the layer: ``(in_channels,)``."""
    groups = layer.groups
    summed = edges.reshape(groups, layer.out_channels // groups, layer.in_channels // groups, -1).sum((1, 3))
    return summed.reshape(-1)


def _apply_coefficients(layer: KANConvBase, weight: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """New weights ``(O, C / groups, P, *k)`` of the design's rows: ``sum_r weight[o, c, r, i] coefficients[c, p, r]``
    (``weight`` ``(O, C / groups, R, *k)``, ``coefficients`` ``(in_channels, P, R)``)."""
    groups, per_group_in = layer.groups, layer.in_channels // layer.groups
    grouped = weight.reshape(groups, layer.out_channels // groups, per_group_in, weight.shape[2], -1)
    per_channel = coefficients.reshape(groups, per_group_in, *coefficients.shape[1:])
    new = torch.einsum("gocrk,gcpr->gocpk", grouped, per_channel)
    return new.reshape(layer.out_channels, per_group_in, coefficients.shape[1], *weight.shape[3:])


def _base(layer: KANConvBase) -> nn.Module:
    return layer.base_activation if layer.base_activation is not None else nn.Identity()


@dataclasses.dataclass
class _Variant:
    overrides: dict[str, int]
    num_responses: int
    errors: torch.Tensor  # (in_channels,) squared change per channel when the layer takes this basis


class _Candidates:
    """Everything :class:`Pruner` needs to plan one layer: the errors of each change, per input channel."""

    def __init__(self, name: str, layer: KANConvBase, stats: LayerStatistics) -> None:
        self.name, self.layer = name, layer
        self.samples = stats.samples.to(torch.float64)
        values = responses(layer, self.samples)
        self.weight = weight_view(layer).detach().to(torch.float64)
        centred = values - values.mean(-1, keepdim=True)
        self.total = float(edge_quadratic(layer, centred @ centred.transpose(1, 2) / values.shape[-1]).sum())
        # the base branch is in every design below but the plain one, so only the bases' part is refitted: a
        # change is exact where the bases' weights are zero
        self.offset = layer.num_responses - layer.num_bases
        bases, basis_weight = values[:, self.offset:], self.weight[:, :, self.offset:]
        ones = torch.ones_like(self.samples)
        _, moment = _fit(bases, torch.stack([_base(layer)(self.samples), ones], 1))
        self.drop_errors = _per_channel(layer, edge_quadratic(layer, moment, basis_weight))
        self.identity_base = isinstance(_base(layer), nn.Identity)
        self.plain_error = None
        if not self.identity_base:
            _, moment = _fit(values, torch.stack([self.samples, ones], 1))
            self.plain_error = float(edge_quadratic(layer, moment).sum())
        self.variants = [_Variant({}, layer.num_responses, torch.zeros(layer.in_channels, dtype=torch.float64))]
        for overrides in self._smaller_bases():
            smaller = smaller_kan_conv(layer, **overrides)
            _, moment = _fit(bases, responses(smaller, self.samples))
            errors = _per_channel(layer, edge_quadratic(layer, moment, basis_weight))
            self.variants.append(_Variant(overrides, smaller.num_responses, errors))

    def _smaller_bases(self) -> list[dict[str, int]]:
        arguments = family_arguments(self.layer)
        name = next((key for key in _CAPACITY_ARGUMENTS if isinstance(arguments.get(key), int)), None)
        found = []
        for value in range(arguments[name] - 1, -1, -1) if name else ():
            try:
                smaller_kan_conv(self.layer, **{name: value})
            except ValueError:
                break
            found.append({name: value})
        return found

    @property
    def params(self) -> int:
        return self.layer.weight.numel()

    def _partial_params(self, variant: _Variant, kept: torch.Tensor) -> int:
        layer = self.layer
        taps = self.weight[0, 0, 0].numel()
        per_group_out = layer.out_channels // layer.groups
        bases = variant.num_responses - (layer.base_activation is not None)
        return (layer.out_channels * (layer.in_channels // layer.groups) * taps + layer.out_channels
                + int(kept.sum()) * per_group_out * bases * taps)

    def _equalise(self, kept: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        """Keep the same number of channels in every group that keeps any (adding back the costliest drops)."""
        groups = self.layer.groups
        if groups == 1:
            return kept
        kept = kept.view(groups, -1).clone()
        target = int(kept.sum(1).max())
        order = gain.view(groups, -1).argsort(dim=1, descending=True)
        for g in range(groups):
            for c in order[g].tolist():
                if int(kept[g].sum()) in (0, target):
                    break
                kept[g, c] = True
        return kept.view(-1)

    def plan(self, tolerance: float) -> LayerPlan | None:
        """The cheapest change whose error is within ``tolerance`` of the edges' variance (None: none is cheaper)."""
        budget = tolerance * max(self.total, 0.0)
        best: tuple[int, float, dict[str, Any]] | None = None
        if self.plain_error is not None and self.plain_error <= budget:
            layer = self.layer
            plain = layer.out_channels * (layer.in_channels // layer.groups) * self.weight[0, 0, 0].numel()
            best = (plain + layer.out_channels, self.plain_error, dict(_PLAIN))
        for variant in self.variants:
            if float(variant.errors.sum()) > budget:
                continue
            gain = self.drop_errors - variant.errors
            kept = torch.ones(self.layer.in_channels, dtype=torch.bool)
            error = float(variant.errors.sum())
            for channel in gain.argsort().tolist():
                if error + float(gain[channel]) > budget:
                    break
                kept[channel] = False
                error += float(gain[channel])
            kept = self._equalise(kept, gain)
            error = float(variant.errors[kept].sum() + self.drop_errors[~kept].sum())
            if bool(kept.all()):
                if not variant.overrides:
                    continue
                params = variant.num_responses * self.params // self.layer.num_responses
                change: dict[str, Any] = dict(variant.overrides)
            else:
                params = self._partial_params(variant, kept)
                overrides = variant.overrides if kept.any() else {}  # with no channel kept, no basis is left
                change = {"kan_channels": kept.nonzero().flatten().tolist(), **overrides}
            if best is None or params < best[0]:
                best = (params, error, change)
        if best is None or best[0] >= self.params:
            return None
        params, error, change = best
        return LayerPlan(self.name, change, error / self.total if self.total > 0 else 0.0, self.params, params)

    def build(self, change: dict[str, Any]) -> nn.Module:
        """The pruned layer for ``change``, with its weights refitted on the observed inputs."""
        layer, samples = self.layer, self.samples
        values = responses(layer, samples)
        ones = torch.ones_like(samples)
        if change.get("linear_activation") == "identity":
            coefficients, _ = _fit(values, torch.stack([samples, ones], 1))
            fitted = _apply_coefficients(layer, self.weight, coefficients)
            module = PartialKANConv(layer, [], linear_activation="identity")
            with torch.no_grad():
                module.linear.weight.copy_(fitted[:, :, 0])
                module.linear.bias.add_(fitted[:, :, 1].flatten(1).sum(1).to(module.linear.bias.dtype))
            return module
        offset, overrides = self.offset, {k: v for k, v in change.items() if k != "kan_channels"}
        source = copy.deepcopy(layer) if not overrides else smaller_kan_conv(layer, **overrides)
        if overrides:
            coefficients, _ = _fit(values[:, offset:], responses(source, samples))
            refitted = _apply_coefficients(layer, self.weight[:, :, offset:], coefficients)
            if offset:
                refitted[:, :, 0] += self.weight[:, :, 0]
            with torch.no_grad():
                weight_view(source).copy_(refitted)
        if "kan_channels" not in change:
            return source
        kept = torch.zeros(layer.in_channels, dtype=torch.bool)
        kept[change["kan_channels"]] = True
        module = PartialKANConv(source, change["kan_channels"])
        coefficients, _ = _fit(values[:, offset:], torch.stack([_base(layer)(samples), ones], 1))
        fitted = _apply_coefficients(layer, self.weight[:, :, offset:], coefficients)
        base = self.weight[:, :, 0] if offset else torch.zeros_like(fitted[:, :, 0])
        dropped = (~kept).view(layer.groups, 1, -1).expand(-1, layer.out_channels // layer.groups, -1)
        dropped = dropped.reshape(layer.out_channels, -1, *([1] * layer.ndim))
        with torch.no_grad():
            current = module.linear.weight.to(torch.float64)
            module.linear.weight.copy_(torch.where(dropped, base + fitted[:, :, 0], current))
            intercepts = torch.where(dropped, fitted[:, :, 1], 0.0).flatten(1).sum(1)
            module.linear.bias.add_(intercepts.to(module.linear.bias.dtype))
        return module


class Pruner:
    """Plans and applies the pruning of a model's KAN convs from the statistics of their inputs."""

    def __init__(self, model: nn.Module, statistics: dict[str, LayerStatistics], progress: bool | None = False
                 ) -> None:
        self.model = model
        modules = dict(model.named_modules())
        self.candidates = {}
        for name, stats in tqdm(statistics.items(), desc="fits", leave=False,
                                disable=None if progress is None else not progress):
            if modules.get(name) is not stats.layer:
                raise ValueError(f"the statistics of {name!r} were not collected on this model")
            self.candidates[name] = _Candidates(name, stats.layer, stats)
        self._built: dict[tuple[str, str], nn.Module] = {}

    def plan(self, tolerance: float | dict[str, float]) -> list[LayerPlan]:
        """The change of every layer that gets cheaper within ``tolerance`` (a relative error, e.g. 0.01), one for
        every layer or ``{layer name: tolerance}`` (layers not named stay as they are)."""
        tolerances = tolerance if isinstance(tolerance, dict) else dict.fromkeys(self.candidates, tolerance)
        if any(not value >= 0 for value in tolerances.values()):
            raise ValueError(f"tolerances must be >= 0, got {tolerance}")
        unknown = sorted(set(tolerances) - set(self.candidates))
        if unknown:
            raise ValueError(f"no statistics for the layers {unknown}")
        plans = (self.candidates[name].plan(value) for name, value in tolerances.items())
        return [plan for plan in plans if plan is not None]

    def apply(self, plans: list[LayerPlan]) -> nn.Module:
        """A pruned copy of the model (the original is not changed), with its ``pruning_record``."""
        pruned = copy.deepcopy(self.model)
        for plan in plans:
            key = (plan.name, json.dumps(plan.change, sort_keys=True))
            if key not in self._built:
                self._built[key] = self.candidates[plan.name].build(plan.change)
            parent, _, child = plan.name.rpartition(".")
            setattr(pruned.get_submodule(parent), child, copy.deepcopy(self._built[key]))
        record = getattr(self.model, "pruning_record", None)
        stages = list(record.stages) if isinstance(record, PruningRecord) else []
        if plans:
            stages.append({plan.name: plan.change for plan in plans})
        pruned.pruning_record = PruningRecord(stages)
        return pruned


def prune_model(model: nn.Module, statistics: dict[str, LayerStatistics], tolerance: float
                ) -> tuple[nn.Module, list[LayerPlan]]:
    """Prune ``model`` at one ``tolerance``: the pruned copy and the plans applied (see :class:`Pruner`)."""
    pruner = Pruner(model, statistics)
    plans = pruner.plan(tolerance)
    return pruner.apply(plans), plans
