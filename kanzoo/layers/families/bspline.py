"""B-spline KAN convolutions (``kan``): the original KAN's spline basis on a uniform, extended grid."""

from __future__ import annotations

from typing import Any

import torch

from ..basis import weighted_sum
from ..bottleneck import BottleneckKANConvBase
from ..registry import register_family
from .grid import GridConv

__all__ = ["KANConv", "KANConv1d", "KANConv2d", "KANConv3d",
           "BottleneckKANConv1d", "BottleneckKANConv2d", "BottleneckKANConv3d"]


@register_family("kan", aliases=("bspline", "spline"), bench_kwargs={"grid_size": 5, "spline_order": 3})
class KANConv(GridConv):
    """B-spline KAN convolution (the original KAN's spline basis) on a uniform, extended grid."""

    def create_basis_parameters(self, factory: dict[str, Any]) -> None:
        self.register_buffer("grid", self.knots().to(self.weight.device, self.weight.dtype), persistent=False)

    def _pieces(self, x: torch.Tensor, with_derivative: bool):
        """Cell index ``j`` of ``x`` on the extended grid and the ``p + 1`` non-zero spline pieces there.

        On a uniform grid ``B_k(x) = N_p((x - g_k) / h)`` with ``N_p`` the cardinal B-spline, so with
        ``t = (x - g_0) / h = j + f`` only ``B_{j - q}``, ``q = 0..p``, are non-zero and equal
        ``N_p(q + f)``, built by the Cox-de Boor recursion in the local coordinate ``f``. Pieces
        that fall outside the ``K`` bases or outside the grid are zeroed.
        """
        p, h = self.spline_order, self.cell_width
        t = (x - self.grid[0].to(x.dtype)) / h
        cell = torch.floor(t)
        f = t - cell
        pieces: list[torch.Tensor] = [torch.ones_like(f)]
        lower: list[torch.Tensor] = []
        for r in range(1, p + 1):
            lower = pieces
            pieces = [((q + f) * lower[q] if q < r else 0) + ((r + 1 - q - f) * lower[q - 1] if q > 0 else 0)
                      for q in range(r + 1)]
            pieces = [piece / r for piece in pieces]
        j = cell.long()
        inside = (j >= 0) & (j < len(self.grid) - 1)
        index, mask = [], []
        for q in range(p + 1):
            k = j - q
            mask.append((inside & (k >= 0) & (k < self.num_bases)).to(x.dtype))
            index.append(k.clamp(0, self.num_bases - 1).unsqueeze(2))
        derivatives = None
        if with_derivative:
            zero = torch.zeros_like(f)
            padded = [zero, *lower, zero]
            derivatives = [(padded[q + 1] - padded[q]) * (mask[q] / h) for q in range(p + 1)]
        return [piece * m for piece, m in zip(pieces, mask)], index, derivatives

    def _zero_bases(self, x: torch.Tensor) -> torch.Tensor:
        """Zeros ``(N, C, K, *spatial)`` laid out like ``x`` (bases innermost when ``x`` is channels-last)."""
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return x.new_zeros(x.shape[0], *x.shape[2:], x.shape[1], self.num_bases).permute(0, 3, 4, 1, 2)
        return x.new_zeros(*x.shape[:2], self.num_bases, *x.shape[2:])

    def _cox_de_boor(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every basis ``B_k`` of ``x`` and every spline of order ``p - 1`` by the Cox-de Boor recursion over
        the whole grid: pointwise arithmetic only, which a compiler fuses into one loop (used when compiling).

        In grid units ``t = (x - g_0) / h``: ``B^0_k = [k <= t < k + 1]`` and
        ``B^r_k = ((t - k) B^(r-1)_k + (k + r + 1 - t) B^(r-1)_(k+1)) / r``.
        """
        p = self.spline_order
        t = (x - self.grid[0].to(x.dtype)) * (1 / self.cell_width)  # multiplications: vector division is slow
        level = [((t >= k) & (t < k + 1)).to(x.dtype) for k in range(self.num_bases + p)]
        lower = level
        for r in range(1, p + 1):
            lower = level
            level = [((t - k) * lower[k] + (k + r + 1 - t) * lower[k + 1]) * (1 / r) for k in range(len(lower) - 1)]
        return level, lower

    def basis_from(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]) -> torch.Tensor | list[torch.Tensor]:
        if torch.compiler.is_compiling():
            return self._cox_de_boor(x)[0]
        pieces, index, _ = self._pieces(x, with_derivative=False)
        bases = self._zero_bases(x)
        for piece, k in zip(pieces, index):
            bases.scatter_add_(2, k, piece.unsqueeze(2))
        return bases

    def basis_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]):
        if torch.compiler.is_compiling():
            bases, lower = self._cox_de_boor(x)
            if self.spline_order == 0:
                return bases, lambda grad: (torch.zeros_like(x),)
            # d B^p_k / dx = (B^(p-1)_k - B^(p-1)_(k+1)) / h
            slopes = [lower[k] - lower[k + 1] for k in range(len(bases))]
            return bases, lambda grad: (weighted_sum(grad, slopes).mul_(1 / self.cell_width),)
        pieces, index, derivatives = self._pieces(x, with_derivative=True)
        bases = self._zero_bases(x)
        for piece, k in zip(pieces, index):
            bases.scatter_add_(2, k, piece.unsqueeze(2))

        def vjp(grad: torch.Tensor) -> tuple[torch.Tensor]:
            total = grad.gather(2, index[0]).squeeze(2) * derivatives[0]
            for k, d in zip(index[1:], derivatives[1:]):
                total.addcmul_(grad.gather(2, k).squeeze(2), d)
            return (total,)

        return bases, vjp


class KANConv1d(KANConv):
    ndim = 1


class KANConv2d(KANConv):
    ndim = 2


class KANConv3d(KANConv):
    ndim = 3


class BottleneckKANConv1d(BottleneckKANConvBase):
    kan_conv = KANConv1d


class BottleneckKANConv2d(BottleneckKANConvBase):
    kan_conv = KANConv2d


class BottleneckKANConv3d(BottleneckKANConvBase):
    kan_conv = KANConv3d
