"""Wavelet KAN convolutions (``wavkan``): a bank of wavelets per input channel with learned shift and scale."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from ..bottleneck import BottleneckKANConvBase
from ..conv import KANConvBase
from ..registry import register_family

__all__ = ["WavKANConv", "WavKANConv1d", "WavKANConv2d", "WavKANConv3d", "BottleneckWavKANConv1d",
           "BottleneckWavKANConv2d", "BottleneckWavKANConv3d"]

_WAVELETS = ("mexican_hat", "morlet", "dog")
_MEXICAN_HAT = 2.0 / (math.sqrt(3.0) * math.pi ** 0.25)
# exp(-z^2 / 2) underflows to 0 at |z| = 32 in float32, bfloat16 and float16 (whose z^3 stays below 65504 there),
# and at |z| = 64 in float64
_Z_LIMIT, _Z_LIMIT_FLOAT64 = 32.0, 64.0


@register_family("wavkan", aliases=("wavelet",), bench_kwargs={"num_wavelets": 4})
class WavKANConv(KANConvBase):
    """Wavelet KAN convolution: a bank of wavelets per input channel, each with a learned scale and shift.

    Scale and shift are learned per (input channel, wavelet), never per edge, so the expansion stays
    pointwise and the layer keeps its single grouped convolution.
    """

    channel_parameters = ("shift", "scale")

    def __init__(self, *args: Any, wavelet: str = "mexican_hat", num_wavelets: int = 4,
                 grid_range: Sequence[float] = (-2.0, 2.0), **kwargs: Any) -> None:
        if wavelet not in _WAVELETS:
            raise ValueError(f"unknown wavelet {wavelet!r}; choose one of {list(_WAVELETS)}")
        if num_wavelets < 1:
            raise ValueError(f"num_wavelets must be at least 1, got {num_wavelets}")
        self.wavelet, self.num_wavelets, self.grid_range = wavelet, num_wavelets, tuple(grid_range)
        super().__init__(*args, **kwargs)

    def create_basis_parameters(self, factory: dict[str, Any]) -> None:
        self.shift = nn.Parameter(torch.empty(self.in_channels, self.num_wavelets, **factory))
        self.scale = nn.Parameter(torch.empty(self.in_channels, self.num_wavelets, **factory))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        lo, hi = self.grid_range
        with torch.no_grad():
            self.shift.copy_(torch.linspace(lo, hi, self.num_wavelets) if self.num_wavelets > 1 else torch.zeros(1))
            self.scale.fill_((hi - lo) / max(self.num_wavelets - 1, 1))

    @property
    def num_bases(self) -> int:
        return self.num_wavelets

    def basis_parameters(self) -> tuple[torch.Tensor, ...]:
        return (self.shift, self.scale)

    def _scaled(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per wavelet ``k``: ``z_k = (x - shift[:, k]) / scale[:, k]`` and ``1 / scale[:, k]`` shaped to
        broadcast against ``x`` (one pointwise pass per wavelet, like the other families' bases)."""
        shape = (1, -1, *([1] * self.ndim))
        inv_scale = (1 / scale).to(x.dtype)
        shift = shift.to(x.dtype)
        inv = [inv_scale[:, k].view(shape) for k in range(self.num_wavelets)]
        return [(x - shift[:, k].view(shape)) * inv[k] for k in range(self.num_wavelets)], inv

    def _wavelet(self, z: torch.Tensor, with_slope: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The mother wavelet at ``z`` and, if asked, its derivative.

        ``z`` is clamped to ``±_Z_LIMIT``, where the envelope ``exp(-z^2 / 2)`` is already 0 in the dtype, so the
        values are those of the formulas wherever these are finite, while ``z^2`` and ``z^3`` cannot overflow
        into ``inf * 0 = NaN`` (``|z|`` near 1e19 in float32, 1e3 in float16).
        """
        limit = _Z_LIMIT_FLOAT64 if z.dtype == torch.float64 else _Z_LIMIT
        z = z.clamp(-limit, limit)
        envelope = torch.exp(-0.5 * z.square())
        if self.wavelet == "mexican_hat":
            value = _MEXICAN_HAT * (1 - z.square()) * envelope
            slope = _MEXICAN_HAT * z * (z.square() - 3) * envelope if with_slope else None
        elif self.wavelet == "morlet":
            angle = 5.0 * z
            value = torch.cos(angle) * envelope
            slope = -(5.0 * torch.sin(angle) + z * torch.cos(angle)) * envelope if with_slope else None
        else:
            value = -z * envelope
            slope = (z.square() - 1) * envelope if with_slope else None
        return value, slope

    def basis_from(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], shift: torch.Tensor,
                   scale: torch.Tensor) -> list[torch.Tensor]:
        return [self._wavelet(z, with_slope=False)[0] for z in self._scaled(x, shift, scale)[0]]

    def basis_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], shift: torch.Tensor,
                  scale: torch.Tensor):
        zs, inv = self._scaled(x, shift, scale)
        bases, slopes = zip(*(self._wavelet(z, with_slope=True) for z in zs))
        spatial = tuple(range(2, x.dim()))

        def vjp(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            # q_k = dL/dz_k / scale_k; dz/dx = 1/scale, dz/dshift = -1/scale, dz/dscale = -z/scale
            qs = [grad[:, :, k] * slopes[k] * inv[k] for k in range(len(zs))]
            grad_shift = torch.stack([-q.sum(spatial).sum(0) for q in qs], 1)
            grad_scale = torch.stack([-(q * z).sum(spatial).sum(0) for q, z in zip(qs, zs)], 1)
            grad_x = qs[0]
            for q in qs[1:]:
                grad_x = grad_x + q
            return grad_x, grad_shift.to(shift.dtype), grad_scale.to(scale.dtype)

        return list(bases), vjp

    def family_repr(self) -> str:
        return f"wavelet={self.wavelet!r}, num_wavelets={self.num_wavelets}, grid_range={self.grid_range}"


class WavKANConv1d(WavKANConv):
    ndim = 1


class WavKANConv2d(WavKANConv):
    ndim = 2


class WavKANConv3d(WavKANConv):
    ndim = 3


class BottleneckWavKANConv1d(BottleneckKANConvBase):
    kan_conv = WavKANConv1d


class BottleneckWavKANConv2d(BottleneckKANConvBase):
    kan_conv = WavKANConv2d


class BottleneckWavKANConv3d(BottleneckKANConvBase):
    kan_conv = WavKANConv3d
