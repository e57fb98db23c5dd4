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

    def backward(self, grad_out: torch.Tensor, template: torch.Tensor, weight: torch.Tensor,
                 rebuild: Callable[[torch.Tensor | None], torch.Tensor], mask: Sequence[bool]
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Gradients of ``conv`` for (weight, bias) where ``mask[1:]`` asks for them.

        ``template`` has the expansion's shape and layout; its values are not read. The gradient of
        the expansion (if ``mask[0]``, else None) goes to ``rebuild``, which returns the expansion
        that the weight gradient reads. ``grad_out`` is prepared once for both backward convolutions:
        channels-last like the expansion, and for depthwise conv + sum spread over the bases.
        """
        if (template.dim() == 4 and template.is_contiguous(memory_format=torch.channels_last)
                and not template.is_contiguous()):
            grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        conv_weight, grad, groups = weight, grad_out, self.groups
        sums = self._sums_bases(template)
        if sums:
            per_group = weight.shape[0] // self.groups
            conv_weight, groups = self._depthwise_weight(weight), template.shape[1]
            grad = (grad_out.unflatten(1, (self.groups, 1, per_group))
                    .expand(-1, -1, self.sum_bases, -1, *grad_out.shape[2:]).reshape(
                        grad_out.shape[0], -1, *grad_out.shape[2:]))

        def conv_backward(expanded: torch.Tensor, need: list[bool]) -> tuple[torch.Tensor | None, ...]:
            bias_sizes = [weight.shape[0]] if need[2] else None
            return torch.ops.aten.convolution_backward(
                grad, expanded, conv_weight, bias_sizes, self.stride, self.padding, self.dilation, False,
                [0] * self.ndim, groups, need)

        grad_expanded = conv_backward(template, [True, False, False])[0] if mask[0] else None
        del template  # freed now, so that the rebuilt expansion can take its memory
        expanded = rebuild(grad_expanded)
        del grad_expanded
        if not (mask[1] or mask[2]):
            return None, None
        _, grad_weight, grad_bias = conv_backward(expanded, [False, mask[1], mask[2] and not sums])
        if sums and grad_weight is not None:
            grad_weight = (grad_weight.reshape(self.groups, self.sum_bases, per_group, *weight.shape[2:])
                           .transpose(1, 2).reshape(weight.shape))
        if sums and mask[2]:
            grad_bias = grad_out.sum((0, *range(2, grad_out.dim())))
        return grad_weight, grad_bias


class Expander(Protocol):
    """What ``expand_then_conv`` needs from a layer: an input preparation and the expansion with its VJP.

    ``prepare(x)`` is a cheap, differentiable preparation of the input (padding, contiguity);
    ``expand_prepared(xp, *params)`` returns the expanded tensor the convolution reads (autograd-aware);
    ``expand_prepared_keep(xp, *params, dtype=...)`` returns the expansion before ``to_conv_layout``
    with a few input-sized tensors to keep for backward; ``expand_prepared_vjp(xp, kept, params, dtype,
    grad_expanded)`` rebuilds that expansion (laid out as ``empty_expansion``) and maps the gradient of
    the convolution's input to the gradients of ``(xp, *params)``.
    ``prepare_is_relayout`` says that ``prepare`` does not pad (its gradient is the identity, and the
    prepared tensor may be saved instead of the input).
    """

    prepare_is_relayout: bool

    def prepare(self, x: torch.Tensor) -> torch.Tensor: ...

    def expand_prepared(self, xp: torch.Tensor, *params: torch.Tensor) -> torch.Tensor: ...

    def expand_prepared_keep(self, xp: torch.Tensor, *params: torch.Tensor, keep: bool = True,
                             dtype: torch.dtype | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]: ...

    def expand_prepared_vjp(self, xp: torch.Tensor, kept: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                            dtype: torch.dtype, grad_expanded: torch.Tensor | None
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
