"""The learned univariate functions of a KAN convolution, evaluated on given inputs.

An edge of a KAN conv is one (output channel ``o``, input channel ``c``, kernel tap ``i``); its function is
``phi[o, c, i](t) = w_base[o, c, i] * base_activation(t) + sum_k w[o, c, k, i] * B_k(t)``, where the bases
``B_k`` of input channel ``c`` may have learned parameters of that channel (a wavelet's shift and scale).
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from ..layers import KANConvBase

__all__ = ["channel_functions", "edge_function", "edge_functions", "kan_layers", "responses", "weight_view"]


def kan_layers(model: nn.Module, pattern: str | None = None) -> list[tuple[str, KANConvBase]]:
    """Every KAN convolution of ``model`` (bottlenecks' inner ones included) in module order, as ``(name, layer)``;
    ``pattern`` keeps the names that match it (shell-style wildcards: ``'layer1.*'``, ``'*conv2'``)."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, KANConvBase) and (pattern is None or fnmatch.fnmatchcase(name, pattern))]


def _per_channel(layer: KANConvBase, t: torch.Tensor) -> torch.Tensor:
    """``t`` as ``(in_channels, T)``: a 1-D tensor is broadcast over the channels."""
    if t.dim() == 1:
        return t.unsqueeze(0).expand(layer.in_channels, -1)
    if t.dim() != 2 or t.shape[0] != layer.in_channels:
        raise ValueError(f"t must be 1-D (the same inputs for every channel) or (in_channels={layer.in_channels}, T), "
                         f"got shape {tuple(t.shape)}")
    return t


def responses(layer: KANConvBase, t: torch.Tensor) -> torch.Tensor:
    """The responses of every input channel at inputs ``t`` (1-D, or one row per channel), in float64:
    ``(in_channels, num_responses, T)``, the base branch first (when the layer has one), then the ``K`` bases."""
    if not t.is_floating_point():
        raise TypeError(f"t must be a floating point tensor, got dtype {t.dtype}")
    values = _per_channel(layer, t).detach().to(torch.float64)
    channels, length = values.shape
    x = values.reshape(1, channels, length, *([1] * (layer.ndim - 1)))
    with torch.no_grad():
        params = tuple(p.detach() for p in layer.basis_parameters())
        bases = layer.basis(x, *params)
        parts = [bases] if isinstance(bases, torch.Tensor) else [torch.stack(list(bases), 2)]
        if layer.base_activation is not None:
            parts.insert(0, layer.base_activation(x).unsqueeze(2))
        out = torch.cat(parts, 2)
    return out.reshape(channels, layer.num_responses, length)


def weight_view(layer: KANConvBase) -> torch.Tensor:
    """The fused weight as ``(out_channels, in_channels / groups, num_responses, *kernel_size)`` (a view)."""
    return layer.weight.view(layer.out_channels, layer.in_channels // layer.groups, layer.num_responses,
                             *layer.kernel_size)


def edge_functions(layer: KANConvBase, t: torch.Tensor, *, sum_taps: bool = False) -> torch.Tensor:
    """``phi[o, c, i](t)`` for every edge: ``(out_channels, in_channels / groups, *kernel_size, len(t))``, base
    branch included; ``t`` is 1-D or ``(in_channels, T)`` (inputs per channel). ``c`` is the input channel within
    the output's group. With ``sum_taps`` the per-(output, input channel) view summed over the kernel taps,
    ``(out_channels, in_channels / groups, len(t))``. The result has the layer's dtype."""
    per_group_in = layer.in_channels // layer.groups
    values = responses(layer, t).view(layer.groups, per_group_in, layer.num_responses, -1)
    weight = weight_view(layer).detach().to(torch.float64)
    taps = weight.shape[3:]
    weight = weight.reshape(layer.groups, layer.out_channels // layer.groups, per_group_in, layer.num_responses, -1)
    if sum_taps:
        phi = torch.einsum("gocr,gcrt->goct", weight.sum(-1), values)
        return phi.reshape(layer.out_channels, per_group_in, -1).to(layer.weight.dtype)
    phi = torch.einsum("gocrk,gcrt->gockt", weight, values)
    return phi.reshape(layer.out_channels, per_group_in, *taps, -1).to(layer.weight.dtype)


def channel_functions(layer: KANConvBase, t: torch.Tensor) -> torch.Tensor:
    """The per-(output, input channel) view: ``sum_i phi[o, c, i](t)``, ``(out_channels, in_channels / groups, T)``."""
    return edge_functions(layer, t, sum_taps=True)


def edge_function(layer: KANConvBase, output: int, channel: int, tap: tuple[int, ...], t: torch.Tensor
                  ) -> torch.Tensor:
    """One edge's function at the 1-D inputs ``t`` (float64): output ``output``, input channel ``channel`` (of the
    whole layer, not of the group), kernel position ``tap``."""
    per_group_in = layer.in_channels // layer.groups
    group_out = output // (layer.out_channels // layer.groups)
    if channel // per_group_in != group_out:
        raise ValueError(f"input channel {channel} is not in the group of output {output} (groups={layer.groups})")
    inputs = torch.zeros(layer.in_channels, len(t), dtype=torch.float64)
    inputs[channel] = t
    values = responses(layer, inputs)[channel]
    weight = weight_view(layer)[(output, channel % per_group_in, slice(None), *tap)].detach().to(torch.float64)
    return weight @ values
