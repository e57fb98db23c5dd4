"""Expand-then-convolve with the expansion recomputed in backward instead of stored.

A KAN convolution is a pointwise basis expansion of the input followed by one ordinary grouped
convolution. Autograd would keep the expanded tensor (``K + 1`` times the input) for the
convolution's weight gradient, plus every intermediate of the expansion. Here only the (prepared)
input and the small basis parameters are kept; backward rebuilds the expansion together with its
vector-Jacobian product, runs the convolution's backward once, and maps the expanded gradient back.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
import torch.nn.functional as F

_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class ConvSpec:
    """The hyper-parameters of the single grouped convolution of a KAN layer.

    With ``sum_bases = K + 1`` (depthwise layers: one input channel per group), the same convolution
    runs on a contiguous expansion as a depthwise convolution over all expanded channels followed by
    a sum over each channel's ``K + 1`` responses, which CPU backends run several times faster than
    the equivalent grouped one.
    """

    __slots__ = ("ndim", "stride", "padding", "dilation", "groups", "sum_bases")

    def __init__(self, ndim: int, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                 groups: int, sum_bases: int = 0) -> None:
        self.ndim = ndim
        self.stride = list(stride)
        self.padding = list(padding)
        self.dilation = list(dilation)
        self.groups = groups
        self.sum_bases = sum_bases

    def conv(self, expanded: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Run the convolution (autocast-aware, like ``F.conv2d``)."""
        conv = _CONV_FNS[self.ndim]
        if not self._sums_bases(expanded):
            return conv(expanded, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        y = conv(expanded, self._depthwise_weight(weight), None, self.stride, self.padding, self.dilation,
                 expanded.shape[1])
        y = y.unflatten(1, (self.groups, self.sum_bases, -1)).sum(2).flatten(1, 2)
        return y if bias is None else y + bias.to(y.dtype).view(1, -1, *([1] * self.ndim))

    def _sums_bases(self, expanded: torch.Tensor) -> bool:
        """Whether to run as depthwise conv + sum: only for an NCHW-contiguous expansion (the grouped
        convolution is the faster one on a channels-last expansion)."""
        return bool(self.sum_bases) and expanded.is_contiguous()

    def _depthwise_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``(C * m, K + 1, *k)`` -> depthwise ``(C * (K + 1) * m, 1, *k)`` with channel ``(c * (K + 1) + k) * m + j``."""
        per_group = weight.shape[0] // self.groups
        return (weight.unflatten(0, (self.groups, per_group)).transpose(1, 2)
                .reshape(-1, 1, *weight.shape[2:]))

    def backward(self, grad_out: torch.Tensor, expanded: torch.Tensor, weight: torch.Tensor,
                 mask: Sequence[bool]) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Gradients of ``conv`` for (expanded, weight, bias) where ``mask`` asks for them."""
        if not self._sums_bases(expanded):
            bias_sizes = [weight.shape[0]] if mask[2] else None
            return torch.ops.aten.convolution_backward(
                grad_out, expanded, weight, bias_sizes, self.stride, self.padding, self.dilation, False,
                [0] * self.ndim, self.groups, list(mask))
        per_group = weight.shape[0] // self.groups
        spread = (grad_out.unflatten(1, (self.groups, 1, per_group))
                  .expand(-1, -1, self.sum_bases, -1, *grad_out.shape[2:]).reshape(
                      grad_out.shape[0], -1, *grad_out.shape[2:]))
        grad_expanded, grad_depthwise, _ = torch.ops.aten.convolution_backward(
            spread, expanded, self._depthwise_weight(weight), None, self.stride, self.padding, self.dilation,
            False, [0] * self.ndim, expanded.shape[1], [mask[0], mask[1], False])
        grad_weight = None
        if grad_depthwise is not None:
            grad_weight = (grad_depthwise.reshape(self.groups, self.sum_bases, per_group, *weight.shape[2:])
                           .transpose(1, 2).reshape(weight.shape))
        grad_bias = grad_out.sum((0, *range(2, grad_out.dim()))) if mask[2] else None
        return grad_expanded, grad_weight, grad_bias


class Expander(Protocol):
    """What ``expand_then_conv`` needs from a layer: an input preparation and the expansion with its VJP.

    ``prepare(x)`` is a cheap, differentiable preparation of the input (padding, contiguity);
    ``expand_prepared(xp, *params)`` returns the expanded tensor the convolution reads (autograd-aware);
    ``expand_prepared_keep(xp, *params, dtype=...)`` returns the expansion before ``to_conv_layout``
    with a few input-sized tensors to keep for backward; ``expand_prepared_vjp(xp, kept, params, out,
    grad_expanded)`` rebuilds that expansion (into ``out``, or as a new tensor of its layout) and maps
    the gradient of the convolution's input to the gradients of ``(xp, *params)``.
    ``prepare_is_relayout`` says that ``prepare`` does not pad (its gradient is the identity, and the
    prepared tensor may be saved instead of the input).
    """

    prepare_is_relayout: bool

    def prepare(self, x: torch.Tensor) -> torch.Tensor: ...

    def expand_prepared(self, xp: torch.Tensor, *params: torch.Tensor) -> torch.Tensor: ...

    def expand_prepared_keep(self, xp: torch.Tensor, *params: torch.Tensor, keep: bool = True,
                             dtype: torch.dtype | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]: ...

    def expand_prepared_vjp(self, xp: torch.Tensor, kept: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                            out: torch.Tensor, grad_expanded: torch.Tensor | None
                            ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...] | None]: ...

    def empty_expansion(self, xp: torch.Tensor, dtype: torch.dtype) -> torch.Tensor: ...

    def to_conv_layout(self, expanded: torch.Tensor) -> torch.Tensor: ...


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would cast a convolution's input ``x`` to, or None (autocast off, or float64)."""
    device_type = x.device.type
    if x.dtype != torch.float64 and device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


class _RecomputedExpandConv(torch.autograd.Function):
    """conv(expand(x, *params), weight, bias) keeping the prepared x, a few input-sized tensors and the parameters.

    Backward first computes the convolution's input gradient (which needs no expansion), then
    rebuilds the expansion block by block while applying its VJP, then the weight gradient.
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
        grad_x, grad_weight, grad_bias, grad_params = None, None, None, [None] * len(params)
        with torch.no_grad():
            compute_dtype = grad_out.dtype
            weight_c = weight.to(compute_dtype)
            expanded = expander.empty_expansion(xp, compute_dtype)
            if (expanded.dim() == 5
                    and expander.to_conv_layout(expanded).is_contiguous(memory_format=torch.channels_last)):
                # one copy here instead of one inside each of the two convolution backward calls
                grad_out = grad_out.contiguous(memory_format=torch.channels_last)
            grad_expanded = None
            if need_expanded:
                # the input gradient of a convolution reads only the input's shape and layout, not its values
                grad_expanded = spec.backward(grad_out, expander.to_conv_layout(expanded), weight_c,
                                              (True, False, False))[0]
            expanded, grads = expander.expand_prepared_vjp(xp.detach(), kept, params, expanded, grad_expanded)
            del grad_expanded
            if need_w or (need_b and ctx.has_bias):
                _, grad_weight, grad_bias = spec.backward(grad_out, expander.to_conv_layout(expanded), weight_c,
                                                          (False, need_w, need_b and ctx.has_bias))
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
