"""Grouped KAN convolutions: a pointwise basis expansion followed by ONE grouped convolution.

Every layer computes ``y[o, p] = sum_{c, i} phi[o, c, i](x[c, p + i])`` with
``phi(t) = w_base * base_activation(t) + sum_k w_k * B_k(t)``. The input is expanded once into
``K + 1`` responses per channel (base branch first, then the ``K`` bases), laid out channel-major
(expanded channel ``c * (K + 1) + k``) so that each group's expanded channels are contiguous, and a
single ``F.conv{1,2,3}d(..., groups=G)`` applies every group's own weights at once.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .fused import ConvSpec, expand_then_conv
from .helpers import PADDING_MODES, ActSpec, NormSpec, create_act, create_norm, ntuple, resolve_padding

# Values per block of the blocked (cache-sized) expansion on the CPU.
_BLOCK_ELEMENTS = 1 << 16

# maps the gradient of the bases (N, C, K, *spatial) to (grad_x, *grad_params)
BasisVJP = Callable[[torch.Tensor], tuple[torch.Tensor | None, ...]]

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
    ``num_bases`` and ``basis_from(x, squashed, *params)``, which maps ``(N, C, *spatial)`` to either
    a list of ``K`` tensors of that shape or one tensor ``(N, C, K, *spatial)``. Learned
    basis tensors are returned by ``basis_parameters`` so that backward can recompute the expansion;
    ``basis_vjp`` (autograd by default) gives backward the bases together with their derivatives.
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
        """The ``K`` basis responses of ``x`` ``(N, C, *spatial)``, pointwise (a list, or bases on dim 2)."""
        return self.basis_from(x, self.squash(x), *params)

    def squash(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """At most one pointwise map of ``x`` (e.g. ``tanh x``) that the bases read, kept for backward."""
        return ()

    def basis_from(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], *params: torch.Tensor
                   ) -> torch.Tensor | list[torch.Tensor]:
        """``basis`` given ``squash(x)``."""
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
        return self.expand_prepared(self.prepare(x), *params)

    @property
    def prepare_is_relayout(self) -> bool:
        """True when ``prepare`` does not pad ``x`` (it then only makes ``x`` contiguous)."""
        return not (self.padding_mode != "zeros" and any(self._pad_before + self._pad_after))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x`` for non-zero padding modes; contiguous ``(N, C, *spatial)``, channels-last where the
        fused kernels write a channels-last expansion (see ``_channels_last_conv``)."""
        if not self.prepare_is_relayout:
            x = F.pad(x, _pad_arg(self._pad_before, self._pad_after), mode=self.padding_mode)
        if kernels.applies(self, x) and self._channels_last_conv(x):
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    def expand_prepared(self, xp: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        """``expand`` of an input already passed through ``prepare``."""
        traced = torch.compiler.is_compiling() or torch.jit.is_tracing()  # export: plain ops, any batch size
        if traced or (torch.is_grad_enabled() and (xp.requires_grad or any(p.requires_grad for p in params))):
            base = None if self.base_activation is None else self.base_activation(xp)
            return self.to_conv_layout(self._assemble(base, self.basis(xp, *params)))
        return self.to_conv_layout(self.expand_prepared_keep(xp, *params, keep=False)[0])

    def expand_prepared_keep(self, xp: torch.Tensor, *params: torch.Tensor, keep: bool = True,
                             dtype: torch.dtype | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The expansion ``(N, C, K + 1, *spatial)`` of ``xp`` (no autograd) and what backward keeps.

        With the fused CPU kernels (see ``kernels``) nothing but ``xp`` is needed in backward.
        Otherwise kept are ``squash(xp)`` and, for a SiLU base branch, ``sigmoid(xp)``: with the input
        itself at most three tensors of the input's size, and they spare backward its transcendental
        functions; on the CPU the eager work runs in blocks of samples small enough to stay in cache.
        """
        dtype = dtype or xp.dtype
        if kernels.applies(self, xp):
            expanded = kernels.expand(self, xp, params, dtype, self._channels_last_conv(xp))
            if expanded is not None:
                return expanded, ()
        out = self.empty_expansion(xp, dtype)
        layout = self._block_layout(xp)
        kept: list[torch.Tensor] = []
        for block in self._batch_blocks(xp):
            x = xp[block].contiguous(memory_format=layout)
            squashed = self.squash(x)
            base, sig = self._base(x, None)
            self._assemble(base, self.basis_from(x, squashed, *params), out=out[block])
            if keep:
                parts = (*squashed, sig) if sig is not None else squashed
                if not kept:
                    kept = [torch.empty_like(xp, dtype=part.dtype, memory_format=layout) for part in parts]
                for full, part in zip(kept, parts):
                    full[block] = part
        return out, tuple(kept)

    def expand_prepared_vjp(self, xp: torch.Tensor, kept: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                            dtype: torch.dtype, grad_expanded: torch.Tensor | None
                            ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...] | None]:
        """Rebuild the expansion of ``xp`` in ``dtype`` and, given the expansion's gradient, map it to
        ``(grad_xp, *grad_params)``.

        Returns the rebuilt expansion (laid out as ``empty_expansion``) and the gradients (None
        without ``grad_expanded``). ``kept`` is what ``expand_prepared_keep`` kept (empty: recomputed here).
        """
        grad_bases = None if grad_expanded is None else self._grad_to_bases(grad_expanded)
        if kernels.applies(self, xp):
            channels_last = self._channels_last_conv(xp)
            if grad_bases is None:
                expanded = kernels.expand(self, xp, params, dtype, channels_last)
                if expanded is not None:
                    return expanded, None
            else:
                fused = kernels.expand_vjp(self, xp, grad_bases, params, dtype, channels_last)
                if fused is not None:
                    return fused[0], tuple(fused[1:])
        out = self.empty_expansion(xp, dtype)
        silu_base = type(self.base_activation) is nn.SiLU and bool(kept)
        squashed_kept = kept[:len(kept) - silu_base]
        grad_x = None if grad_bases is None else torch.empty_like(
            xp, dtype=torch.promote_types(xp.dtype, grad_bases.dtype))
        grad_params: list[torch.Tensor | None] = [None] * len(params)
        layout = self._block_layout(xp)
        for block in self._batch_blocks(xp):
            x = xp[block].contiguous(memory_format=layout)
            squashed = tuple(k[block] for k in squashed_kept) if kept else self.squash(x)
            sig = kept[-1][block] if silu_base else None
            if grad_bases is None:
                base, _ = self._base(x, sig)
                self._assemble(base, self.basis_from(x, squashed, *params), out=out[block])
                continue
            base, bases, grad_x[block], *block_grad_params = self.expansion_vjp(x, squashed, sig, params,
                                                                                grad_bases[block])
            self._assemble(base, bases, out=out[block])
            grad_params = [g if total is None else (total if g is None else total + g)
                           for total, g in zip(grad_params, block_grad_params)]
        if grad_x is None:
            return out, None
        return out, (grad_x, *grad_params)

    def expansion_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], sig: torch.Tensor | None,
                      params: Sequence[torch.Tensor], grad: torch.Tensor
                      ) -> tuple[torch.Tensor | None, torch.Tensor | list[torch.Tensor], torch.Tensor | None, ...]:
        """The base response and bases of ``x`` (as ``_assemble`` takes them) and the gradients
        ``(grad_x, *grad_params)`` for the expansion's gradient ``grad`` ``(N, C, K + 1, *spatial)``.

        ``squashed`` is ``squash(x)`` and ``sig`` the SiLU base branch's ``sigmoid(x)`` (None: computed).
        """
        base, sig = self._base(x, sig)
        bases, basis_vjp = self.basis_vjp(x, squashed, *params)
        grad_x, *grad_params = basis_vjp(grad[:, :, 0 if base is None else 1:])
        if sig is not None:
            grad_x = grad_x.addcmul_(grad[:, :, 0], _silu_derivative(sig, base))
        elif base is not None:
            grad_x = grad_x.add_(_activation_vjp(self.base_activation, x)[1](grad[:, :, 0]))
        return (base, bases, grad_x, *grad_params)

    def empty_expansion(self, xp: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised ``(N, C, K + 1, *spatial)`` tensor for the expansion of ``xp``.

        Where the convolution runs faster on channels-last input (see ``_channels_last_conv``), its
        memory holds ``(N, *spatial, C, K + 1)``, so that ``to_conv_layout`` gives a channels-last tensor.
        """
        channels_last = self._channels_last_conv(xp)
        per_position = (self.in_channels, self.expansion)
        shape = (*xp.shape[:1], *xp.shape[2:], *per_position) if channels_last else (
            *xp.shape[:1], *per_position, *xp.shape[2:])
        return kernels.from_stored_layout(xp.new_empty(shape, dtype=dtype), channels_last)

    def _block_layout(self, xp: torch.Tensor) -> torch.memory_format:
        """Memory format in which the blocks of ``xp`` are expanded (the expansion's own layout)."""
        return torch.channels_last if self._channels_last_conv(xp) else torch.contiguous_format

    def _channels_last_conv(self, x: torch.Tensor) -> bool:
        """Whether the convolution reads a channels-last expansion of ``x`` (2d on the CPU only).

        The fused kernels follow ``x``'s memory format, as ``nn.Conv2d`` does: they write either
        layout at the same speed, and with the allocator keeping freed memory (see ``kanzoo.runtime``)
        the CPU's NCHW grouped and depthwise convolutions over the expansion are as fast as the
        channels-last ones, so an NCHW input and output need no relayout. The eager path takes
        channels-last for ``K + 1 >= 8`` and for depthwise layers, where its convolutions run 1.3-2x
        faster on it.
        """
        if self.ndim != 2 or x.device.type != "cpu":
            return False
        if kernels.applies(self, x):
            return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return self.expansion >= 8 or self.groups == self.in_channels > 1

    def _base(self, x: torch.Tensor, sig: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The base branch of ``x`` and, for SiLU, the sigmoid it was made from (given or computed)."""
        if self.base_activation is None:
            return None, None
        if type(self.base_activation) is nn.SiLU:
            sig = torch.sigmoid(x) if sig is None else sig
            return x * sig, sig
        return self.base_activation(x), None

    def _batch_blocks(self, xp: torch.Tensor) -> list[slice]:
        """Blocks of samples holding about ``_BLOCK_ELEMENTS`` values (a single block off the CPU)."""
        total = xp.shape[0]
        per_sample = max(1, xp[:1].numel())
        step = total if xp.device.type != "cpu" else max(1, _BLOCK_ELEMENTS // per_sample)
        return [slice(i, min(i + step, total)) for i in range(0, total, step)] or [slice(0, 0)]

    def basis_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], *params: torch.Tensor
                  ) -> tuple[torch.Tensor | list[torch.Tensor], BasisVJP]:
        """``basis`` plus a function mapping the bases' gradient ``(N, C, K, *spatial)`` to ``(grad_x, *grad_params)``.

        This generic version differentiates ``basis`` with autograd (``squashed`` is recomputed);
        families override it with closed-form derivatives computed alongside the bases.
        """
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True), *(p.detach().requires_grad_(True) for p in params)]
            bases = self.basis(*leaves)
        outputs = [bases] if isinstance(bases, torch.Tensor) else list(bases)

        def vjp(grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
            grads = [grad] if isinstance(bases, torch.Tensor) else list(grad.unbind(2))
            return torch.autograd.grad(outputs, leaves, grads, allow_unused=True)

        detached = bases.detach() if isinstance(bases, torch.Tensor) else [b.detach() for b in bases]
        return detached, vjp

    def _assemble(self, base: torch.Tensor | None, bases: torch.Tensor | list[torch.Tensor],
                  out: torch.Tensor | None = None) -> torch.Tensor:
        """Base response and bases of ``(N, C, *spatial)`` as one ``(N, C, K + 1, *spatial)`` tensor
        (written into ``out`` if given)."""
        parts: list[torch.Tensor] = [] if base is None else [base.unsqueeze(2)]
        parts += [bases] if isinstance(bases, torch.Tensor) else [b.unsqueeze(2) for b in bases]
        if out is None:
            return torch.cat(parts, dim=2)
        start = 0
        for part in parts:
            out[:, :, start:start + part.shape[2]] = part
            start += part.shape[2]
        return out

    def to_conv_layout(self, expanded: torch.Tensor) -> torch.Tensor:
        """``(N, C, K + 1, *spatial)`` -> the convolution's ``(N, C * (K + 1), *spatial)`` (plus any extra zero pad)."""
        expanded = expanded.flatten(1, 2)
        extra = self._extra_zero_pad()
        if extra is not None:
            expanded = F.pad(expanded, _pad_arg((0,) * self.ndim, extra))
        return expanded

    def _grad_to_bases(self, grad_expanded: torch.Tensor) -> torch.Tensor:
        """Inverse of ``to_conv_layout`` for a gradient: ``(N, C, K + 1, *spatial)``."""
        extra = self._extra_zero_pad()
        if extra is not None:
            crop = tuple(slice(0, size - e) for size, e in zip(grad_expanded.shape[2:], extra))
            grad_expanded = grad_expanded[(slice(None), slice(None), *crop)]
        return grad_expanded.unflatten(1, (self.in_channels, self.expansion))

    def _extra_zero_pad(self) -> tuple[int, ...] | None:
        """Zeros added after the end of each dimension for uneven zero padding (the convolution pads the rest)."""
        if self.padding_mode != "zeros" or self._pad_before == self._pad_after:
            return None
        return tuple(a - b for a, b in zip(self._pad_after, self._pad_before))

    def _conv_spec(self, device: torch.device | None = None) -> ConvSpec:
        padding = self._pad_before if self.padding_mode == "zeros" else (0,) * self.ndim
        depthwise_on_cpu = self.groups == self.in_channels > 1 and (device is None or device.type == "cpu")
        return ConvSpec(self.ndim, self.stride, padding, self.dilation, self.groups,
                        sum_bases=self.expansion if depthwise_on_cpu else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_conv_input(x, self.ndim, self.in_channels, type(self).__name__)
        unbatched = x.dim() == self.ndim + 1
        if unbatched:
            x = x.unsqueeze(0)
        x = self.dropout(x)
        y = expand_then_conv(self, self._conv_spec(x.device), x, self.weight, self.bias,
                             self.basis_parameters(), recompute=self.recompute)
        if self._channels_last_conv(x) and not x.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous()  # a channels-last expansion gives a channels-last output
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


def _silu_derivative(sig: torch.Tensor, silu: torch.Tensor) -> torch.Tensor:
    """d silu(x) / dx = sigmoid(x) (1 + x (1 - sigmoid(x))) = sig + silu (1 - sig)."""
    return torch.addcmul(sig, silu, 1 - sig)


def _activation_vjp(activation: nn.Module, x: torch.Tensor):
    """``activation(x)`` and a function mapping its gradient to the gradient of ``x`` (by autograd)."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        y = activation(leaf)
    return y.detach(), lambda grad: torch.autograd.grad(y, leaf, grad)[0]


def _contract(grad: torch.Tensor, derivatives: Sequence[torch.Tensor | float]) -> torch.Tensor:
    """``sum_k grad[:, :, k] * derivatives[k]`` (a derivative may be a constant)."""
    total: torch.Tensor | None = None
    for k, d in enumerate(derivatives):
        if not isinstance(d, torch.Tensor) and d == 0:
            continue
        term = grad[:, :, k] * d
        total = term if total is None else total.add_(term)
    return torch.zeros_like(grad[:, :, 0]) if total is None else total


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


class _GridConv(KANConvBase):
    """Families on a uniform grid of ``grid_size`` cells extended by ``spline_order`` cells on each side.

    Subclasses build their grid buffers in ``create_basis_parameters`` from ``_uniform_grid``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 grid_size: int = 5, spline_order: int = 3, grid_range: Sequence[float] = (-1.0, 1.0),
                 **kwargs: Any) -> None:
        if spline_order < 0:
            raise ValueError(f"spline_order must be non-negative, got {spline_order}")
        self.grid_size, self.spline_order, self.grid_range = grid_size, spline_order, tuple(grid_range)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, **kwargs)

    @property
    def num_bases(self) -> int:
        return self.grid_size + self.spline_order

    @property
    def cell_width(self) -> float:
        """Width ``h`` of one grid cell."""
        return (self.grid_range[1] - self.grid_range[0]) / self.grid_size

    def _knots(self) -> torch.Tensor:
        """The extended grid's knots (float64), after checking ``grid_range`` and ``grid_size``."""
        return _uniform_grid(self.grid_range, self.grid_size, self.spline_order)

    def family_repr(self) -> str:
        return f"grid_size={self.grid_size}, spline_order={self.spline_order}, grid_range={self.grid_range}"


class _KANConv(_GridConv):
    """B-spline KAN convolution (the original KAN's spline basis) on a uniform, extended grid."""

    family = "kan"

    def create_basis_parameters(self, factory: dict[str, Any]) -> None:
        self.register_buffer("grid", self._knots().to(self.weight.device, self.weight.dtype), persistent=False)

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
            return bases, lambda grad: (_contract(grad, slopes).mul_(1 / self.cell_width),)
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


class _FastKANConv(KANConvBase):
    """RBF KAN convolution (FastKAN): Gaussians ``exp(-((x - mu_i) / h)^2)`` at uniform centres."""

    family = "fastkan"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
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

    def basis_from(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return [torch.exp(-((x - centre) * self.inv_width).square()) for centre in self.centres.to(x.dtype)]

    def basis_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...]):
        zs = [(x - centre) * self.inv_width for centre in self.centres.to(x.dtype)]
        bases = [torch.exp(-z.square()) for z in zs]
        # d/dx exp(-z^2) = -2 z exp(-z^2) * inv_width
        return bases, lambda grad: (_contract(grad, [z * b for z, b in zip(zs, bases)]).mul_(-2 * self.inv_width),)

    def family_repr(self) -> str:
        return f"grid_size={self.grid_size}, grid_range={self.grid_range}"


class _PolynomialConv(KANConvBase):
    """Polynomial families: ``degree + 1`` polynomials of ``tanh(x)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 degree: int = 3, **kwargs: Any) -> None:
        self.degree = _check_degree(degree)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, **kwargs)

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
        return polys, lambda grad: (_contract(grad, derivatives).mul_(1 - u * u),)

    def family_repr(self) -> str:
        return f"degree={self.degree}"


class _KACNConv(_PolynomialConv):
    """Chebyshev KAN convolution: ``T_n(tanh x)`` by the three-term recursion."""

    family = "kacn"

    def recursion(self, u: torch.Tensor, with_derivative: bool):
        polys: list[torch.Tensor] = [torch.ones_like(u), u]
        derivatives: list[torch.Tensor | float] = [0.0, 1.0]
        for _ in range(2, self.degree + 1):
            if with_derivative:
                derivatives.append(2 * polys[-1] + 2 * u * derivatives[-1] - derivatives[-2])
            polys.append(2 * u * polys[-1] - polys[-2])
        n = self.degree + 1
        return polys[:n], derivatives[:n] if with_derivative else None


class _KALNConv(_PolynomialConv):
    """Legendre KAN convolution: ``P_n(tanh x)``; tanh squashes each sample on its own."""

    family = "kaln"

    def recursion(self, u: torch.Tensor, with_derivative: bool):
        polys: list[torch.Tensor] = [torch.ones_like(u), u]
        derivatives: list[torch.Tensor | float] = [0.0, 1.0]
        for n in range(1, self.degree):
            if with_derivative:
                derivatives.append(((2 * n + 1) * (polys[n] + u * derivatives[n]) - n * derivatives[n - 1]) / (n + 1))
            polys.append(((2 * n + 1) * u * polys[n] - n * polys[n - 1]) / (n + 1))
        k = self.degree + 1
        return polys[:k], derivatives[:k] if with_derivative else None


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


class _KAJNConv(_PolynomialConv):
    """Jacobi KAN convolution: ``P_n^(alpha, beta)(tanh x)``."""

    family = "kajn"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 degree: int = 3, alpha: float = 1.0, beta: float = 1.0, **kwargs: Any) -> None:
        if alpha <= -1 or beta <= -1:
            raise ValueError(f"Jacobi polynomials need alpha > -1 and beta > -1, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, degree=degree, **kwargs)

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


class _KABNConv(_PolynomialConv):
    """Bernstein KAN convolution: ``C(n, v) u^v (1 - u)^(n - v)`` on ``u = sigmoid(x)``."""

    family = "kabn"

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
            return (_contract(grad, [b * (v * w - (n - v) * u) for v, b in enumerate(bases)]),)

        return bases, vjp


_WAVELETS = ("mexican_hat", "morlet", "dog")
_MEXICAN_HAT = 2.0 / (math.sqrt(3.0) * math.pi ** 0.25)


class _WavKANConv(KANConvBase):
    """Wavelet KAN convolution: a bank of wavelets per input channel, each with a learned scale and shift.

    Scale and shift are learned per (input channel, wavelet), never per edge, so the expansion stays
    pointwise and the layer keeps its single grouped convolution.
    """

    family = "wavkan"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
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
        """The mother wavelet at ``z`` and, if asked, its derivative."""
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


class _ReLUKANConv(_GridConv):
    """ReLU-KAN convolution: ``(relu(e_i - x) * relu(x - s_i))^2 * 16 / (e_i - s_i)^4`` on a uniform grid."""

    family = "relukan"

    def create_basis_parameters(self, factory: dict[str, Any]) -> None:
        starts = self._knots()[: self.num_bases]
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
            return (_contract(grad, slopes).mul_(2 * self.norm_const),)

        return bases, vjp


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
