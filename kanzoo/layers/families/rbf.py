"""RBF KAN convolutions (``fastkan``, FastKAN): Gaussians at uniform centres."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..basis import weighted_sum
from ..bottleneck import BottleneckKANConvBase
from ..conv import KANConvBase
from ..registry import register_family
from .grid import uniform_grid

__all__ = ["FastKANConv", "FastKANConv1d", "FastKANConv2d", "FastKANConv3d", "BottleneckFastKANConv1d",
           "BottleneckFastKANConv2d", "BottleneckFastKANConv3d"]


@register_family("fastkan", aliases=("rbf",), bench_kwargs={"grid_size": 8})
class FastKANConv(KANConvBase):
    """RBF KAN convolution (FastKAN): Gaussians ``exp(-((x - mu_i) / h)^2)`` at uniform centres."""

    def __init__(self, *args: Any, grid_size: int = 8, grid_range: Sequence[float] = (-2.0, 2.0),
                 **kwargs: Any) -> None:
        if grid_size < 2:
            raise ValueError(f"grid_size must be at least 2 for RBF centres, got {grid_size}")
        self.grid_size, self.grid_range = grid_size, tuple(grid_range)
        super().__init__(*args, **kwargs)

    def create_basis_parameters(self, factory: dict[str, Any]) -> None:
        centres = uniform_grid(self.grid_range, self.grid_size - 1, 0)
        self.register_buffer("centres", centres.to(self.weight.device, self.weight.dtype), persistent=False)
        self.inv_width = (self.grid_size - 1) / (self.grid_range[1] - self.grid_range[0])

    @property
    def num_bases(self) -> int:
        return self.grid_size

    def basis_from(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return [torch.exp(-((x - centre) * self.inv_width).square()) for centre in self.centres.to(x.dtype)]

    def basis_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]):
        zs = [(x - centre) * self.inv_width for centre in self.centres.to(x.dtype)]
        bases = [torch.exp(-z.square()) for z in zs]
        # d/dx exp(-z^2) = -2 z exp(-z^2) * inv_width
        return bases, lambda grad: (weighted_sum(grad, [z * b for z, b in zip(zs, bases)]).mul_(-2 * self.inv_width),)

    def family_repr(self) -> str:
        return f"grid_size={self.grid_size}, grid_range={self.grid_range}"


class FastKANConv1d(FastKANConv):
    ndim = 1


class FastKANConv2d(FastKANConv):
    ndim = 2


class FastKANConv3d(FastKANConv):
    ndim = 3


class BottleneckFastKANConv1d(BottleneckKANConvBase):
    kan_conv = FastKANConv1d


class BottleneckFastKANConv2d(BottleneckKANConvBase):
    kan_conv = FastKANConv2d


class BottleneckFastKANConv3d(BottleneckKANConvBase):
    kan_conv = FastKANConv3d
