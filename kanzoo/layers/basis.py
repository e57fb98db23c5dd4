"""The contract between a basis family and the code that runs it.

A family describes its basis pointwise, on one input tensor ``x`` ``(N, C, *spatial)``; the execution
code (``kanzoo.layers.execution``: eager, recomputing, compiled) decides how and where that runs. Every
KAN convolution layer satisfies :class:`BasisFamily`; the execution code reads a layer only through it.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, Union

import torch
from torch import nn

Bases = Union[torch.Tensor, list[torch.Tensor]]
"""The ``K`` basis responses of ``x``: a list of ``K`` tensors shaped like ``x``, or one ``(N, C, K, *spatial)``."""

BasisVJP = Callable[[torch.Tensor], tuple[Union[torch.Tensor, None], ...]]
"""Maps the gradient of the bases ``(N, C, K, *spatial)`` to ``(grad_x, *grad_params)``."""


class BasisFamily(Protocol):
    """What the execution code needs from a layer, and therefore what a family implements.

    The responses of an input channel are ``base_activation(x)`` (when not None) followed by the
    ``K = num_bases`` bases. All methods are pointwise in ``x`` and may be traced by ``torch.compile``
    (the compiled CPU kernels trace ``squash``, ``basis_from`` and ``basis_vjp``); a family may branch on
    ``torch.compiler.is_compiling()`` to give the compiler a gather-free form.

    - ``squash(x)``: at most one pointwise map of ``x`` that the bases read (e.g. ``(tanh x,)``), which
      the eager path may keep for backward instead of recomputing it; ``()`` when there is none.
    - ``basis_from(x, squashed, *params)``: the bases of ``x`` given ``squashed = squash(x)`` and the
      learned tensors ``params = basis_parameters()``.
    - ``basis_vjp(x, squashed, *params)``: the same bases and a :data:`BasisVJP`, so that backward
      rebuilds the bases and their derivatives in one pass.
    - ``basis_parameters()``: the learned tensors the bases read, passed explicitly so that backward
      can rebuild the expansion from the input alone.
    """

    ndim: int
    in_channels: int
    base_activation: nn.Module | None

    @property
    def num_bases(self) -> int: ...

    @property
    def num_responses(self) -> int: ...

    def squash(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]: ...

    def basis_from(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], *params: torch.Tensor) -> Bases: ...

    def basis_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], *params: torch.Tensor
                  ) -> tuple[Bases, BasisVJP]: ...

    def basis_parameters(self) -> tuple[torch.Tensor, ...]: ...


def weighted_sum(grad: torch.Tensor, derivatives: Sequence[torch.Tensor | float]) -> torch.Tensor:
    """``sum_k grad[:, :, k] * derivatives[k]``: the chain rule through ``K`` bases (a derivative may be a constant)."""
    total: torch.Tensor | None = None
    for k, d in enumerate(derivatives):
        if not isinstance(d, torch.Tensor) and d == 0:
            continue
        term = grad[:, :, k] * d
        total = term if total is None else total.add_(term)
    return torch.zeros_like(grad[:, :, 0]) if total is None else total
