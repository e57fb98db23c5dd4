"""Argument parsing shared by every KAN convolution: tuples, padding, norm and activation layers."""

from __future__ import annotations

import collections.abc
from typing import Callable, Union

import torch
from torch import nn

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

NormSpec = Union[None, str, Callable[[int], nn.Module]]
ActSpec = Union[None, str, type, Callable[[], nn.Module]]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def ntuple(value: int | collections.abc.Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    """Expand an int to an ``ndim``-tuple, or check that a sequence has ``ndim`` entries."""
    if isinstance(value, int):
        return (value,) * ndim
    values = tuple(value)
    if len(values) != ndim or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{name} must be an int or a tuple of {ndim} ints, got {value!r}")
    return values


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel dimension of a channels-first tensor (as in ConvNeXt)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


_NORMS: dict[str, dict[int, Callable[[int], nn.Module]]] = {
    "batch": {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    "instance": {
        1: lambda c: nn.InstanceNorm1d(c, affine=True),
        2: lambda c: nn.InstanceNorm2d(c, affine=True),
        3: lambda c: nn.InstanceNorm3d(c, affine=True),
    },
    "layer": {d: ChannelLayerNorm for d in (1, 2, 3)},
    "group": {d: _group_norm for d in (1, 2, 3)},
}


def create_norm(norm_layer: NormSpec, channels: int, ndim: int) -> nn.Module:
    """Build a norm layer from None, a name ('batch', 'instance', 'layer', 'group') or a callable."""
    if norm_layer is None:
        return nn.Identity()
    if isinstance(norm_layer, str):
        key = norm_layer.lower().removesuffix("norm").removesuffix("_")
        if key not in _NORMS:
            raise ValueError(f"unknown norm_layer {norm_layer!r}; use None, one of {sorted(_NORMS)} "
                             "or a callable that takes the channel count")
        return _NORMS[key][ndim](channels)
    if callable(norm_layer):
        return norm_layer(channels)
    raise TypeError(f"norm_layer must be None, a name or a callable, got {type(norm_layer).__name__}")


def create_act(act_layer: ActSpec) -> nn.Module:
    """Build an activation from None, a name ('silu', 'relu', ...), a module class or a module."""
    if act_layer is None:
        return nn.Identity()
    if isinstance(act_layer, nn.Module):
        return act_layer
    if isinstance(act_layer, str):
        key = act_layer.lower()
        if key not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {act_layer!r}; use None, one of {sorted(_ACTIVATIONS)} "
                             "or an nn.Module class")
        return _ACTIVATIONS[key]()
    if callable(act_layer):
        return act_layer()
    raise TypeError(f"act_layer must be None, a name or a module class, got {type(act_layer).__name__}")


def resolve_padding(
    padding: str | int | collections.abc.Sequence[int],
    kernel_size: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Turn ``padding`` into per-dimension (before, after) amounts with ``nn.ConvNd``'s rules and errors."""
    ndim = len(kernel_size)
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"Invalid padding string {padding!r}, should be one of ['same', 'valid']")
        if padding == "valid":
            zeros = (0,) * ndim
            return zeros, zeros
        if any(s != 1 for s in stride):
            raise ValueError("padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
        before = tuple(t // 2 for t in totals)
        after = tuple(t - b for t, b in zip(totals, before))
        return before, after
    amounts = ntuple(padding, ndim, "padding")
    if any(p < 0 for p in amounts):
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return amounts, amounts
