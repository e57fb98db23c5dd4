"""The ``K + 1`` responses of an input (base branch, then the family's bases) and their VJP.

This is the pointwise math every execution path shares: the eager path runs it block by block, the
compiled kernels trace it once per family.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..basis import Bases, BasisFamily


def base_response(family: BasisFamily, x: torch.Tensor, sig: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The base branch of ``x`` (None without one; ``x`` itself for the identity) and, for SiLU, the sigmoid it was
    made from (given or computed)."""
    activation = family.base_activation
    if activation is None:
        return None, None
    if type(activation) is nn.SiLU:
        sig = torch.sigmoid(x) if sig is None else sig
        return x * sig, sig
    if type(activation) is nn.Identity:
        return x, None
    return activation(x), None


def responses(family: BasisFamily, x: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The base response (if any) followed by the bases (a list of tensors, or one block), as ``layout`` takes them."""
    base, _ = base_response(family, x)
    return with_base(base, family.basis_from(x, family.squash(x), *params))


def with_base(base: torch.Tensor | None, bases: Bases) -> list[torch.Tensor]:
    """The base response (if any) and the bases as one list of responses and blocks of responses."""
    return ([] if base is None else [base]) + ([bases] if isinstance(bases, torch.Tensor) else list(bases))


def responses_vjp(family: BasisFamily, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], sig: torch.Tensor | None,
                  params: Sequence[torch.Tensor], grad: torch.Tensor
                  ) -> tuple[list[torch.Tensor], torch.Tensor, tuple[torch.Tensor | None, ...]]:
    """The responses of ``x`` and the gradients ``grad_x`` and ``grad_params`` for the expansion's gradient
    ``grad`` ``(N, C, K + 1, *spatial)``.

    ``squashed`` is ``squash(x)`` and ``sig`` the SiLU base branch's ``sigmoid(x)`` (None: computed).
    """
    base, sig = base_response(family, x, sig)
    bases, basis_vjp = family.basis_vjp(x, squashed, *params)
    grad_x, *grad_params = basis_vjp(grad[:, :, 0 if base is None else 1:])
    if sig is not None:
        grad_x = grad_x.addcmul_(grad[:, :, 0], _silu_derivative(sig, base))
    elif type(family.base_activation) is nn.Identity:
        grad_x = grad_x.add_(grad[:, :, 0])
    elif base is not None:
        grad_x = grad_x.add_(_activation_vjp(family.base_activation, x)(grad[:, :, 0]))
    return with_base(base, bases), grad_x, tuple(grad_params)


def _silu_derivative(sig: torch.Tensor, silu: torch.Tensor) -> torch.Tensor:
    """d silu(x) / dx = sigmoid(x) (1 + x (1 - sigmoid(x))) = sig + silu (1 - sig)."""
    return torch.addcmul(sig, silu, 1 - sig)


def _activation_vjp(activation: nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function mapping the gradient of ``activation(x)`` to the gradient of ``x`` (by autograd)."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        y = activation(leaf)
    return lambda grad: torch.autograd.grad(y, leaf, grad)[0]
