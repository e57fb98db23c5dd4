"""Compiled CPU kernels for the expansion and its vector-Jacobian product.

In eager PyTorch every step of an expansion (``tanh``, each recursion step, each ``sigmoid``, the
copy into the convolution's layout) is one pass over memory, and backward's rebuild plus VJP takes
several times longer than the convolution it feeds on grouped and depthwise layers. Here a family's
own pointwise code (its :class:`~kanzoo.layers.basis.BasisFamily` methods) is traced once per layer
class with ``torch.compile``, and TorchInductor turns it into one vectorised, multi-threaded C++ loop
per direction:

- ``expand``: ``x -> (N, C, K + 1, *spatial)``, written directly in the stored layout (see ``layout``);
- ``expand_vjp``: ``(x, grad of the expansion) -> (expansion, grad_x, *grad_params)``, the rebuild
  and the VJP in one pass, so backward needs nothing but ``x`` (1x the input kept for backward).

They run for float32 inputs on the CPU (other dtypes and devices use the eager path, which gives the
same results). The first call of each layer class compiles, which takes a few seconds and needs a C++
compiler; if compiling fails, kanzoo warns once and uses the eager path. ``KANZOO_FUSED_KERNELS=0``
or ``set_fused_kernels(False)`` turns the kernels off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import types
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from kanzoo.runtime import enabled_by_env, keep_freed_memory_for_training

from ..basis import BasisFamily
from .layout import stack_responses
from .responses import responses, responses_vjp

ENV_VAR = "KANZOO_FUSED_KERNELS"

_enabled = enabled_by_env(os.environ.get(ENV_VAR))
_failure: str | None = None
_compiled: dict[tuple[type, str], Callable] = {}
_over_limit: set[tuple[type, str]] = set()
_past_default: set[tuple[type, str]] = set()


class _NoCudaRuntimeNotice(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." notice: TorchInductor's C++ build of these CPU
    kernels triggers it on machines without a GPU, where there is nothing to act on (the kernels need no CUDA)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


_CPP_EXTENSION_LOGGER = logging.getLogger("torch.utils.cpp_extension")
if not any(isinstance(f, _NoCudaRuntimeNotice) for f in _CPP_EXTENSION_LOGGER.filters):
    _CPP_EXTENSION_LOGGER.addFilter(_NoCudaRuntimeNotice())

MAX_GRAPHS = 64
"""Compiled variants one kernel of one layer class may have. A network's layers differ in sizes that the
compiler specialises on (size-1 dimensions, thresholds of its code generation, layouts), more than
dynamo's default of 8; past the default the kernels recompile under this limit."""


def set_fused_kernels(enabled: bool) -> None:
    """Turn the fused CPU kernels on or off for this process (a failed compiler stays off)."""
    global _enabled
    _enabled = bool(enabled)


def fused_kernels_enabled() -> bool:
    """Whether layers use the fused CPU kernels where they apply (on, and no compiler failure so far)."""
    return _enabled and _failure is None


_COMPILED_BASES = (nn.SiLU, nn.Identity)


def applies(family: BasisFamily, x: torch.Tensor) -> bool:
    """Whether ``family`` expands ``x`` with the compiled kernels: float32 on the CPU, a SiLU or identity base
    branch or none."""
    return (fused_kernels_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and (family.base_activation is None or type(family.base_activation) in _COMPILED_BASES)
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


def _expand_body(family: BasisFamily, x: torch.Tensor, params: Sequence[torch.Tensor], dtype: torch.dtype,
                 channels_last: bool) -> torch.Tensor:
    return stack_responses(responses(family, x, params), x.dim() - 2, dtype, channels_last)


def _vjp_body(family: BasisFamily, x: torch.Tensor, grad: torch.Tensor, params: Sequence[torch.Tensor],
              dtype: torch.dtype, channels_last: bool) -> tuple[torch.Tensor, ...]:
    rebuilt, grad_x, grad_params = responses_vjp(family, x, family.squash(x), None, params, grad)
    return (stack_responses(rebuilt, x.dim() - 2, dtype, channels_last), grad_x, *grad_params)


def _kernel(layer_class: type, kind: str) -> Callable:
    """The compiled ``kind`` kernel of a layer class, made on first use.

    Each class gets its own copy of the body's code object: dynamo keeps its compiled graphs (and
    its recompile limit) per code object, so the families do not evict each other.
    """
    key = (layer_class, kind)
    if key not in _compiled:
        body = _expand_body if kind == "expand" else _vjp_body
        code = body.__code__.replace(co_name=f"{body.__name__}_{layer_class.__name__}")
        fn = types.FunctionType(code, body.__globals__, code.co_name, body.__defaults__, body.__closure__)
        _compiled[key] = torch.compile(fn, fullgraph=True, options={"cpp.enable_tiling_heuristics": False})
    return _compiled[key]


def _more_graphs() -> contextlib.AbstractContextManager:
    return torch._dynamo.config.patch(recompile_limit=MAX_GRAPHS, accumulated_recompile_limit=MAX_GRAPHS * 64)


def _run(family: BasisFamily, kind: str, *args: object) -> tuple[torch.Tensor, ...] | torch.Tensor | None:
    """Call a compiled kernel, or return None where it cannot run: after a compiler failure (warned about
    once, the kernels then stay off) or beyond ``MAX_GRAPHS`` compiled variants of one kernel (warned about
    once per kernel, that call runs eager)."""
    global _failure
    key = (type(family), kind)
    kernel = _kernel(*key)
    try:
        with torch.autocast("cpu", enabled=False):
            if key in _past_default:  # once past dynamo's default, stay under the raised limit (dynamo logs each hit)
                with _more_graphs():
                    return kernel(family, *args)
            try:
                return kernel(family, *args)
            except torch._dynamo.exc.FailOnRecompileLimitHit:
                _past_default.add(key)
                with _more_graphs():
                    return kernel(family, *args)
    except torch._dynamo.exc.FailOnRecompileLimitHit:
        if key not in _over_limit:
            _over_limit.add(key)
            warnings.warn(f"kanzoo: the {kind} kernel of {type(family).__name__} has {MAX_GRAPHS} compiled variants "
                          "(input sizes, memory layouts); inputs that need another one use the eager expansion "
                          "(same results, slower)", RuntimeWarning, stacklevel=3)
        return None
    except torch._dynamo.exc.TorchDynamoException as err:
        _failure = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(f"kanzoo: the fused CPU kernels could not be compiled ({_failure}); the layers fall back "
                      f"to the eager expansion (same results, slower). Set {ENV_VAR}=0 to skip the attempt.",
                      RuntimeWarning, stacklevel=3)
        return None


def expand(family: BasisFamily, x: torch.Tensor, params: Sequence[torch.Tensor], dtype: torch.dtype,
           channels_last: bool) -> torch.Tensor | None:
    """The expansion ``(N, C, K + 1, *spatial)`` of ``x`` in ``dtype``, stored channels-last if asked,
    or None if the kernel could not be compiled."""
    return _run(family, "expand", x.detach(), tuple(params), dtype, channels_last)


def expand_vjp(family: BasisFamily, x: torch.Tensor, grad: torch.Tensor, params: Sequence[torch.Tensor],
               dtype: torch.dtype, channels_last: bool) -> tuple[torch.Tensor, ...] | None:
    """``(expansion, grad_x, *grad_params)`` given the expansion's gradient ``grad`` ``(N, C, K + 1, *spatial)``,
    or None if the kernel could not be compiled.

    The expansion is written to new memory rather than over ``grad``: the compiler fuses a fresh
    output into the loop that reads ``grad``, while writing into ``grad`` costs it a second pass.
    New memory is only cheap when ``malloc`` reuses freed pages, which the first call arranges (see
    ``kanzoo.runtime`` and CONTRIBUTING.md).
    """
    keep_freed_memory_for_training()
    return _run(family, "vjp", x, grad, tuple(params), dtype, channels_last)
