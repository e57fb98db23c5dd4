"""Expand-then-convolve with the expansion recomputed in backward instead of stored.

A KAN convolution is a pointwise basis expansion of the input followed by one ordinary grouped
convolution. Autograd would keep the expanded tensor (``K + 1`` times the input) for the
convolution's weight gradient, plus every intermediate of the expansion. Here only the (prepared)
input and the small basis parameters are kept; backward rebuilds the expansion together with its
vector-Jacobian product, runs the convolution's backward once, and maps the expanded gradient back.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F

Vjp = Callable[[torch.Tensor], Sequence[torch.Tensor | None]]

_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class ConvSpec:
    """The hyper-parameters of the single grouped convolution of a KAN layer."""

    __slots__ = ("ndim", "stride", "padding", "dilation", "groups")

    def __init__(self, ndim: int, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                 groups: int) -> None:
        self.ndim = ndim
        self.stride = list(stride)
        self.padding = list(padding)
        self.dilation = list(dilation)
        self.groups = groups

    def conv(self, expanded: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Run the convolution (autocast-aware, like ``F.conv2d``)."""
        return _CONV_FNS[self.ndim](expanded, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Expander(Protocol):
    """What ``expand_then_conv`` needs from a layer: an input preparation and the expansion with its VJP.

    ``prepare(x)`` is a cheap, differentiable re-layout of the input (padding, channels-last);
    ``expand_prepared(xp, *params)`` returns the expanded tensor the convolution reads;
    ``expand_prepared_keep(xp, *params)`` returns it with a few input-sized tensors to keep for
    backward; ``expand_prepared_vjp(xp, kept, *params)`` rebuilds the expanded tensor and returns a
    function mapping its gradient to the gradients of ``(xp, *params)``. ``prepare_is_relayout`` says
    that ``prepare`` only changes the memory layout (so ``grad.movedim(-1, 1)`` undoes it and the
    prepared tensor may be saved instead of the input).
    """

    prepare_is_relayout: bool

    def prepare(self, x: torch.Tensor) -> torch.Tensor: ...

    def expand_prepared(self, xp: torch.Tensor, *params: torch.Tensor) -> torch.Tensor: ...

    def expand_prepared_keep(self, xp: torch.Tensor, *params: torch.Tensor
                             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]: ...

    def expand_prepared_vjp(self, xp: torch.Tensor, kept: Sequence[torch.Tensor], *params: torch.Tensor
                            ) -> tuple[torch.Tensor, Vjp]: ...


class _RecomputedExpandConv(torch.autograd.Function):
    """conv(expand(x, *params), weight, bias) keeping the prepared x, a few input-sized tensors and the parameters."""

    @staticmethod
    def forward(ctx, expander: Expander, spec: ConvSpec, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            xp = expander.prepare(x)
            expanded, kept = expander.expand_prepared_keep(xp, *params)
            out = spec.conv(expanded, weight, bias)
        ctx.expander = expander
        ctx.spec = spec
        ctx.has_bias = bias is not None
        ctx.num_kept = len(kept)
        ctx.save_for_backward(xp if expander.prepare_is_relayout else x, *kept, weight, *params)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError("double backward (create_graph=True) through a KAN convolution built with "
                               "recompute=True is not supported: its backward is not differentiable. "
                               "Build the layer with recompute=False.")
        saved, *rest = ctx.saved_tensors
        kept, (weight, *params) = rest[:ctx.num_kept], rest[ctx.num_kept:]
        expander: Expander = ctx.expander
        spec: ConvSpec = ctx.spec
        need_x, need_w, need_b = ctx.needs_input_grad[2:5]
        need_expanded = need_x or any(ctx.needs_input_grad[5:])
        if expander.prepare_is_relayout:
            x_leaf, xp = None, saved
        else:
            with torch.enable_grad():
                x_leaf = saved.detach().requires_grad_(need_x)
                xp = expander.prepare(x_leaf)
        with torch.no_grad():
            expanded, vjp = expander.expand_prepared_vjp(xp.detach(), kept, *params)
            compute_dtype = grad_out.dtype
            bias_sizes = [weight.shape[0]] if ctx.has_bias else None
            grad_expanded, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad_out, expanded.to(compute_dtype), weight.to(compute_dtype), bias_sizes,
                spec.stride, spec.padding, spec.dilation, False, [0] * spec.ndim, spec.groups,
                [need_expanded, need_w, need_b and ctx.has_bias],
            )
            del expanded
            grad_x, grad_params = None, [None] * len(params)
            if grad_expanded is not None:
                grad_xp, *grad_params = vjp(grad_expanded)
                grad_params = [g if need else None for g, need in zip(grad_params, ctx.needs_input_grad[5:])]
                if need_x and grad_xp is not None:
                    if x_leaf is None:
                        grad_x = grad_xp.movedim(-1, 1)
                    else:
                        with torch.enable_grad():
                            (grad_x,) = torch.autograd.grad(xp, x_leaf, grad_xp)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(weight.dtype)
        return (None, None, grad_x, grad_weight, grad_bias, *grad_params)


def expand_then_conv(expander: Expander, spec: ConvSpec, x: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None, params: Sequence[torch.Tensor] = (),
                     recompute: bool = True) -> torch.Tensor:
    """``conv(expand(x, *params))``; with ``recompute`` the expansion is rebuilt in backward, not kept."""
    tensors = (x, weight, bias, *params)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if not recompute or not needs_grad or torch.compiler.is_compiling():
        return spec.conv(expander.expand_prepared(expander.prepare(x), *params), weight, bias)
    return _RecomputedExpandConv.apply(expander, spec, x, weight, bias, *params)
