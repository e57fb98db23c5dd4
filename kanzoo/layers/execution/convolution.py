"""The one grouped convolution of a KAN layer, over its expansion, with a backward that rebuilds the expansion.

``ConvSpec.backward`` computes the gradient of the convolution's input first (it needs no expansion),
hands it to a ``rebuild`` callback that recomputes the expansion, then computes the weight gradient
from the rebuilt expansion.
"""

from __future__ import annotations

from typing import Callable, Sequence

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
