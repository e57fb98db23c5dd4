"""Expand-then-convolve with the expansion recomputed in backward instead of stored.

A KAN convolution is a pointwise basis expansion of the input followed by one ordinary grouped
convolution. Autograd would keep the expanded tensor (``K + 1`` times the input) for the
convolution's weight gradient, plus every intermediate of the expansion. Here only the (prepared)
input and the small basis parameters are kept; backward rebuilds the expansion together with its
vector-Jacobian product, runs the convolution's backward once, and maps the expanded gradient back.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .convolution import ConvSpec
from .expander import Expander


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would cast a convolution's input ``x`` to, or None (autocast off, or float64)."""
    device_type = x.device.type
    if x.dtype != torch.float64 and device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


class _RecomputedExpandConv(torch.autograd.Function):
    """conv(expand(x, *params), weight, bias) keeping the prepared x, a few input-sized tensors and the parameters.

    Backward first computes the convolution's input gradient (which needs no expansion), then
    rebuilds the expansion while applying its VJP, then the weight gradient (see ``ConvSpec.backward``).
    """

    @staticmethod
    def forward(ctx, expander: Expander, spec: ConvSpec, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            xp = expander.prepare(x)
            expanded, kept = expander.expand_prepared_keep(xp, *params, dtype=_autocast_dtype(x))
            out = spec.conv(expander.to_conv_layout(expanded), weight, bias)
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
        need_params = ctx.needs_input_grad[5:]
        need_expanded = need_x or any(need_params)
        if expander.prepare_is_relayout:
            x_leaf, xp = None, saved
        else:
            with torch.enable_grad():
                x_leaf = saved.detach().requires_grad_(need_x)
                xp = expander.prepare(x_leaf)
        grads: tuple[torch.Tensor | None, ...] | None = None

        def rebuild(grad_expanded: torch.Tensor | None) -> torch.Tensor:
            nonlocal grads
            expanded, grads = expander.expand_prepared_vjp(xp.detach(), kept, params, compute_dtype, grad_expanded)
            return expander.to_conv_layout(expanded)

        with torch.no_grad():
            compute_dtype = grad_out.dtype
            grad_weight, grad_bias = spec.backward(
                grad_out, expander.to_conv_layout(expander.empty_expansion(xp, compute_dtype)),
                weight.to(compute_dtype), rebuild, (need_expanded, need_w, need_b and ctx.has_bias))
        grad_x, grad_params = None, [None] * len(params)
        if grads is not None:
            grad_xp, *grad_params = grads
            grad_params = [g if need else None for g, need in zip(grad_params, need_params)]
            if need_x:
                if x_leaf is None:
                    grad_x = grad_xp
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
