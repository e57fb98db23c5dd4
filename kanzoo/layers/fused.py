"""Expand-then-convolve with the expansion recomputed in backward instead of stored.

A KAN convolution is a pointwise basis expansion of the input followed by one ordinary grouped
convolution. Autograd would keep the expanded tensor (``K + 1`` times the input) for the
convolution's weight gradient, plus every intermediate of the expansion. Here only the input and
the (small) basis parameters are kept; backward rebuilds the expansion, runs the convolution's
backward once, and sends the gradient through the rebuilt expansion.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

ExpandFn = Callable[..., torch.Tensor]

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


class _RecomputedExpandConv(torch.autograd.Function):
    """conv(expand(x, *params), weight, bias) keeping only x, weight and params for backward."""

    @staticmethod
    def forward(ctx, expand: ExpandFn, spec: ConvSpec, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            expanded = expand(x, *params)
            out = spec.conv(expanded, weight, bias)
        ctx.expand = expand
        ctx.spec = spec
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, *params)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, *params = ctx.saved_tensors
        spec: ConvSpec = ctx.spec
        need_x, need_w, need_b = ctx.needs_input_grad[2:5]
        need_params = ctx.needs_input_grad[5:]
        leaves = [x.detach().requires_grad_(need_x)]
        leaves += [p.detach().requires_grad_(need) for p, need in zip(params, need_params)]
        need_expanded = need_x or any(need_params)
        with torch.enable_grad():
            expanded = ctx.expand(*leaves)
        compute_dtype = grad_out.dtype
        bias_sizes = [weight.shape[0]] if ctx.has_bias else None
        grad_expanded, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_out, expanded.detach().to(compute_dtype), weight.to(compute_dtype), bias_sizes,
            spec.stride, spec.padding, spec.dilation, False, [0] * spec.ndim, spec.groups,
            [need_expanded, need_w, need_b and ctx.has_bias],
        )
        grads: list[torch.Tensor | None] = [None] * len(leaves)
        wanted = [i for i, leaf in enumerate(leaves) if leaf.requires_grad]
        if wanted and grad_expanded is not None:
            found = torch.autograd.grad(expanded, [leaves[i] for i in wanted], grad_expanded.to(expanded.dtype))
            for i, g in zip(wanted, found):
                grads[i] = g
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(weight.dtype)
        return (None, None, grads[0], grad_weight, grad_bias, *grads[1:])


def expand_then_conv(expand: ExpandFn, spec: ConvSpec, x: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None, params: Sequence[torch.Tensor] = (),
                     recompute: bool = True) -> torch.Tensor:
    """``conv(expand(x, *params))``; with ``recompute`` the expansion is rebuilt in backward, not kept."""
    tensors = (x, weight, bias, *params)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if not recompute or not needs_grad or torch.compiler.is_compiling():
        return spec.conv(expand(x, *params), weight, bias)
    return _RecomputedExpandConv.apply(expand, spec, x, weight, bias, *params)
