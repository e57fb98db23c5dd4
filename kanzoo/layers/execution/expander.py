"""The execution strategy of one layer: how its input becomes the convolution's input, and back.

An :class:`Expander` pads the input where the padding mode asks for it, chooses the expansion's memory
layout, and computes the expansion (and, in backward, rebuilds it with its VJP) with the compiled CPU
kernels where they apply and the eager path elsewhere. A layer builds one per call from its
:class:`~kanzoo.layers.basis.BasisFamily` and its padding; the recomputing autograd Function
(``recompute``) drives it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..basis import BasisFamily
from . import compiled, eager
from .layout import concat_responses, empty_expansion
from .responses import with_base


def pad_arg(before: Sequence[int], after: Sequence[int]) -> list[int]:
    """``F.pad`` wants (last dim before, last dim after, previous dim before, ...)."""
    out: list[int] = []
    for b, a in zip(reversed(before), reversed(after)):
        out += [b, a]
    return out


class Expander:
    """Expands a layer's input for its one grouped convolution.

    ``padding_mode='zeros'`` pads the expansion (the convolution pads it, plus ``extra_zero_pad`` at the
    end of each dimension for uneven padding); the other modes pad the input before it is expanded.
    """

    def __init__(self, family: BasisFamily, groups: int, padding_mode: str, pad_before: Sequence[int],
                 pad_after: Sequence[int]) -> None:
        self.family = family
        self.groups = groups
        self.padding_mode = padding_mode
        self.pad_before = tuple(pad_before)
        self.pad_after = tuple(pad_after)

    @property
    def prepare_is_relayout(self) -> bool:
        """True when ``prepare`` does not pad ``x`` (it then only lays ``x`` out, and its gradient is the identity)."""
        return not (self.padding_mode != "zeros" and any(self.pad_before + self.pad_after))

    @property
    def extra_zero_pad(self) -> tuple[int, ...] | None:
        """Zeros added after the end of each dimension for uneven zero padding (the convolution pads the rest)."""
        if self.padding_mode != "zeros" or self.pad_before == self.pad_after:
            return None
        return tuple(a - b for a, b in zip(self.pad_after, self.pad_before))

    def channels_last(self, x: torch.Tensor) -> bool:
        """Whether the convolution reads a channels-last expansion of ``x`` (2d on the CPU only).

        The compiled kernels follow ``x``'s memory format, as ``nn.Conv2d`` does: they write either
        layout at the same speed, and with the allocator keeping freed memory (see ``kanzoo.runtime``)
        the CPU's NCHW grouped and depthwise convolutions over the expansion are as fast as the
        channels-last ones, so an NCHW input and output need no relayout. The eager path takes
        channels-last for ``K + 1 >= 8`` and for depthwise layers, where its convolutions run 1.3-2x
        faster on it.
        """
        family = self.family
        if family.ndim != 2 or x.device.type != "cpu":
            return False
        if compiled.applies(family, x):
            return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return family.num_responses >= 8 or self.groups == family.in_channels > 1

    def _memory_format(self, x: torch.Tensor) -> torch.memory_format:
        return torch.channels_last if self.channels_last(x) else torch.contiguous_format

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x`` for non-zero padding modes; contiguous ``(N, C, *spatial)``, channels-last where the
        compiled kernels write a channels-last expansion."""
        if not self.prepare_is_relayout:
            x = F.pad(x, pad_arg(self.pad_before, self.pad_after), mode=self.padding_mode)
        if compiled.applies(self.family, x) and self.channels_last(x):
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    def expand_prepared(self, xp: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        """The convolution's input ``(N, C * (K + 1), *spatial)`` for a prepared input (autograd-aware)."""
        traced = torch.compiler.is_compiling() or torch.jit.is_tracing()  # export: plain ops, any batch size
        if traced or (torch.is_grad_enabled() and (xp.requires_grad or any(p.requires_grad for p in params))):
            family = self.family
            base = None if family.base_activation is None else family.base_activation(xp)
            bases = family.basis_from(xp, family.squash(xp), *params)
            return self.to_conv_layout(concat_responses(with_base(base, bases), family.ndim))
        return self.to_conv_layout(self.expand_prepared_keep(xp, *params, keep=False)[0])

    def expand_prepared_keep(self, xp: torch.Tensor, *params: torch.Tensor, keep: bool = True,
                             dtype: torch.dtype | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The expansion ``(N, C, K + 1, *spatial)`` of ``xp`` (no autograd) and what backward keeps.

        With the compiled kernels nothing but ``xp`` is needed in backward. Otherwise kept are
        ``squash(xp)`` and, for a SiLU base branch, ``sigmoid(xp)``: with the input itself at most three
        tensors of the input's size, and they spare backward its transcendental functions.
        """
        dtype = dtype or xp.dtype
        if compiled.applies(self.family, xp):
            expanded = compiled.expand(self.family, xp, params, dtype, self.channels_last(xp))
            if expanded is not None:
                return expanded, ()
        out = self.empty_expansion(xp, dtype)
        return out, eager.expand_into(self.family, xp, params, out, self._memory_format(xp), keep)

    def expand_prepared_vjp(self, xp: torch.Tensor, kept: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                            dtype: torch.dtype, grad_expanded: torch.Tensor | None
                            ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...] | None]:
        """Rebuild the expansion of ``xp`` in ``dtype`` and, given the gradient of the convolution's input,
        map it to ``(grad_xp, *grad_params)``.

        Returns the rebuilt expansion (laid out as ``empty_expansion``) and the gradients (None
        without ``grad_expanded``). ``kept`` is what ``expand_prepared_keep`` kept (empty: recomputed here).
        """
        grad_bases = None if grad_expanded is None else self._grad_to_bases(grad_expanded)
        if compiled.applies(self.family, xp):
            channels_last = self.channels_last(xp)
            if grad_bases is None:
                expanded = compiled.expand(self.family, xp, params, dtype, channels_last)
                if expanded is not None:
                    return expanded, None
            else:
                fused = compiled.expand_vjp(self.family, xp, grad_bases, params, dtype, channels_last)
                if fused is not None:
                    return fused[0], tuple(fused[1:])
        out = self.empty_expansion(xp, dtype)
        grads = eager.rebuild_into(self.family, xp, kept, params, out, self._memory_format(xp), grad_bases)
        return out, grads

    def empty_expansion(self, xp: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised expansion ``(N, C, K + 1, *spatial)`` of ``xp``, stored channels-last where the
        convolution reads it so (see ``channels_last``)."""
        return empty_expansion(xp, self.family.num_responses, dtype, self.channels_last(xp))

    def to_conv_layout(self, expanded: torch.Tensor) -> torch.Tensor:
        """``(N, C, K + 1, *spatial)`` -> the convolution's ``(N, C * (K + 1), *spatial)`` (plus any extra zero pad)."""
        expanded = expanded.flatten(1, 2)
        extra = self.extra_zero_pad
        if extra is not None:
            expanded = F.pad(expanded, pad_arg((0,) * len(extra), extra))
        return expanded

    def _grad_to_bases(self, grad_expanded: torch.Tensor) -> torch.Tensor:
        """Inverse of ``to_conv_layout`` for a gradient: ``(N, C, K + 1, *spatial)``."""
        extra = self.extra_zero_pad
        if extra is not None:
            crop = tuple(slice(0, size - e) for size, e in zip(grad_expanded.shape[2:], extra))
            grad_expanded = grad_expanded[(slice(None), slice(None), *crop)]
        return grad_expanded.unflatten(1, (self.family.in_channels, self.family.num_responses))
