"""The uniform grid that the B-spline and ReLU-KAN families share."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..conv import KANConvBase


def uniform_grid(grid_range: Sequence[float], cells: int, extend: int) -> torch.Tensor:
    """Knots (float64) of ``cells`` equal cells over ``grid_range``, extended by ``extend`` cells on each side."""
    lo, hi = (float(v) for v in grid_range)
    if not hi > lo:
        raise ValueError(f"grid_range must be increasing, got {tuple(grid_range)}")
    if cells < 1:
        raise ValueError(f"grid_size must be at least 1, got {cells}")
    h = (hi - lo) / cells
    return lo + h * torch.arange(-extend, cells + extend + 1, dtype=torch.float64)


class GridConv(KANConvBase):
    """Families on a uniform grid of ``grid_size`` cells extended by ``spline_order`` cells on each side.

    Subclasses build their grid buffers in ``create_basis_parameters`` from ``knots()``.
    """

    def __init__(self, *args: Any, grid_size: int = 5, spline_order: int = 3,
                 grid_range: Sequence[float] = (-1.0, 1.0), **kwargs: Any) -> None:
        if spline_order < 0:
            raise ValueError(f"spline_order must be non-negative, got {spline_order}")
        self.grid_size, self.spline_order, self.grid_range = grid_size, spline_order, tuple(grid_range)
        super().__init__(*args, **kwargs)

    @property
    def num_bases(self) -> int:
        return self.grid_size + self.spline_order

    @property
    def cell_width(self) -> float:
        """Width ``h`` of one grid cell."""
        return (self.grid_range[1] - self.grid_range[0]) / self.grid_size

    def knots(self) -> torch.Tensor:
        """The extended grid's knots (float64), after checking ``grid_range`` and ``grid_size``."""
        return uniform_grid(self.grid_range, self.grid_size, self.spline_order)

    def family_repr(self) -> str:
        return f"grid_size={self.grid_size}, spline_order={self.spline_order}, grid_range={self.grid_range}"
