"""``KANConvBase``: the ``nn.Conv{1,2,3}d``-style API shared by every KAN convolution family.

Every layer computes ``y[o, p] = sum_{c, i} phi[o, c, i](x[c, p + i])`` with
``phi(t) = w_base * base_activation(t) + sum_k w_k * B_k(t)``. The input is expanded once into
``K + 1`` responses per channel (base branch first, then the ``K`` bases), laid out channel-major
(expanded channel ``c * (K + 1) + k``) so that each group's expanded channels are contiguous, and a
single ``F.conv{1,2,3}d(..., groups=G)`` applies every group's own weights at once.

A family subclasses :class:`KANConvBase` and implements the hooks that
:class:`~kanzoo.layers.basis.BasisFamily` describes (``num_bases``, ``basis_from``, and where it needs
them ``squash``, ``basis_vjp``, ``basis_parameters``, ``create_basis_parameters``, ``family_repr``).
How the expansion runs (eager or compiled, memory layouts, recomputation in backward) lives in
``kanzoo.layers.execution``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from .basis import Bases, BasisVJP
from .execution import ConvSpec, Expander, expand_then_conv
from .helpers import PADDING_MODES, ActSpec, NormSpec, create_act, create_norm, ntuple, resolve_padding
from .registry import add_conv

_INPUT_NAMES = {1: "(C, L) or (N, C, L)", 2: "(C, H, W) or (N, C, H, W)", 3: "(C, D, H, W) or (N, C, D, H, W)"}

__all__ = ["KANConvBase", "check_channels", "check_conv_input"]


class KANConvBase(nn.Module):
    """Shared machinery of every KAN convolution family.

    A family class (decorated with ``@register_family``) stores its own hyper-parameters in its
    ``__init__(self, *args, <family arguments>, **kwargs)`` before calling this ``__init__``, and
    implements ``num_bases`` and ``basis_from``. Its 1d, 2d and 3d classes are one-line subclasses that
    set ``ndim``; they register under the family's name when they are defined.
    """

    ndim: ClassVar[int]
    family: ClassVar[str] = ""
    channel_parameters: ClassVar[tuple[str, ...]] = ()
    """Names of the learned basis tensors whose first dimension is the input channel (e.g. a wavelet's shift)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "ndim" in cls.__dict__:
            if cls.__doc__ is None:
                summary = next(k.__doc__ for k in cls.__mro__[1:] if k.__doc__).splitlines()[0]
                cls.__doc__ = (f"{summary} ({cls.ndim}d; constructor as ``nn.Conv{cls.ndim}d``, "
                               "then family arguments).")
            cls.__signature__ = signature_with_family_arguments(KANConvBase.__init__, cls)
            add_conv(cls.family, cls.ndim, cls)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        base_activation: ActSpec = "silu",
        norm_layer: NormSpec = None,
        act_layer: ActSpec = None,
        dropout: float = 0.0,
        recompute: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not hasattr(type(self), "ndim"):
            raise TypeError(f"{type(self).__name__} has no number of dimensions; build its 1d, 2d or 3d class, "
                            f"e.g. get_conv({type(self).family!r}, ndim=2)")
        super().__init__()
        check_channels(in_channels, out_channels, groups)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {list(PADDING_MODES)}, but got padding_mode={padding_mode!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        nd = self.ndim
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = ntuple(kernel_size, nd, "kernel_size")
        self.stride = ntuple(stride, nd, "stride")
        self.dilation = ntuple(dilation, nd, "dilation")
        if any(k < 1 for k in self.kernel_size) or any(s < 1 for s in self.stride) or any(d < 1 for d in self.dilation):
            raise ValueError(f"kernel_size, stride and dilation must be positive, got {self.kernel_size}, "
                             f"{self.stride}, {self.dilation}")
        self.padding = padding if isinstance(padding, str) else ntuple(padding, nd, "padding")
        self.groups = groups
        self.padding_mode = padding_mode
        self._pad_before, self._pad_after = resolve_padding(padding, self.kernel_size, self.stride, self.dilation)
        self.base_activation = None if base_activation is None else create_act(base_activation)
        self.num_responses = self.num_bases + (self.base_activation is not None)
        factory = {"device": device, "dtype": dtype}
        responses_per_group = in_channels // groups * self.num_responses
        self.weight = nn.Parameter(torch.empty(out_channels, responses_per_group, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm = create_norm(norm_layer, out_channels, nd).to(**factory)
        self.act = create_act(act_layer)
        self.recompute = recompute
        self.create_basis_parameters(factory)
        self.reset_parameters()

    # -- what a family implements ---------------------------------------------------------------

    @property
    def num_bases(self) -> int:
        """Number of basis functions ``K`` per input channel (the base branch not counted)."""
        raise NotImplementedError

    def squash(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """At most one pointwise map of ``x`` (e.g. ``tanh x``) that the bases read, kept for backward."""
        return ()

    def basis_from(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], *params: torch.Tensor) -> Bases:
        """The ``K`` basis responses of ``x`` ``(N, C, *spatial)`` given ``squash(x)`` (a list, or bases on dim 2)."""
        raise NotImplementedError

    def basis_parameters(self) -> tuple[torch.Tensor, ...]:
        """Learned tensors that ``basis_from`` reads, passed explicitly so backward can rebuild it."""
        return ()

    def create_basis_parameters(self, factory: dict[str, Any]) -> None:
        """Create the family's learned basis tensors and constant buffers (initialised by ``reset_parameters``)."""

    def basis_vjp(self, x: torch.Tensor, squashed: tuple[torch.Tensor, ...], *params: torch.Tensor
                  ) -> tuple[Bases, BasisVJP]:
        """``basis_from`` plus a function mapping the bases' gradient ``(N, C, K, *spatial)`` to ``(grad_x, *grad_params)``.

        This generic version differentiates ``basis`` with autograd (``squashed`` is recomputed);
        families override it with closed-form derivatives computed alongside the bases.
        """
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True), *(p.detach().requires_grad_(True) for p in params)]
            bases = self.basis(*leaves)
        outputs = [bases] if isinstance(bases, torch.Tensor) else list(bases)

        def vjp(grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
            grads = [grad] if isinstance(bases, torch.Tensor) else list(grad.unbind(2))
            return torch.autograd.grad(outputs, leaves, grads, allow_unused=True)

        detached = bases.detach() if isinstance(bases, torch.Tensor) else [b.detach() for b in bases]
        return detached, vjp

    def family_repr(self) -> str:
        """The family's own hyper-parameters for ``repr``."""
        return f"num_bases={self.num_bases}"

    # -- the layer --------------------------------------------------------------------------------

    def basis(self, x: torch.Tensor, *params: torch.Tensor) -> Bases:
        """The ``K`` basis responses of ``x`` ``(N, C, *spatial)``, pointwise (a list, or bases on dim 2)."""
        return self.basis_from(x, self.squash(x), *params)

    def reset_parameters(self) -> None:
        """Initialise the fused weight like ``nn.ConvNd`` over all expanded inputs."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def _weight_view(self) -> torch.Tensor:
        return self.weight.view(self.out_channels, self.in_channels // self.groups, self.num_responses,
                                *self.kernel_size)

    @property
    def base_weight(self) -> torch.Tensor | None:
        """Per-group weights of the base branch, shaped like ``nn.ConvNd.weight`` (a view)."""
        if self.base_activation is None:
            return None
        return self._weight_view()[:, :, 0]

    @property
    def basis_weight(self) -> torch.Tensor:
        """Weights of the ``K`` bases: ``(out_channels, in_channels / groups, K, *kernel_size)`` (a view)."""
        return self._weight_view()[:, :, self.num_responses - self.num_bases:]

    def expander(self) -> Expander:
        """The execution strategy of this layer (padding, memory layout, eager or compiled expansion)."""
        return Expander(self, self.groups, self.padding_mode, self._pad_before, self._pad_after)

    def expand(self, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        """The channel-major expansion ``(N, C * (K + 1), *spatial)`` that the convolution reads."""
        expander = self.expander()
        return expander.expand_prepared(expander.prepare(x), *params)

    def _conv_spec(self, device: torch.device) -> ConvSpec:
        padding = self._pad_before if self.padding_mode == "zeros" else (0,) * self.ndim
        depthwise_on_cpu = self.groups == self.in_channels > 1 and device.type == "cpu"
        return ConvSpec(self.ndim, self.stride, padding, self.dilation, self.groups,
                        sum_bases=self.num_responses if depthwise_on_cpu else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_conv_input(x, self.ndim, self.in_channels, type(self).__name__)
        unbatched = x.dim() == self.ndim + 1
        if unbatched:
            x = x.unsqueeze(0)
        x = self.dropout(x)
        expander = self.expander()
        y = expand_then_conv(expander, self._conv_spec(x.device), x, self.weight, self.bias,
                             self.basis_parameters(), recompute=self.recompute)
        if expander.channels_last(x) and not x.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous()  # a channels-last expansion gives a channels-last output
        y = self.act(self.norm(y))
        return y.squeeze(0) if unbatched else y

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}")
        if self.dilation != (1,) * self.ndim:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s + ", " + self.family_repr()


def signature_with_family_arguments(init: Callable[..., None], layer_class: type[KANConvBase]) -> inspect.Signature:
    """The signature of ``init`` (without ``self`` and ``**kwargs``) with the keyword-only family arguments of
    ``layer_class`` first among its keyword-only ones, so that ``help()`` shows every argument a layer takes."""
    own = [p for p in list(inspect.signature(init).parameters.values())[1:] if p.kind is not p.VAR_KEYWORD]
    family: dict[str, inspect.Parameter] = {}
    for klass in reversed(layer_class.__mro__[:layer_class.__mro__.index(KANConvBase)]):
        for param in inspect.signature(klass.__dict__.get("__init__", object.__init__)).parameters.values():
            if param.kind is param.KEYWORD_ONLY:
                family.setdefault(param.name, param)
    split = next((i for i, p in enumerate(own) if p.kind is p.KEYWORD_ONLY), len(own))
    return inspect.Signature(own[:split] + list(family.values()) + own[split:])


def check_conv_input(x: torch.Tensor, ndim: int, in_channels: int, name: str) -> None:
    """Raise a clear error for a non-tensor, non-float, wrongly shaped or wrongly sized input."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} expects a floating point input, got dtype {x.dtype}; convert it first, e.g. x.float()")
    if x.dim() not in (ndim + 1, ndim + 2):
        raise ValueError(f"{name} expects input of shape {_INPUT_NAMES[ndim]}, got a {x.dim()}-d tensor "
                         f"of shape {tuple(x.shape)}")
    channels = x.shape[0 if x.dim() == ndim + 1 else 1]
    if channels != in_channels:
        raise ValueError(f"{name} expects {in_channels} input channels, got {channels} (input shape {tuple(x.shape)})")


def check_channels(in_channels: int, out_channels: int, groups: int) -> None:
    """Raise ``nn.ConvNd``'s errors for channel counts that ``groups`` does not divide."""
    if not isinstance(groups, int) or groups <= 0:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if in_channels <= 0 or out_channels <= 0:
        raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be positive")
    if in_channels % groups != 0:
        raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
    if out_channels % groups != 0:
        raise ValueError(f"out_channels ({out_channels}) must be divisible by groups ({groups}); "
                         f"for a depthwise layer use out_channels = k * in_channels")
