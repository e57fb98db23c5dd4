"""The KAN paper's sparsity regularisation, on the magnitudes of the basis functions of every KAN conv.

For a layer, the magnitude of the edge from input channel ``c`` to output ``o`` is the mean absolute basis
weight ``m[o, c] = mean_{k, i} |w[o, c, k, i]|`` (the base branch is not penalised, so a regularised edge tends
to its base branch, which is what pruning removes cheaply). The layer's L1 term is the sum of its edges'
magnitudes, as the paper's ``|Phi|_1``, its entropy term ``-sum p log p`` with ``p = m / sum m`` (which
concentrates the magnitude on few edges). The regularisation added to the loss is
``l1 * sum_layers (L1 + entropy * H)``, as ``lamb * (l1 + lamb_entropy * entropy)`` in pykan. Since every weight
of an edge gets ``l1 / (K * taps)`` of the L1 term's gradient, ``l1`` is of the order of a weight decay
(1e-4 to 1e-3 for the quick start's model).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers import KANConvBase

__all__ = ["KANRegularizer", "kan_regularization"]


def kan_regularization(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L1, entropy)`` summed over every KAN conv of ``model`` (differentiable; zeros without KAN convs)."""
    l1 = entropy = None
    for module in model.modules():
        if not isinstance(module, KANConvBase) or module.num_bases == 0:
            continue
        magnitude = module.basis_weight.abs().float().mean(dim=tuple(range(2, module.basis_weight.dim())))
        layer_l1 = magnitude.sum()
        share = magnitude / magnitude.sum().clamp(min=1e-12)
        layer_entropy = -(share * torch.log(share.clamp(min=1e-12))).sum()
        l1 = layer_l1 if l1 is None else l1 + layer_l1
        entropy = layer_entropy if entropy is None else entropy + layer_entropy
    if l1 is None:
        zero = torch.zeros(())
        return zero, zero
    return l1, entropy


class KANRegularizer:
    """``loss += l1 * (L1 + entropy * H)`` over a model's KAN convs; the last terms are kept for logging."""

    def __init__(self, l1: float, entropy: float = 0.0) -> None:
        for name, value in (("l1", l1), ("entropy", entropy)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"the KAN regularisation weight {name} must be a finite number >= 0, got {value!r}")
        if entropy > 0 and l1 == 0:
            raise ValueError("the entropy weight scales the entropy term inside the L1 regularisation; give l1 > 0 too")
        self.l1, self.entropy = float(l1), float(entropy)

    def __call__(self, model: nn.Module) -> tuple[torch.Tensor, dict[str, float]]:
        """The penalty to add to the loss and the unweighted terms ``{'kan_l1': ..., 'kan_entropy': ...}``."""
        l1, entropy = kan_regularization(getattr(model, "module", model))
        penalty = self.l1 * (l1 + self.entropy * entropy)
        return penalty, {"kan_l1": float(l1.detach()), "kan_entropy": float(entropy.detach())}
