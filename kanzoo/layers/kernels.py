"""Fused CPU kernels for the basis expansion and its vector-Jacobian product.

In eager PyTorch every step of an expansion (``tanh``, each recursion step, each ``sigmoid``, the
copy into the convolution's layout) is one pass over memory, and backward's rebuild plus VJP takes
several times longer than the convolution it feeds on grouped and depthwise layers. Here the layer's
own pointwise code is traced once per family with ``torch.compile`` and TorchInductor turns it into
one vectorised, multi-threaded C++ loop per direction:

- ``expand``: ``x -> (N, C, K + 1, *spatial)``, written directly in the convolution's memory layout;
- ``expand_vjp``: ``(x, grad of the expansion) -> (expansion, grad_x, *grad_params)``, the rebuild
  and the VJP in one pass, so backward needs nothing but ``x`` (1x the input kept for backward).

They run for float32 inputs on the CPU (other dtypes and devices use the eager path, which gives the
same results). The first call of each family compiles, which takes a few seconds and needs a C++
compiler; if compiling fails, kanzoo warns once and uses the eager path. ``KANZOO_FUSED_KERNELS=0``
or ``set_fused_kernels(False)`` turns the kernels off.
"""

from __future__ import annotations

import os
import types
import warnings
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn

from kanzoo.runtime import enabled_by_env, keep_freed_memory_for_training

if TYPE_CHECKING:
    from .kan_conv import KANConvBase

ENV_VAR = "KANZOO_FUSED_KERNELS"


_enabled = enabled_by_env(os.environ.get(ENV_VAR))
_failure: str | None = None
_compiled: dict[tuple[type, str], Callable] = {}


def set_fused_kernels(enabled: bool) -> None:
    """Turn the fused CPU kernels on or off for this process (a failed compiler stays off)."""
    global _enabled
    _enabled = bool(enabled)


def fused_kernels_enabled() -> bool:
    """Whether layers use the fused CPU kernels where they apply (on, and no compiler failure so far)."""
    return _enabled and _failure is None


def applies(layer: KANConvBase, x: torch.Tensor) -> bool:
    """Whether ``layer`` expands ``x`` with the fused kernels: float32 on the CPU, SiLU or no base branch."""
    return (fused_kernels_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and (layer.base_activation is None or type(layer.base_activation) is nn.SiLU)
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


def _expand_body(layer: KANConvBase, x: torch.Tensor, params: Sequence[torch.Tensor], dtype: torch.dtype,
                 channels_last: bool) -> torch.Tensor:
    base, _ = layer._base(x, None)
    return _stack(base, layer.basis_from(x, layer.squash(x), *params), dtype, channels_last)


def _vjp_body(layer: KANConvBase, x: torch.Tensor, grad: torch.Tensor, params: Sequence[torch.Tensor],
              dtype: torch.dtype, channels_last: bool) -> tuple[torch.Tensor, ...]:
    base, bases, grad_x, *grad_params = layer.expansion_vjp(x, layer.squash(x), None, params, grad)
    return (_stack(base, bases, dtype, channels_last), grad_x, *grad_params)


def _stack(base: torch.Tensor | None, bases: torch.Tensor | list[torch.Tensor], dtype: torch.dtype,
           channels_last: bool) -> torch.Tensor:
    """Base response and bases of ``(N, C, *spatial)`` stacked into one contiguous tensor holding
    ``(N, *spatial, C, K + 1)`` if ``channels_last``, else ``(N, C, K + 1, *spatial)``.

    Every part is moved to the stored layout before one ``stack`` on the innermost dimension it
    goes to, which the compiler lowers to a single pointwise loop over the output.
    """
    parts = _parts(base, bases)
    if not channels_last:
        return torch.stack(parts, 2).to(dtype)
    nd = parts[0].dim() - 2
    return torch.stack([p.permute(0, *range(2, 2 + nd), 1) for p in parts], -1).to(dtype)


def _parts(base: torch.Tensor | None, bases: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    """The ``K + 1`` responses ``(N, C, *spatial)`` of the expansion, base branch first."""
    return ([] if base is None else [base]) + (list(bases.unbind(2)) if isinstance(bases, torch.Tensor) else bases)


def from_stored_layout(stored: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The ``(N, C, K + 1, *spatial)`` view of an expansion stored as ``_stack`` stores it: memory
    ``(N, *spatial, C, K + 1)`` if ``channels_last``, else ``(N, C, K + 1, *spatial)``."""
    if not channels_last:
        return stored
    nd = stored.dim() - 3
    return stored.permute(0, nd + 1, nd + 2, *range(1, nd + 1))


def _kernel(family: type, kind: str) -> Callable:
    """The compiled ``kind`` kernel of a family, made on first use.

    Each family gets its own copy of the body's code object: dynamo keeps its compiled graphs (and
    its recompile limit) per code object, so the families do not evict each other.
    """
    key = (family, kind)
    if key not in _compiled:
        body = _expand_body if kind == "expand" else _vjp_body
        code = body.__code__.replace(co_name=f"{body.__name__}_{family.__name__}")
        fn = types.FunctionType(code, body.__globals__, code.co_name, body.__defaults__, body.__closure__)
        _compiled[key] = torch.compile(fn, fullgraph=True, options={"cpp.enable_tiling_heuristics": False})
    return _compiled[key]


def _run(layer: KANConvBase, kind: str, *args: object) -> tuple[torch.Tensor, ...] | torch.Tensor | None:
    """Call a compiled kernel, or return None after a compiler failure (warned about once)."""
    global _failure
    try:
        with torch.autocast("cpu", enabled=False):
            return _kernel(type(layer), kind)(layer, *args)
    except torch._dynamo.exc.TorchDynamoException as err:
        _failure = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(f"kanzoo: the fused CPU kernels could not be compiled ({_failure}); the layers fall back "
                      f"to the eager expansion (same results, slower). Set {ENV_VAR}=0 to skip the attempt.",
                      RuntimeWarning, stacklevel=3)
        return None


def expand(layer: KANConvBase, x: torch.Tensor, params: Sequence[torch.Tensor], dtype: torch.dtype,
           channels_last: bool) -> torch.Tensor | None:
    """The expansion ``(N, C, K + 1, *spatial)`` of ``x`` in ``dtype`` (memory ``(N, *spatial, C, K + 1)``
    when ``channels_last``), or None if the kernel could not be compiled."""
    stored = _run(layer, "expand", x, tuple(params), dtype, channels_last)
    return None if stored is None else from_stored_layout(stored, channels_last)


def expand_vjp(layer: KANConvBase, x: torch.Tensor, grad: torch.Tensor, params: Sequence[torch.Tensor],
               dtype: torch.dtype, channels_last: bool) -> tuple[torch.Tensor, ...] | None:
    """``(expansion, grad_x, *grad_params)`` given the expansion's gradient ``grad`` ``(N, C, K + 1, *spatial)``,
    or None if the kernel could not be compiled.

    The expansion is written to new memory rather than over ``grad``: the compiler fuses a fresh
    output into the loop that reads ``grad``, while writing into ``grad`` costs it a second pass.
    New memory is only cheap when ``malloc`` reuses freed pages, which the first call arranges
    (see ``kanzoo.runtime``).
    """
    keep_freed_memory_for_training()
    out = _run(layer, "vjp", x, grad, tuple(params), dtype, channels_last)
    if out is None:
        return None
    stored, *grads = out
    return (from_stored_layout(stored, channels_last), *grads)
