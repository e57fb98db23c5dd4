"""Polynomial KAN convolutions: Chebyshev (``kacn``), Legendre (``kaln``), Gram (``kagn``), Jacobi (``kajn``)
and Bernstein (``kabn``) polynomials of a squashed input."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..basis import weighted_sum
from ..bottleneck import BottleneckKANConvBase
from ..conv import KANConvBase
from ..registry import register_family

__all__ = ["PolynomialConv", "KACNConv", "KACNConv1d", "KACNConv2d", "KACNConv3d", "BottleneckKACNConv1d",
           "BottleneckKACNConv2d", "BottleneckKACNConv3d", "KALNConv", "KALNConv1d", "KALNConv2d",
           "KALNConv3d", "BottleneckKALNConv1d", "BottleneckKALNConv2d", "BottleneckKALNConv3d", "KAGNConv",
           "KAGNConv1d", "KAGNConv2d", "KAGNConv3d", "BottleneckKAGNConv1d", "BottleneckKAGNConv2d",
           "BottleneckKAGNConv3d", "KAJNConv", "KAJNConv1d", "KAJNConv2d", "KAJNConv3d",
           "BottleneckKAJNConv1d", "BottleneckKAJNConv2d", "BottleneckKAJNConv3d", "KABNConv", "KABNConv1d",
           "KABNConv2d", "KABNConv3d", "BottleneckKABNConv1d", "BottleneckKABNConv2d", "BottleneckKABNConv3d"]


class PolynomialConv(KANConvBase):
    """Polynomial families: ``degree + 1`` polynomials of ``tanh(x)``."""

    def __init__(self, *args: Any, degree: int = 3, **kwargs: Any) -> None:
        if not isinstance(degree, int) or degree < 0:
            raise ValueError(f"degree must be a non-negative integer, got {degree!r}")
        self.degree = degree
        super().__init__(*args, **kwargs)

    @property
    def num_bases(self) -> int:
        return self.degree + 1

    def recursion(self, u: torch.Tensor, with_derivative: bool
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor | float] | None]:
        """The ``degree + 1`` polynomials at ``u`` and, if asked, their derivatives in ``u``."""
        raise NotImplementedError

    def squash(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.tanh(x),)

    def basis_from(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return self.recursion(squashed[0], with_derivative=False)[0]

    def basis_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]):
        u = squashed[0]
        polys, derivatives = self.recursion(u, with_derivative=True)
        return polys, lambda grad: (weighted_sum(grad, derivatives).mul_(1 - u * u),)

    def family_repr(self) -> str:
        return f"degree={self.degree}"


@register_family("kacn", aliases=("chebyshev",), bench_kwargs={"degree": 3})
class KACNConv(PolynomialConv):
    """Chebyshev KAN convolution: ``T_n(tanh x)`` by the three-term recursion."""

    def recursion(self, u: torch.Tensor, with_derivative: bool):
        polys: list[torch.Tensor] = [torch.ones_like(u), u]
        derivatives: list[torch.Tensor | float] = [0.0, 1.0]
        for _ in range(2, self.degree + 1):
            if with_derivative:
                derivatives.append(2 * polys[-1] + 2 * u * derivatives[-1] - derivatives[-2])
            polys.append(2 * u * polys[-1] - polys[-2])
        n = self.degree + 1
        return polys[:n], derivatives[:n] if with_derivative else None


class KACNConv1d(KACNConv):
    ndim = 1


class KACNConv2d(KACNConv):
    ndim = 2


class KACNConv3d(KACNConv):
    ndim = 3


class BottleneckKACNConv1d(BottleneckKANConvBase):
    kan_conv = KACNConv1d


class BottleneckKACNConv2d(BottleneckKANConvBase):
    kan_conv = KACNConv2d


class BottleneckKACNConv3d(BottleneckKANConvBase):
    kan_conv = KACNConv3d


@register_family("kaln", aliases=("legendre",), bench_kwargs={"degree": 3})
class KALNConv(PolynomialConv):
    """Legendre KAN convolution: ``P_n(tanh x)``; tanh squashes each sample on its own."""

    def recursion(self, u: torch.Tensor, with_derivative: bool):
        polys: list[torch.Tensor] = [torch.ones_like(u), u]
        derivatives: list[torch.Tensor | float] = [0.0, 1.0]
        for n in range(1, self.degree):
            if with_derivative:
                derivatives.append(((2 * n + 1) * (polys[n] + u * derivatives[n]) - n * derivatives[n - 1]) / (n + 1))
            polys.append(((2 * n + 1) * u * polys[n] - n * polys[n - 1]) / (n + 1))
        k = self.degree + 1
        return polys[:k], derivatives[:k] if with_derivative else None


class KALNConv1d(KALNConv):
    ndim = 1


class KALNConv2d(KALNConv):
    ndim = 2


class KALNConv3d(KALNConv):
    ndim = 3


class BottleneckKALNConv1d(BottleneckKANConvBase):
    kan_conv = KALNConv1d


class BottleneckKALNConv2d(BottleneckKANConvBase):
    kan_conv = KALNConv2d


class BottleneckKALNConv3d(BottleneckKANConvBase):
    kan_conv = KALNConv3d


@register_family("kagn", aliases=("gram",), bench_kwargs={"degree": 3})
class KAGNConv(PolynomialConv):
    """Gram KAN convolution: Gram polynomials of ``tanh x`` with a learned beta per degree, then SiLU."""

    def create_basis_parameters(self, factory: dict[str, Any]) -> None:
        self.beta_weights = nn.Parameter(torch.empty(self.degree + 1, **factory))
        n = torch.arange(self.degree + 1, dtype=torch.float64)
        m = n + 1
        scale = (m + n) * (m - n) * n ** 2 / (m ** 2 / (4 * n ** 2 - 1))
        self.register_buffer("beta_scale", scale.to(self.weight.device, self.weight.dtype), persistent=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        fan = math.prod(self.kernel_size) * self.in_channels * (self.degree + 1.0)
        nn.init.normal_(self.beta_weights, mean=0.0, std=1.0 / fan)

    def basis_parameters(self) -> tuple[torch.Tensor, ...]:
        return (self.beta_weights,)

    def _gram(self, u: torch.Tensor, beta_weights: torch.Tensor):
        beta = (self.beta_scale.to(beta_weights.dtype) * beta_weights).to(u.dtype)
        polys = [torch.ones_like(u), u]
        for i in range(2, self.degree + 1):
            polys.append(u * polys[-1] - beta[i - 1] * polys[-2])
        return u, beta, polys[: self.degree + 1]

    def basis_from(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], beta_weights: torch.Tensor
                   ) -> list[torch.Tensor]:
        return [F.silu(p) for p in self._gram(squashed[0], beta_weights)[2]]

    def basis_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], beta_weights: torch.Tensor):
        u, beta, polys = self._gram(squashed[0], beta_weights)
        sigmoids = [None] + [torch.sigmoid(p) for p in polys[1:]]
        bases = [F.silu(polys[0])] + [p * sig for p, sig in zip(polys[1:], sigmoids[1:])]

        def vjp(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # reverse mode through silu and the recursion P_i = u P_{i-1} - beta_{i-1} P_{i-2}
            grad_polys: list[torch.Tensor | None] = [None] + [
                grad[:, :, i] * (sig * (1 + p * (1 - sig))) for i, (p, sig) in enumerate(zip(polys, sigmoids)) if i
            ]
            grad_beta = torch.zeros(len(polys), dtype=torch.promote_types(u.dtype, torch.float32), device=x.device)
            grad_u = torch.zeros_like(u)
            for i in range(len(polys) - 1, 1, -1):
                g = grad_polys[i]
                grad_u.addcmul_(g, polys[i - 1])
                grad_polys[i - 1].addcmul_(g, u)
                grad_beta[i - 1] = -(g * polys[i - 2]).sum(tuple(range(2, u.dim()))).sum()
                if i > 2:
                    grad_polys[i - 2].sub_(g * beta[i - 1])
            if len(polys) > 1:
                grad_u.add_(grad_polys[1])
            grad_weights = (grad_beta * self.beta_scale.to(grad_beta.dtype)).to(beta_weights.dtype)
            return grad_u.mul_(1 - u * u), grad_weights

        return bases, vjp


class KAGNConv1d(KAGNConv):
    ndim = 1


class KAGNConv2d(KAGNConv):
    ndim = 2


class KAGNConv3d(KAGNConv):
    ndim = 3


class BottleneckKAGNConv1d(BottleneckKANConvBase):
    kan_conv = KAGNConv1d


class BottleneckKAGNConv2d(BottleneckKANConvBase):
    kan_conv = KAGNConv2d


class BottleneckKAGNConv3d(BottleneckKANConvBase):
    kan_conv = KAGNConv3d


@register_family("kajn", aliases=("jacobi",), bench_kwargs={"degree": 3})
class KAJNConv(PolynomialConv):
    """Jacobi KAN convolution: ``P_n^(alpha, beta)(tanh x)``."""

    def __init__(self, *args: Any, alpha: float = 1.0, beta: float = 1.0, **kwargs: Any) -> None:
        if alpha <= -1 or beta <= -1:
            raise ValueError(f"Jacobi polynomials need alpha > -1 and beta > -1, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        super().__init__(*args, **kwargs)

    def recursion(self, u: torch.Tensor, with_derivative: bool):
        a, b = self.alpha, self.beta
        polys: list[torch.Tensor] = [torch.ones_like(u), ((a - b) + (a + b + 2) * u) / 2]
        derivatives: list[torch.Tensor | float] = [0.0, (a + b + 2) / 2]
        for n in range(2, self.degree + 1):
            s = 2 * n + a + b
            c0 = 2 * n * (n + a + b) * (s - 2)
            c1 = (s - 1) * s * (s - 2) / c0
            c2 = (s - 1) * (a * a - b * b) / c0
            c3 = 2 * (n + a - 1) * (n + b - 1) * s / c0
            if with_derivative:
                derivatives.append(c1 * polys[-1] + (c1 * u + c2) * derivatives[-1] - c3 * derivatives[-2])
            polys.append((c1 * u + c2) * polys[-1] - c3 * polys[-2])
        k = self.degree + 1
        return polys[:k], derivatives[:k] if with_derivative else None

    def family_repr(self) -> str:
        return f"degree={self.degree}, alpha={self.alpha}, beta={self.beta}"


class KAJNConv1d(KAJNConv):
    ndim = 1


class KAJNConv2d(KAJNConv):
    ndim = 2


class KAJNConv3d(KAJNConv):
    ndim = 3


class BottleneckKAJNConv1d(BottleneckKANConvBase):
    kan_conv = KAJNConv1d


class BottleneckKAJNConv2d(BottleneckKANConvBase):
    kan_conv = KAJNConv2d


class BottleneckKAJNConv3d(BottleneckKANConvBase):
    kan_conv = KAJNConv3d


@register_family("kabn", aliases=("bernstein",), bench_kwargs={"degree": 3})
class KABNConv(PolynomialConv):
    """Bernstein KAN convolution: ``C(n, v) u^v (1 - u)^(n - v)`` on ``u = sigmoid(x)``."""

    def squash(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.sigmoid(x),)

    def _bernstein(self, x: torch.Tensor, u: torch.Tensor):
        w = torch.sigmoid(-x)
        up, wp = [torch.ones_like(u)], [torch.ones_like(u)]
        for _ in range(self.degree):
            up.append(up[-1] * u)
            wp.append(wp[-1] * w)
        n = self.degree
        return u, w, [math.comb(n, v) * up[v] * wp[n - v] for v in range(n + 1)]

    def basis_from(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return self._bernstein(x, squashed[0])[2]

    def basis_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]):
        u, w, bases = self._bernstein(x, squashed[0])
        n = self.degree

        def vjp(grad: torch.Tensor) -> tuple[torch.Tensor]:
            # d/dx C(n,v) u^v w^(n-v) = B_v (v w - (n - v) u), since du/dx = u w = -dw/dx
            return (weighted_sum(grad, [b * (v * w - (n - v) * u) for v, b in enumerate(bases)]),)

        return bases, vjp


class KABNConv1d(KABNConv):
    ndim = 1


class KABNConv2d(KABNConv):
    ndim = 2


class KABNConv3d(KABNConv):
    ndim = 3


class BottleneckKABNConv1d(BottleneckKANConvBase):
    kan_conv = KABNConv1d


class BottleneckKABNConv2d(BottleneckKANConvBase):
    kan_conv = KABNConv2d


class BottleneckKABNConv3d(BottleneckKANConvBase):
    kan_conv = KABNConv3d
