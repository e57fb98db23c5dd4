"""ReLU-KAN convolutions (``relukan``): squared products of ReLU ramps, windows on a uniform grid."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..basis import weighted_sum
from ..bottleneck import BottleneckKANConvBase
from ..registry import register_family
from .grid import GridConv

__all__ = ["ReLUKANConv", "ReLUKANConv1d", "ReLUKANConv2d", "ReLUKANConv3d", "BottleneckReLUKANConv1d",
           "BottleneckReLUKANConv2d", "BottleneckReLUKANConv3d"]


@register_family("relukan", aliases=("relu_kan",), bench_kwargs={"grid_size": 5, "spline_order": 3})
class ReLUKANConv(GridConv):
    """ReLU-KAN convolution: ``(relu(e_i - x) * relu(x - s_i))^2 * 16 / (e_i - s_i)^4`` on a uniform grid."""

    def create_basis_parameters(self, factory: dict[str, Any]) -> None:
        starts = self.knots()[: self.num_bases]
        support = (self.spline_order + 1) * self.cell_width
        self.register_buffer("starts", starts.to(self.weight.device, self.weight.dtype), persistent=False)
        self.register_buffer("ends", (starts + support).to(self.weight.device, self.weight.dtype), persistent=False)
        self.norm_const = 16.0 / support ** 4

    def _hats(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        ends, starts = self.ends.to(x.dtype), self.starts.to(x.dtype)
        return [(F.relu(end - x), F.relu(x - start)) for end, start in zip(ends, starts)]

    def basis_from(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return [(falling * rising).square() * self.norm_const for falling, rising in self._hats(x)]

    def basis_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]):
        hats = self._hats(x)
        products = [falling * rising for falling, rising in hats]
        bases = [product.square() * self.norm_const for product in products]

        def vjp(grad: torch.Tensor) -> tuple[torch.Tensor]:
            # where the product is non-zero, d(product)/dx = falling' rising + falling rising' = falling - rising
            slopes = [product * (falling - rising) for product, (falling, rising) in zip(products, hats)]
            return (weighted_sum(grad, slopes).mul_(2 * self.norm_const),)

        return bases, vjp


class ReLUKANConv1d(ReLUKANConv):
    ndim = 1


class ReLUKANConv2d(ReLUKANConv):
    ndim = 2


class ReLUKANConv3d(ReLUKANConv):
    ndim = 3


class BottleneckReLUKANConv1d(BottleneckKANConvBase):
    kan_conv = ReLUKANConv1d


class BottleneckReLUKANConv2d(BottleneckKANConvBase):
    kan_conv = ReLUKANConv2d


class BottleneckReLUKANConv3d(BottleneckKANConvBase):
    kan_conv = ReLUKANConv3d
