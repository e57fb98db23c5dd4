"""Bottleneck KAN convolutions: 1x1 down to an inner width, a KAN convolution there, 1x1 back up.

A plain convolution over ``base_activation(x)`` at full width runs beside the KAN branch (the base
branch), so the layer is ``act(norm(base_conv(silu(x)) + up(kan(down(x)))))``. The KAN convolution
carries the stride, padding and dilation; every projection is grouped, so each group keeps its own
weights end to end.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from .conv import KANConvBase, check_channels, check_conv_input, signature_with_family_arguments
from .helpers import ActSpec, NormSpec, create_act, create_norm
from .registry import add_bottleneck

__all__ = ["BottleneckKANConvBase", "bottleneck_width"]

_PLAIN_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def bottleneck_width(in_per_group: int, out_per_group: int, dim_reduction: float, min_internal: int) -> int:
    """Inner width per group: ``max(in, out) / dim_reduction``, raised to ``min(min_internal, in, out)``."""
    inner = int(max(in_per_group, out_per_group) / dim_reduction)
    if inner < min_internal:
        inner = min(min_internal, in_per_group, out_per_group)
    return inner


class BottleneckKANConvBase(nn.Module):
    """Shared machinery of the bottleneck variants; subclasses set ``kan_conv`` (a KAN conv class) and
    register as that family's bottleneck variant when they are defined."""

    kan_conv: ClassVar[type[KANConvBase]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kan_conv" in cls.__dict__:
            if cls.__doc__ is None:
                cls.__doc__ = (f"Bottleneck variant of :class:`{cls.kan_conv.__name__}`: 1x1 down, KAN conv, 1x1 up, "
                               "plus a full-width base convolution over ``base_activation(x)``.")
            cls.__signature__ = signature_with_family_arguments(BottleneckKANConvBase.__init__, cls.kan_conv)
            add_bottleneck(cls.kan_conv.family, cls.kan_conv.ndim, cls)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dim_reduction: float = 8.0,
        min_internal: int = 16,
        base_activation: ActSpec = "silu",
        norm_layer: NormSpec = None,
        act_layer: ActSpec = None,
        dropout: float = 0.0,
        recompute: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **family_kwargs: Any,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels, groups)
        if dim_reduction <= 0:
            raise ValueError(f"dim_reduction must be positive, got {dim_reduction}")
        ndim = self.kan_conv.ndim
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        inner = bottleneck_width(in_channels // groups, out_channels // groups, dim_reduction, min_internal)
        self.inner_channels = inner * groups
        plain = _PLAIN_CONVS[ndim]
        self.kan = self.kan_conv(self.inner_channels, self.inner_channels, kernel_size, stride, padding, dilation,
                                 groups, False, padding_mode, base_activation=None, dropout=dropout,
                                 recompute=recompute, **factory, **family_kwargs)
        self.inner_proj = plain(in_channels, self.inner_channels, 1, groups=groups, bias=False, **factory)
        self.out_proj = plain(self.inner_channels, out_channels, 1, groups=groups, bias=bias, **factory)
        self.base_activation = None if base_activation is None else create_act(base_activation)
        self.base_conv = None
        if self.base_activation is not None:
            self.base_conv = plain(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                                   False, padding_mode, **factory)
        self.norm = create_norm(norm_layer, out_channels, ndim).to(**factory)
        self.act = create_act(act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_conv_input(x, self.kan.ndim, self.in_channels, type(self).__name__)
        unbatched = x.dim() == self.kan.ndim + 1
        if unbatched:
            x = x.unsqueeze(0)
        y = self.out_proj(self.kan(self.inner_proj(x)))
        if self.base_conv is not None:
            y = y + self.base_conv(self.base_activation(x))
        y = self.act(self.norm(y))
        return y.squeeze(0) if unbatched else y

