"""Smaller forms of a KAN convolution, which pruning produces: fewer bases, and bases on only some input channels.

:func:`smaller_kan_conv` rebuilds a layer with smaller family arguments (a lower ``degree``, fewer grid cells
or wavelets). :class:`PartialKANConv` keeps the bases of only some input channels:

``y = act(norm(linear(base_activation(x)) + kan(x[:, kept])))``

``linear`` is one plain convolution over every channel's base branch (``w_base * base_activation(t)``), and
``kan`` a KAN convolution of the same family, without base branch, over the kept channels only. With groups,
every group that keeps channels keeps the same number of them; ``kan`` is grouped over those groups and its
outputs are added to their output channels. With no channel kept the layer is a plain convolution followed
by the layer's norm and activation. Both compute with smaller weights and a smaller expansion, so they cost
fewer parameters, FLOPs and time than the layer they came from. Without gradients (inference, export) a
``PartialKANConv`` runs as one convolution over every group's base responses and its kept channels' bases.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .conv import KANConvBase, check_conv_input
from .helpers import create_act

__all__ = ["PartialKANConv", "family_arguments", "smaller_kan_conv"]

_PLAIN_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def family_arguments(layer: KANConvBase) -> dict[str, Any]:
    """The family's own constructor arguments of ``layer`` (``degree``, ``grid_size``...), read from its attributes."""
    cls = type(layer)
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__[: cls.__mro__.index(KANConvBase)]):
        init = klass.__dict__.get("__init__")
        if init is not None:
            names.update((p.name, None) for p in inspect.signature(init).parameters.values()
                         if p.kind is p.KEYWORD_ONLY)
    missing = [name for name in names if not hasattr(layer, name)]
    if missing:
        raise TypeError(f"{cls.__name__} does not keep its family arguments {missing} as attributes; a family must "
                        "store every argument it takes under the argument's name")
    return {name: getattr(layer, name) for name in names}


def _check_overrides(layer: KANConvBase, overrides: dict[str, Any]) -> dict[str, Any]:
    """The layer's family arguments with ``overrides``, which may only lower integer arguments."""
    arguments = family_arguments(layer)
    for key, value in overrides.items():
        current = arguments.get(key)
        if not isinstance(current, int) or isinstance(current, bool):
            raise ValueError(f"{key!r} is not an integer argument of {type(layer).__name__} (its family arguments: "
                             f"{arguments}); only the size of a basis (degree, grid_size, num_wavelets) can shrink")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= current:
            raise ValueError(f"{key}={value!r} cannot replace {key}={current} of {type(layer).__name__}: give an "
                             f"integer from 0 to {current}")
    return {**arguments, **overrides}


def _build_like(layer: KANConvBase, in_channels: int, out_channels: int, groups: int, bias: bool,
                base_activation: nn.Module | None, arguments: dict[str, Any]) -> KANConvBase:
    return type(layer)(in_channels, out_channels, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                       groups, bias, layer.padding_mode, base_activation=copy.deepcopy(base_activation),
                       recompute=layer.recompute, device=layer.weight.device, dtype=layer.weight.dtype, **arguments)


def _copy_leading(target: torch.Tensor, source: torch.Tensor) -> None:
    """Copy the leading part of ``source`` that fits ``target`` (smaller or equal in every dimension)."""
    target.copy_(source[tuple(slice(0, size) for size in target.shape)])


def _weight_view(layer: KANConvBase) -> torch.Tensor:
    return layer.weight.view(layer.out_channels, layer.in_channels // layer.groups, layer.num_responses,
                             *layer.kernel_size)


def smaller_kan_conv(layer: KANConvBase, **overrides: int) -> KANConvBase:
    """A copy of ``layer`` with smaller family arguments (e.g. ``degree=2``): the same convolution, bias, norm,
    activation and dropout, the base weights, and the leading basis weights and basis parameters that fit."""
    arguments = _check_overrides(layer, overrides)
    smaller = _build_like(layer, layer.in_channels, layer.out_channels, layer.groups, layer.bias is not None,
                          layer.base_activation, arguments)
    smaller.norm, smaller.act = copy.deepcopy(layer.norm), copy.deepcopy(layer.act)
    smaller.dropout = copy.deepcopy(layer.dropout)
    smaller.train(layer.training)
    with torch.no_grad():
        _copy_leading(_weight_view(smaller), _weight_view(layer))
        if layer.bias is not None:
            smaller.bias.copy_(layer.bias)
        old = dict(layer.named_parameters(recurse=False))
        for name, param in smaller.named_parameters(recurse=False):
            if name not in ("weight", "bias"):
                _copy_leading(param, old[name])
    return smaller


class PartialKANConv(nn.Module):
    """A KAN convolution whose bases act on ``kan_channels`` only; every input channel keeps its base branch.

    Built from ``layer``: the base weights become ``linear``'s weight (zero without a base branch), the kept
    channels' basis weights and basis parameters ``kan``'s (the leading ones when ``family_overrides`` shrink the
    basis). ``linear_activation`` replaces the base activation (``'identity'`` for a plain convolution).
    ``linear`` always has a bias (the layer's, or zero), where pruning puts the constant parts of what it removes.
    """

    def __init__(self, layer: KANConvBase, kan_channels: Sequence[int], *, linear_activation: str | None = None,
                 **family_overrides: int) -> None:
        super().__init__()
        if not isinstance(layer, KANConvBase):
            raise TypeError(f"PartialKANConv is built from a KAN convolution, got {type(layer).__name__}")
        arguments = _check_overrides(layer, family_overrides)
        self.ndim, self.family = layer.ndim, layer.family
        self.in_channels, self.out_channels, self.groups = layer.in_channels, layer.out_channels, layer.groups
        self.kernel_size, self.stride, self.padding = layer.kernel_size, layer.stride, layer.padding
        self.dilation, self.padding_mode = layer.dilation, layer.padding_mode
        kept, active = self._check_channels(kan_channels)
        self.kan_channels = kept
        if linear_activation is None:
            base = layer.base_activation if layer.base_activation is not None else nn.Identity()
        else:
            base = create_act(linear_activation)
        self.base_activation = copy.deepcopy(base)
        factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
        self.linear = _PLAIN_CONVS[self.ndim](self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                              self.padding, self.dilation, self.groups, True, self.padding_mode,
                                              **factory)
        per_group_in, per_group_out = self.in_channels // self.groups, self.out_channels // self.groups
        out_index = [g * per_group_out + j for g in active for j in range(per_group_out)]
        self.kan = None
        if kept:
            self.kan = _build_like(layer, len(kept), len(out_index), len(active), False, None, arguments)
        self.register_buffer("kan_index", torch.tensor(kept, dtype=torch.long, device=factory["device"]),
                             persistent=False)
        self.register_buffer("out_index", torch.tensor(out_index, dtype=torch.long, device=factory["device"]),
                             persistent=False)
        self.every_group = len(active) == self.groups
        self.dropout, self.norm = copy.deepcopy(layer.dropout), copy.deepcopy(layer.norm)
        self.act = copy.deepcopy(layer.act)
        with torch.no_grad():
            self._copy_weights(layer, linear_activation is None, per_group_in)
        self.train(layer.training)

    def _check_channels(self, kan_channels: Sequence[int]) -> tuple[tuple[int, ...], list[int]]:
        """Sorted kept channels and the groups that keep any; every such group must keep the same number."""
        channels = list(kan_channels)
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in channels):
            raise ValueError(f"kan_channels must be input channel indices (integers), got {kan_channels!r}")
        if len(set(channels)) != len(channels) or any(not 0 <= c < self.in_channels for c in channels):
            raise ValueError(f"kan_channels must be distinct input channels from 0 to {self.in_channels - 1}, got "
                             f"{sorted(channels)}")
        per_group = self.in_channels // self.groups
        counts: dict[int, int] = {}
        for c in channels:
            counts[c // per_group] = counts.get(c // per_group, 0) + 1
        if len(set(counts.values())) > 1:
            raise ValueError(f"with groups={self.groups}, every group that keeps KAN channels must keep the same "
                             f"number of them; kan_channels keep {dict(sorted(counts.items()))} per group")
        return tuple(sorted(channels)), sorted(counts)

    def _copy_weights(self, layer: KANConvBase, keep_base: bool, per_group_in: int) -> None:
        base_weight = layer.base_weight
        if keep_base and base_weight is not None:
            self.linear.weight.copy_(base_weight)
        else:
            self.linear.weight.zero_()
        if layer.bias is not None:
            self.linear.bias.copy_(layer.bias)
        else:
            self.linear.bias.zero_()
        if self.kan is None:
            return
        per_group_out = self.out_channels // self.groups
        bases = _weight_view(layer)[self.out_index, :, layer.num_responses - layer.num_bases:]
        local = self.kan_index.view(len(self.out_index) // per_group_out, -1) % per_group_in  # (groups kept, k)
        rows = local.repeat_interleave(per_group_out, dim=0)
        index = rows.view(*rows.shape, *[1] * (bases.dim() - 2)).expand(-1, -1, *bases.shape[2:])
        _copy_leading(_weight_view(self.kan), bases.gather(1, index))
        old = dict(layer.named_parameters(recurse=False))
        for name, param in self.kan.named_parameters(recurse=False):
            if name == "weight":
                continue
            source = old[name]
            if name in type(layer).channel_parameters:
                source = source.index_select(0, self.kan_index)
            _copy_leading(param, source)

    @property
    def num_kan_channels(self) -> int:
        """How many input channels keep their bases."""
        return len(self.kan_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_conv_input(x, self.ndim, self.in_channels, type(self).__name__)
        unbatched = x.dim() == self.ndim + 1
        if unbatched:
            x = x.unsqueeze(0)
        x = self.dropout(x)
        kan = self.kan
        if kan is not None and self._one_convolution():
            # one convolution over each group's base responses followed by its kept channels' bases
            expanded = kan.expand(x.index_select(1, self.kan_index), *kan.basis_parameters())
            base = self.base_activation(x)
            joined = torch.cat([base.unflatten(1, (self.groups, -1)), expanded.unflatten(1, (self.groups, -1))], 2)
            weight = torch.cat([self.linear.weight, kan.weight.to(self.linear.weight.dtype)], 1)
            y = _CONV_FUNCTIONS[self.ndim](joined.flatten(1, 2), weight, self.linear.bias, self.stride,
                                          kan._pad_before, self.dilation, self.groups)
        else:
            y = self.linear(self.base_activation(x))
            if kan is not None:
                part = kan(x.index_select(1, self.kan_index))
                y = y + part if self.every_group else y.index_add(1, self.out_index, part.to(y.dtype))
        y = self.act(self.norm(y))
        return y.squeeze(0) if unbatched else y

    def _one_convolution(self) -> bool:
        """Whether the forward can run as one convolution: without gradients (inference, export), with every group
        keeping channels and symmetric zero padding. Otherwise ``linear`` and ``kan`` run apart, ``kan`` with its
        memory-saving backward."""
        kan = self.kan
        return (isinstance(kan, KANConvBase) and not torch.is_grad_enabled() and self.every_group
                and self.padding_mode == "zeros" and kan._pad_before == kan._pad_after)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}")
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + f", family={self.family!r}, kan_channels={self.num_kan_channels}/{self.in_channels}"
