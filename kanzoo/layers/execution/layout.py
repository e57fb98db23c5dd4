"""The memory layout of the expansion, defined once.

The expansion of an input ``(N, C, *spatial)`` holds ``K + 1`` responses per input channel (the base
branch first, then the ``K`` bases). Its logical shape is ``(N, C, K + 1, *spatial)``; flattening
``C`` and ``K + 1`` gives the convolution's input ``(N, C * (K + 1), *spatial)``, channel-major
(expanded channel ``c * (K + 1) + k``), so that each group's expanded channels are contiguous.

It is stored in one of two memory orders:

- NCHW: memory ``(N, C, K + 1, *spatial)``, the logical order itself;
- channels-last (2d on the CPU): memory ``(N, *spatial, C, K + 1)``, so that the flattened
  convolution input is a channels-last tensor.

Every function here derives its permutation from :func:`stored_order`.
"""

from __future__ import annotations

from typing import Sequence

import torch


def stored_order(ndim: int, channels_last: bool) -> tuple[int, ...]:
    """The logical dimensions ``(N, C, K + 1, *spatial)`` in the order memory holds them."""
    spatial = tuple(range(3, 3 + ndim))
    return (0, *spatial, 1, 2) if channels_last else (0, 1, 2, *spatial)


def _inverse(order: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(range(len(order)), key=lambda i: order[i]))


def from_stored(stored: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The logical ``(N, C, K + 1, *spatial)`` view of an expansion held in stored order."""
    if not channels_last:
        return stored
    return stored.permute(_inverse(stored_order(stored.dim() - 3, channels_last)))


def empty_expansion(x: torch.Tensor, num_responses: int, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    """An uninitialised expansion of ``x`` ``(N, C, *spatial)``: a logical view of new memory in stored order."""
    logical = (x.shape[0], x.shape[1], num_responses, *x.shape[2:])
    stored = tuple(logical[d] for d in stored_order(x.dim() - 2, channels_last))
    return from_stored(x.new_empty(stored, dtype=dtype), channels_last)


def stack_responses(responses: Sequence[torch.Tensor], ndim: int, dtype: torch.dtype, channels_last: bool
                    ) -> torch.Tensor:
    """The responses (or blocks of them, see ``write_responses``) as one new expansion (a logical view).

    Each response is moved to the stored order before one ``stack`` on the innermost dimension it goes
    to, which a compiler lowers to a single pointwise loop writing the stored memory.
    """
    singles = [r for response in responses for r in (response.unbind(2) if response.dim() == ndim + 3 else [response])]
    order = stored_order(ndim, channels_last)
    per_response = [d if d < 2 else d - 1 for d in order if d != 2]
    stored = torch.stack([r.permute(per_response) for r in singles], order.index(2)).to(dtype)
    return from_stored(stored, channels_last)


def _blocks(responses: Sequence[torch.Tensor], ndim: int) -> list[torch.Tensor]:
    """Responses ``(N, C, *spatial)`` or blocks of them ``(N, C, k, *spatial)``, all as blocks."""
    return [r if r.dim() == ndim + 3 else r.unsqueeze(2) for r in responses]


def concat_responses(responses: Sequence[torch.Tensor], ndim: int) -> torch.Tensor:
    """The responses (or blocks of them, see ``write_responses``) as one NCHW expansion (autograd-aware)."""
    return torch.cat(_blocks(responses, ndim), dim=2)


def write_responses(responses: Sequence[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """Write the responses ``(N, C, *spatial)``, or blocks of them ``(N, C, k, *spatial)``, in order into
    the expansion ``out`` and return it."""
    start = 0
    for block in _blocks(responses, out.dim() - 3):
        out[:, :, start:start + block.shape[2]] = block
        start += block.shape[2]
    return out
