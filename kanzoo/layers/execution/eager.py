"""The eager expansion and its VJP, in blocks of samples small enough to stay in the CPU's cache.

Used wherever the compiled kernels do not apply (other dtypes and devices, other base activations,
kernels turned off). Each block of samples is expanded (or rebuilt with its VJP) with the family's
pointwise code and written into the expansion; what backward may keep instead of recomputing
(``squash(x)`` and a SiLU base branch's ``sigmoid(x)``) is collected alongside.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..basis import BasisFamily
from .layout import write_responses
from .responses import base_response, responses_vjp, with_base

# Values per block of the blocked expansion on the CPU.
_BLOCK_ELEMENTS = 1 << 16


def batch_blocks(xp: torch.Tensor) -> list[slice]:
    """Blocks of samples holding about ``_BLOCK_ELEMENTS`` values (a single block off the CPU)."""
    total = xp.shape[0]
    per_sample = max(1, xp[:1].numel())
    step = total if xp.device.type != "cpu" else max(1, _BLOCK_ELEMENTS // per_sample)
    return [slice(i, min(i + step, total)) for i in range(0, total, step)] or [slice(0, 0)]


def expand_into(family: BasisFamily, xp: torch.Tensor, params: Sequence[torch.Tensor], out: torch.Tensor,
                layout: torch.memory_format, keep: bool) -> tuple[torch.Tensor, ...]:
    """Write the expansion of ``xp`` into ``out``; return what backward may keep (nothing unless ``keep``):
    ``squash(xp)`` and, for a SiLU base branch, ``sigmoid(xp)``, each laid out in ``layout``."""
    kept: list[torch.Tensor] = []
    for block in batch_blocks(xp):
        x = xp[block].contiguous(memory_format=layout)
        squashed = family.squash(x)
        base, sig = base_response(family, x)
        bases = family.basis_from(x, squashed, *params)
        write_responses(with_base(base, bases), out[block])
        if keep:
            parts = (*squashed, sig) if sig is not None else squashed
            if not kept:
                kept = [torch.empty_like(xp, dtype=part.dtype, memory_format=layout) for part in parts]
            for full, part in zip(kept, parts):
                full[block] = part
    return tuple(kept)


def rebuild_into(family: BasisFamily, xp: torch.Tensor, kept: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                 out: torch.Tensor, layout: torch.memory_format, grad_bases: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, ...] | None:
    """Rebuild the expansion of ``xp`` into ``out`` and, given its gradient ``grad_bases``
    ``(N, C, K + 1, *spatial)``, return ``(grad_xp, *grad_params)`` (None without a gradient).

    ``kept`` is what ``expand_into`` kept (empty: recomputed here).
    """
    silu_base = type(family.base_activation) is nn.SiLU and bool(kept)
    squashed_kept = kept[:len(kept) - silu_base]
    grad_x = None if grad_bases is None else torch.empty_like(
        xp, dtype=torch.promote_types(xp.dtype, grad_bases.dtype))
    grad_params: list[torch.Tensor | None] = [None] * len(params)
    for block in batch_blocks(xp):
        x = xp[block].contiguous(memory_format=layout)
        squashed = tuple(k[block] for k in squashed_kept) if kept else family.squash(x)
        sig = kept[-1][block] if silu_base else None
        if grad_bases is None:
            base, _ = base_response(family, x, sig)
            write_responses(with_base(base, family.basis_from(x, squashed, *params)), out[block])
            continue
        rebuilt, grad_x[block], block_grad_params = responses_vjp(family, x, squashed, sig, params,
                                                                  grad_bases[block])
        write_responses(rebuilt, out[block])
        grad_params = [g if total is None else (total if g is None else total + g)
                       for total, g in zip(grad_params, block_grad_params)]
    if grad_x is None:
        return None
    return (grad_x, *grad_params)

