"""Grouped KAN convolutions: a pointwise basis expansion followed by ONE grouped convolution.

Every layer computes ``y[o, p] = sum_{c, i} phi[o, c, i](x[c, p + i])`` with
``phi(t) = w_base * base_activation(t) + sum_k w_k * B_k(t)``. The input is expanded once into
``K + 1`` responses per channel (base branch first, then the ``K`` bases), laid out channel-major
(expanded channel ``c * (K + 1) + k``) so that each group's expanded channels are contiguous, and a
single ``F.conv{1,2,3}d(..., groups=G)`` applies every group's own weights at once.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .fused import ConvSpec, expand_then_conv
from .helpers import PADDING_MODES, ActSpec, NormSpec, create_act, create_norm, ntuple, resolve_padding

_INPUT_NAMES = {1: "(C, L) or (N, C, L)", 2: "(C, H, W) or (N, C, H, W)", 3: "(C, D, H, W) or (N, C, D, H, W)"}

__all__ = [
    "KANConvBase", "KANConv1d", "KANConv2d", "KANConv3d", "FastKANConv1d", "FastKANConv2d", "FastKANConv3d",
    "KACNConv1d", "KACNConv2d", "KACNConv3d", "KALNConv1d", "KALNConv2d", "KALNConv3d",
    "KAGNConv1d", "KAGNConv2d", "KAGNConv3d", "KAJNConv1d", "KAJNConv2d", "KAJNConv3d",
    "KABNConv1d", "KABNConv2d", "KABNConv3d", "WavKANConv1d", "WavKANConv2d", "WavKANConv3d",
    "ReLUKANConv1d", "ReLUKANConv2d", "ReLUKANConv3d",
]


class KANConvBase(nn.Module):
    """Shared machinery of every KAN convolution family; subclasses define ``basis``.

    Subclasses set ``ndim`` (1, 2 or 3) and ``family`` (the short name used by ``get_conv``), store
    their own hyper-parameters before calling ``__init__`` of this class, and implement
    ``num_bases`` and ``basis(x, *params)``, which maps ``(N, C, *spatial)`` to either a list of
    ``K`` tensors of that shape or one tensor ``(N, C, K, *spatial)``. Learned basis tensors are
    returned by ``basis_parameters`` so that backward can recompute the expansion.
    """

    ndim: int = 2
    family: str = ""

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
        base_activation: ActSpec = "silu",
        norm_layer: NormSpec = None,
        act_layer: ActSpec = None,
        dropout: float = 0.0,
        recompute: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_channels(in_channels, out_channels, groups)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {list(PADDING_MODES)}, but got padding_mode={padding_mode!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        nd = self.ndim
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = ntuple(kernel_size, nd, "kernel_size")
        self.stride = ntuple(stride, nd, "stride")
        self.dilation = ntuple(dilation, nd, "dilation")
        if any(k < 1 for k in self.kernel_size) or any(s < 1 for s in self.stride) or any(d < 1 for d in self.dilation):
            raise ValueError(f"kernel_size, stride and dilation must be positive, got {self.kernel_size}, "
                             f"{self.stride}, {self.dilation}")
        self.padding = padding if isinstance(padding, str) else ntuple(padding, nd, "padding")
        self.groups = groups
        self.padding_mode = padding_mode
        before, after = resolve_padding(padding, self.kernel_size, self.stride, self.dilation)
        self._pad_before, self._pad_after = before, after
        self.base_activation = None if base_activation is None else create_act(base_activation)
        self.expansion = self.num_bases + (self.base_activation is not None)
        factory = {"device": device, "dtype": dtype}
        expanded_per_group = in_channels // groups * self.expansion
        self.weight = nn.Parameter(torch.empty(out_channels, expanded_per_group, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm = create_norm(norm_layer, out_channels, nd).to(**factory)
        self.act = create_act(act_layer)
        self.recompute = recompute
        self.create_basis_parameters(factory)
        self.reset_parameters()

    @property
    def num_bases(self) -> int:
        """Number of basis functions ``K`` per input channel (the base branch not counted)."""
        raise NotImplementedError

    def basis(self, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """The ``K`` basis responses of ``x``, pointwise."""
        raise NotImplementedError

    def basis_parameters(self) -> tuple[torch.Tensor, ...]:
        """Learned tensors that ``basis`` reads, passed explicitly so backward can rebuild it."""
        return ()

    def create_basis_parameters(self, factory: dict[str, Any]) -> None:
        """Create the family's learned basis tensors (initialised by ``reset_parameters``)."""

    def reset_parameters(self) -> None:
        """Initialise the fused weight like ``nn.ConvNd`` over all expanded inputs."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def _weight_view(self) -> torch.Tensor:
        return self.weight.view(self.out_channels, self.in_channels // self.groups, self.expansion, *self.kernel_size)

    @property
    def base_weight(self) -> torch.Tensor | None:
        """Per-group weights of the base branch, shaped like ``nn.ConvNd.weight`` (a view)."""
        if self.base_activation is None:
            return None
        return self._weight_view()[:, :, 0]

    @property
    def basis_weight(self) -> torch.Tensor:
        """Weights of the ``K`` bases: ``(out_channels, in_channels / groups, K, *kernel_size)`` (a view)."""
        return self._weight_view()[:, :, self.expansion - self.num_bases:]

    def expand(self, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        """The channel-major expansion ``(N, C * (K + 1), *spatial)`` that the convolution reads."""
        if self.padding_mode != "zeros" and any(self._pad_before + self._pad_after):
            x = F.pad(x, _pad_arg(self._pad_before, self._pad_after), mode=self.padding_mode)
        bases = self.basis(x, *params)
        if isinstance(bases, torch.Tensor):
            parts = [bases] if self.base_activation is None else [self.base_activation(x).unsqueeze(2), bases]
            expanded = torch.cat(parts, dim=2) if len(parts) > 1 else bases
        else:
            if self.base_activation is not None:
                bases = [self.base_activation(x), *bases]
            expanded = torch.stack(bases, dim=2)
        expanded = expanded.flatten(1, 2)
        if self.padding_mode == "zeros" and self._pad_before != self._pad_after:
            extra = tuple(a - b for a, b in zip(self._pad_after, self._pad_before))
            expanded = F.pad(expanded, _pad_arg((0,) * self.ndim, extra))
        return expanded

    def _conv_spec(self) -> ConvSpec:
        padding = self._pad_before if self.padding_mode == "zeros" else (0,) * self.ndim
        return ConvSpec(self.ndim, self.stride, padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_conv_input(x, self.ndim, self.in_channels, type(self).__name__)
        unbatched = x.dim() == self.ndim + 1
        if unbatched:
            x = x.unsqueeze(0)
        x = self.dropout(x)
        y = expand_then_conv(self.expand, self._conv_spec(), x, self.weight, self.bias,
                             self.basis_parameters(), recompute=self.recompute)
        y = self.act(self.norm(y))
        return y.squeeze(0) if unbatched else y

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}")
        if self.dilation != (1,) * self.ndim:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s + ", " + self.family_repr()

    def family_repr(self) -> str:
        """The family's own hyper-parameters for ``repr``."""
        return f"num_bases={self.num_bases}"


def check_conv_input(x: torch.Tensor, ndim: int, in_channels: int, name: str) -> None:
    """Raise a clear error for a non-tensor, non-float, wrongly shaped or wrongly sized input."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} expects a floating point input, got dtype {x.dtype}; convert it first, e.g. x.float()")
    if x.dim() not in (ndim + 1, ndim + 2):
        raise ValueError(f"{name} expects input of shape {_INPUT_NAMES[ndim]}, got a {x.dim()}-d tensor "
                         f"of shape {tuple(x.shape)}")
    channels = x.shape[0 if x.dim() == ndim + 1 else 1]
    if channels != in_channels:
        raise ValueError(f"{name} expects {in_channels} input channels, got {channels} (input shape {tuple(x.shape)})")


def _pad_arg(before: Sequence[int], after: Sequence[int]) -> list[int]:
    """``F.pad`` wants (last dim before, last dim after, previous dim before, ...)."""
    out: list[int] = []
    for b, a in zip(reversed(before), reversed(after)):
        out += [b, a]
    return out


def _check_channels(in_channels: int, out_channels: int, groups: int) -> None:
    if not isinstance(groups, int) or groups <= 0:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if in_channels <= 0 or out_channels <= 0:
        raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be positive")
    if in_channels % groups != 0:
        raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
    if out_channels % groups != 0:
        raise ValueError(f"out_channels ({out_channels}) must be divisible by groups ({groups}); "
                         f"for a depthwise layer use out_channels = k * in_channels")


def _bshape(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-basis vector ``(K,)`` to broadcast against ``(N, C, K, *spatial)``."""
    return values.view(1, 1, -1, *([1] * ndim))


def _uniform_grid(grid_range: Sequence[float], cells: int, extend: int) -> torch.Tensor:
    lo, hi = (float(v) for v in grid_range)
    if not hi > lo:
        raise ValueError(f"grid_range must be increasing, got {tuple(grid_range)}")
    if cells < 1:
        raise ValueError(f"grid_size must be at least 1, got {cells}")
    h = (hi - lo) / cells
    return lo + h * torch.arange(-extend, cells + extend + 1, dtype=torch.float64)


def _check_degree(degree: int) -> int:
    if not isinstance(degree, int) or degree < 0:
        raise ValueError(f"degree must be a non-negative integer, got {degree!r}")
    return degree


class _KANConv(KANConvBase):
    """B-spline KAN convolution (the original KAN's spline basis) on a uniform, extended grid."""

    family = "kan"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 grid_size: int = 5, spline_order: int = 3, grid_range: Sequence[float] = (-1.0, 1.0),
                 **kwargs: Any) -> None:
        if spline_order < 0:
            raise ValueError(f"spline_order must be non-negative, got {spline_order}")
        self.grid_size, self.spline_order, self.grid_range = grid_size, spline_order, tuple(grid_range)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, **kwargs)
        grid = _uniform_grid(grid_range, grid_size, spline_order)
        self.register_buffer("grid", grid.to(self.weight.device, self.weight.dtype), persistent=False)

    @property
    def num_bases(self) -> int:
        return self.grid_size + self.spline_order

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        grid = _bshape(self.grid.to(x.dtype), self.ndim)
        h = (self.grid_range[1] - self.grid_range[0]) / self.grid_size
        xe = x.unsqueeze(2)
        bases = ((xe >= grid[:, :, :-1]) & (xe < grid[:, :, 1:])).to(x.dtype)
        for p in range(1, self.spline_order + 1):
            left = (xe - grid[:, :, :-(p + 1)]) * bases[:, :, :-1]
            right = (grid[:, :, p + 1:] - xe) * bases[:, :, 1:]
            bases = (left + right) / (p * h)
        return bases

    def family_repr(self) -> str:
        return f"grid_size={self.grid_size}, spline_order={self.spline_order}, grid_range={self.grid_range}"


class _FastKANConv(KANConvBase):
    """RBF KAN convolution (FastKAN): Gaussians ``exp(-((x - mu_i) / h)^2)`` at uniform centres."""

    family = "fastkan"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 grid_size: int = 8, grid_range: Sequence[float] = (-2.0, 2.0), **kwargs: Any) -> None:
        if grid_size < 2:
            raise ValueError(f"grid_size must be at least 2 for RBF centres, got {grid_size}")
        self.grid_size, self.grid_range = grid_size, tuple(grid_range)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, **kwargs)
        centres = _uniform_grid(grid_range, grid_size - 1, 0)
        self.register_buffer("centres", centres.to(self.weight.device, self.weight.dtype), persistent=False)
        self.inv_width = (grid_size - 1) / (self.grid_range[1] - self.grid_range[0])

    @property
    def num_bases(self) -> int:
        return self.grid_size

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        centres = _bshape(self.centres.to(x.dtype), self.ndim)
        return torch.exp(-((x.unsqueeze(2) - centres) * self.inv_width).square())

    def family_repr(self) -> str:
        return f"grid_size={self.grid_size}, grid_range={self.grid_range}"


class _PolynomialConv(KANConvBase):
    """Polynomial families: ``degree + 1`` polynomials of ``tanh(x)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 degree: int = 3, **kwargs: Any) -> None:
        self.degree = _check_degree(degree)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, **kwargs)

    @property
    def num_bases(self) -> int:
        return self.degree + 1

    def family_repr(self) -> str:
        return f"degree={self.degree}"


class _KACNConv(_PolynomialConv):
    """Chebyshev KAN convolution: ``T_n(tanh x)`` by the three-term recursion."""

    family = "kacn"

    def basis(self, x: torch.Tensor) -> list[torch.Tensor]:
        u = torch.tanh(x)
        polys = [torch.ones_like(u), u]
        for _ in range(2, self.degree + 1):
            polys.append(2 * u * polys[-1] - polys[-2])
        return polys[: self.degree + 1]


class _KALNConv(_PolynomialConv):
    """Legendre KAN convolution: ``P_n(tanh x)``; tanh squashes each sample on its own."""

    family = "kaln"

    def basis(self, x: torch.Tensor) -> list[torch.Tensor]:
        u = torch.tanh(x)
        polys = [torch.ones_like(u), u]
        for n in range(1, self.degree):
            polys.append(((2 * n + 1) * u * polys[n] - n * polys[n - 1]) / (n + 1))
        return polys[: self.degree + 1]


class _KAGNConv(_PolynomialConv):
    """Gram KAN convolution: Gram polynomials of ``tanh x`` with a learned beta per degree, then SiLU."""

    family = "kagn"

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

    def basis(self, x: torch.Tensor, beta_weights: torch.Tensor) -> list[torch.Tensor]:
        u = torch.tanh(x)
        beta = (self.beta_scale.to(beta_weights.dtype) * beta_weights).to(x.dtype)
        polys = [torch.ones_like(u), u]
        for i in range(2, self.degree + 1):
            polys.append(u * polys[-1] - beta[i - 1] * polys[-2])
        return [F.silu(p) for p in polys[: self.degree + 1]]


class _KAJNConv(_PolynomialConv):
    """Jacobi KAN convolution: ``P_n^(alpha, beta)(tanh x)``."""

    family = "kajn"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 degree: int = 3, alpha: float = 1.0, beta: float = 1.0, **kwargs: Any) -> None:
        if alpha <= -1 or beta <= -1:
            raise ValueError(f"Jacobi polynomials need alpha > -1 and beta > -1, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, degree=degree, **kwargs)

    def basis(self, x: torch.Tensor) -> list[torch.Tensor]:
        a, b = self.alpha, self.beta
        u = torch.tanh(x)
        polys = [torch.ones_like(u), ((a - b) + (a + b + 2) * u) / 2]
        for n in range(2, self.degree + 1):
            s = 2 * n + a + b
            c0 = 2 * n * (n + a + b) * (s - 2)
            c1 = (s - 1) * s * (s - 2) / c0
            c2 = (s - 1) * (a * a - b * b) / c0
            c3 = 2 * (n + a - 1) * (n + b - 1) * s / c0
            polys.append((c1 * u + c2) * polys[-1] - c3 * polys[-2])
        return polys[: self.degree + 1]

    def family_repr(self) -> str:
        return f"degree={self.degree}, alpha={self.alpha}, beta={self.beta}"


class _KABNConv(_PolynomialConv):
    """Bernstein KAN convolution: ``C(n, v) u^v (1 - u)^(n - v)`` on ``u = sigmoid(x)``."""

    family = "kabn"

    def basis(self, x: torch.Tensor) -> list[torch.Tensor]:
        u = torch.sigmoid(x)
        w = torch.sigmoid(-x)
        up, wp = [torch.ones_like(u)], [torch.ones_like(u)]
        for _ in range(self.degree):
            up.append(up[-1] * u)
            wp.append(wp[-1] * w)
        n = self.degree
        return [math.comb(n, v) * up[v] * wp[n - v] for v in range(n + 1)]


_WAVELETS = ("mexican_hat", "morlet", "dog")


class _WavKANConv(KANConvBase):
    """Wavelet KAN convolution: a bank of wavelets per input channel, each with a learned scale and shift.

    Scale and shift are learned per (input channel, wavelet), never per edge, so the expansion stays
    pointwise and the layer keeps its single grouped convolution.
    """

    family = "wavkan"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 wavelet: str = "mexican_hat", num_wavelets: int = 4, grid_range: Sequence[float] = (-2.0, 2.0),
                 **kwargs: Any) -> None:
        if wavelet not in _WAVELETS:
            raise ValueError(f"unknown wavelet {wavelet!r}; choose one of {list(_WAVELETS)}")
        if num_wavelets < 1:
            raise ValueError(f"num_wavelets must be at least 1, got {num_wavelets}")
        self.wavelet, self.num_wavelets, self.grid_range = wavelet, num_wavelets, tuple(grid_range)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, **kwargs)

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

    def basis(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        view = (1, self.in_channels, self.num_wavelets) + (1,) * self.ndim
        z = (x.unsqueeze(2) - shift.to(x.dtype).view(view)) / scale.to(x.dtype).view(view)
        envelope = torch.exp(-0.5 * z.square())
        if self.wavelet == "mexican_hat":
            return (2.0 / (math.sqrt(3.0) * math.pi ** 0.25)) * (1 - z.square()) * envelope
        if self.wavelet == "morlet":
            return torch.cos(5.0 * z) * envelope
        return -z * envelope

    def family_repr(self) -> str:
        return f"wavelet={self.wavelet!r}, num_wavelets={self.num_wavelets}, grid_range={self.grid_range}"


class _ReLUKANConv(KANConvBase):
    """ReLU-KAN convolution: ``(relu(e_i - x) * relu(x - s_i))^2 * 16 / (e_i - s_i)^4`` on a uniform grid."""

    family = "relukan"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 grid_size: int = 5, spline_order: int = 3, grid_range: Sequence[float] = (-1.0, 1.0),
                 **kwargs: Any) -> None:
        if spline_order < 0:
            raise ValueError(f"spline_order must be non-negative, got {spline_order}")
        self.grid_size, self.spline_order, self.grid_range = grid_size, spline_order, tuple(grid_range)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, **kwargs)
        knots = _uniform_grid(grid_range, grid_size, spline_order)
        h = (self.grid_range[1] - self.grid_range[0]) / grid_size
        starts = knots[: grid_size + spline_order]
        ends = starts + (spline_order + 1) * h
        self.register_buffer("starts", starts.to(self.weight.device, self.weight.dtype), persistent=False)
        self.register_buffer("ends", ends.to(self.weight.device, self.weight.dtype), persistent=False)
        self.norm_const = 16.0 / ((spline_order + 1) * h) ** 4

    @property
    def num_bases(self) -> int:
        return self.grid_size + self.spline_order

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        xe = x.unsqueeze(2)
        starts = _bshape(self.starts.to(x.dtype), self.ndim)
        ends = _bshape(self.ends.to(x.dtype), self.ndim)
        return (F.relu(ends - xe) * F.relu(xe - starts)).square() * self.norm_const

    def family_repr(self) -> str:
        return f"grid_size={self.grid_size}, spline_order={self.spline_order}, grid_range={self.grid_range}"


def _dimensioned(family: type[KANConvBase], stem: str) -> tuple[type[KANConvBase], ...]:
    """The 1d, 2d and 3d classes of one family."""
    classes = []
    for nd in (1, 2, 3):
        doc = f"{family.__doc__.splitlines()[0]} ({nd}d; constructor as ``nn.Conv{nd}d``, then family arguments)."
        classes.append(type(f"{stem}{nd}d", (family,), {"ndim": nd, "__doc__": doc, "__module__": __name__}))
    return tuple(classes)


KANConv1d, KANConv2d, KANConv3d = _dimensioned(_KANConv, "KANConv")
FastKANConv1d, FastKANConv2d, FastKANConv3d = _dimensioned(_FastKANConv, "FastKANConv")
KACNConv1d, KACNConv2d, KACNConv3d = _dimensioned(_KACNConv, "KACNConv")
KALNConv1d, KALNConv2d, KALNConv3d = _dimensioned(_KALNConv, "KALNConv")
KAGNConv1d, KAGNConv2d, KAGNConv3d = _dimensioned(_KAGNConv, "KAGNConv")
KAJNConv1d, KAJNConv2d, KAJNConv3d = _dimensioned(_KAJNConv, "KAJNConv")
KABNConv1d, KABNConv2d, KABNConv3d = _dimensioned(_KABNConv, "KABNConv")
WavKANConv1d, WavKANConv2d, WavKANConv3d = _dimensioned(_WavKANConv, "WavKANConv")
ReLUKANConv1d, ReLUKANConv2d, ReLUKANConv3d = _dimensioned(_ReLUKANConv, "ReLUKANConv")

FAMILIES: dict[str, tuple[type[KANConvBase], ...]] = {
    cls.family: classes
    for cls, classes in [
        (_KANConv, (KANConv1d, KANConv2d, KANConv3d)),
        (_FastKANConv, (FastKANConv1d, FastKANConv2d, FastKANConv3d)),
        (_KACNConv, (KACNConv1d, KACNConv2d, KACNConv3d)),
        (_KALNConv, (KALNConv1d, KALNConv2d, KALNConv3d)),
        (_KAGNConv, (KAGNConv1d, KAGNConv2d, KAGNConv3d)),
        (_KAJNConv, (KAJNConv1d, KAJNConv2d, KAJNConv3d)),
        (_KABNConv, (KABNConv1d, KABNConv2d, KABNConv3d)),
        (_WavKANConv, (WavKANConv1d, WavKANConv2d, WavKANConv3d)),
        (_ReLUKANConv, (ReLUKANConv1d, ReLUKANConv2d, ReLUKANConv3d)),
    ]
}
