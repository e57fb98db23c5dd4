"""``kanify``: turn the convolutions of any network into KAN convolutions that compute exactly the same function.

A KAN convolution whose base branch is the identity, ``phi(t) = w t + sum_k c_k B_k(t)``, computes the
plain convolution with weight ``w`` while every basis weight ``c_k`` is zero. ``kanify`` builds such a
layer for each selected ``nn.Conv{1,2,3}d``, with the convolution's weight in the base slot, its bias,
and zero basis weights, so a pretrained CNN becomes a KAN network that starts at the CNN's accuracy and
learns its univariate functions while it is fine-tuned (the zero basis weights receive gradients).
Zero padding pads the expansion, which is exact too: the identity of 0 is 0.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Union

import torch
from timm.layers import Conv2dSame, pad_same
from torch import nn

from ..layers import BottleneckKANConvBase, KANConvBase, canonical_conv_name, get_conv
from ..layers.registry import BOTTLENECK_PREFIX
from ._blocks import accepted_kwargs

__all__ = ["FILTERS", "KanifyRecord", "SamePadKANConv2d", "kanify"]

ConvFilter = Callable[[str, nn.Module], bool]

_PLAIN_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
# fixed by kanify so that the result is exact: the layer's own arguments come from the convolution
_SET_BY_KANIFY = frozenset({
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
    "padding_mode", "base_activation", "norm_layer", "act_layer", "device", "dtype",
})


def _spatial(name: str, module: nn.Module) -> bool:
    return any(k > 1 for k in getattr(module, "kernel_size", ()))


def _depthwise(name: str, module: nn.Module) -> bool:
    groups = getattr(module, "groups", 1)
    return groups > 1 and groups == getattr(module, "in_channels", 0)


def _everything(name: str, module: nn.Module) -> bool:
    return True


FILTERS: dict[str, ConvFilter] = {"all": _everything, "spatial": _spatial, "depthwise": _depthwise}
"""Named filters: ``'all'`` convs, ``'spatial'`` (a kernel larger than 1), ``'depthwise'``
(``groups == in_channels``, e.g. MobileNet, EfficientNet, ConvNeXt); ``'no_stem'`` is every conv but the
first one the network applies to its input."""
FILTER_NAMES = (*FILTERS, "no_stem")


@dataclasses.dataclass
class KanifyRecord:
    """What ``kanify`` did to a model, kept as ``model.kanify_record``."""

    conv: str
    filter: str
    family_kwargs: dict[str, Any]
    converted: list[str]
    skipped: dict[str, str]
    """Conv-like modules the filter selected that cannot be converted exactly: ``{name: type name}``."""


class SamePadKANConv2d(nn.Module):
    """A KAN convolution after TensorFlow-style 'same' padding that depends on the input size (timm's ``Conv2dSame``).

    The input is padded with zeros, which keeps the conversion exact (the identity of 0 is 0 and the basis
    weights start at zero).
    """

    def __init__(self, conv: KANConvBase) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        return conv(pad_same(x, list(conv.kernel_size), list(conv.stride), list(conv.dilation)))


def _resolve_filter(filter: Union[str, ConvFilter, None], model: nn.Module) -> tuple[str, ConvFilter]:
    if filter is None:
        filter = "all"
    if callable(filter):
        return "custom", filter
    if filter == "no_stem":
        stem = _first_conv_name(model)
        return filter, lambda name, module: name != stem
    if filter not in FILTERS:
        raise ValueError(f"unknown kanify filter {filter!r}; use one of {list(FILTER_NAMES)} or a function "
                         "(name, module) -> bool")
    return filter, FILTERS[filter]


def _first_conv_name(model: nn.Module) -> str | None:
    """The name of the first conv the model applies to its input: timm's ``pretrained_cfg['first_conv']`` if the
    model has a module of that name (a ``features_only`` extractor may rename ``stem.0`` to ``stem_0``), else the
    first convolution in module order."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv")
    if isinstance(first, str) and first and first in dict(model.named_modules()):
        return first
    return next((name for name, module in model.named_modules() if _is_conv_like(module)), None)


def _is_conv_like(module: nn.Module) -> bool:
    """A convolution, or a module with a kernel size and a weight of its own (``CondConv2d`` and the like)."""
    if isinstance(module, (nn.modules.conv._ConvNd, KANConvBase)):
        return True
    return hasattr(module, "kernel_size") and module._parameters.get("weight") is not None


def _kan_conv(conv: nn.Module, family: str, family_kwargs: dict[str, Any]) -> nn.Module:
    """The exact KAN replacement of one ``nn.Conv{1,2,3}d`` (or timm ``Conv2dSame``)."""
    ndim = 2 if type(conv) is Conv2dSame else _PLAIN_CONVS[type(conv)]
    weight = conv.weight
    layer = get_conv(family, ndim)(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
        0 if type(conv) is Conv2dSame else conv.padding, conv.dilation, conv.groups, conv.bias is not None,
        conv.padding_mode, base_activation="identity", device=weight.device, dtype=weight.dtype, **family_kwargs)
    with torch.no_grad():
        layer.weight.zero_()
        layer.base_weight.copy_(weight)
        if conv.bias is not None:
            layer.bias.copy_(conv.bias)
    layer.train(conv.training)
    return SamePadKANConv2d(layer).train(conv.training) if type(conv) is Conv2dSame else layer


def kanify(model: nn.Module, conv: str = "kagn", *, filter: Union[str, ConvFilter, None] = None,
           **family_kwargs: Any) -> nn.Module:
    """Replace the convolutions of ``model`` with KAN convolutions of family ``conv`` that compute the same function.

    Every ``nn.Conv1d/2d/3d`` (exact type) and timm ``Conv2dSame`` that ``filter`` selects becomes a KAN conv
    with the same channels, kernel, stride, padding, dilation, groups, bias and padding mode, the identity as
    its base branch holding the conv's weight, and zero basis weights. ``filter`` is a name from
    ``FILTER_NAMES`` (default ``'all'``) or a function ``(name, module) -> bool``; ``family_kwargs``
    (``degree=``, ``grid_size=``...) go to every KAN conv. Conv-like modules that cannot be converted exactly
    (e.g. timm's ``StdConv2d``, ``ScaledStdConv2d``, ``CondConv2d``) stay as they are: one warning names them.
    The model is changed in place and returned (a bare convolution is returned converted); what was done
    is recorded in ``model.kanify_record``.
    """
    family = canonical_conv_name(conv)
    if family.startswith(BOTTLENECK_PREFIX):
        raise ValueError(f"kanify converts to a plain KAN conv family, not {family!r}; use "
                         f"conv={family.removeprefix(BOTTLENECK_PREFIX)!r}")
    fixed = sorted(set(family_kwargs) & _SET_BY_KANIFY)
    if fixed:
        raise TypeError(f"kanify sets {fixed} from each convolution (and the identity base branch that makes the "
                        "result exact); pass only family arguments such as degree=")
    accepted = accepted_kwargs(get_conv(family, 2)) - _SET_BY_KANIFY
    unknown = sorted(set(family_kwargs) - accepted)
    if unknown:
        raise TypeError(f"unknown argument(s) {unknown} for conv={conv!r}; the family accepts {sorted(accepted)}")
    filter_name, selects = _resolve_filter(filter, model)
    record = KanifyRecord(family, filter_name, dict(family_kwargs), [], {})
    if type(model) in _PLAIN_CONVS or type(model) is Conv2dSame:
        converted = _kan_conv(model, family, family_kwargs) if selects("", model) else model
        record.converted = [""] if converted is not model else []
        converted.kanify_record = record
        return converted
    modules = list(model.named_modules())
    kan = [name + "." for name, module in modules if isinstance(module, (KANConvBase, BottleneckKANConvBase))]
    for name, module in modules:
        if (not name or not _is_conv_like(module) or isinstance(module, KANConvBase)
                or any(name.startswith(prefix) for prefix in kan) or not selects(name, module)):
            continue
        if type(module) in _PLAIN_CONVS or type(module) is Conv2dSame:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, _kan_conv(module, family, family_kwargs))
            record.converted.append(name)
        else:
            record.skipped[name] = type(module).__name__
    if record.skipped:
        listed = ", ".join(f"{name} ({kind})" for name, kind in record.skipped.items())
        warnings.warn(f"kanify left {len(record.skipped)} conv-like module(s) as they are, since they cannot be "
                      f"converted exactly: {listed}", UserWarning, stacklevel=2)
    model.kanify_record = record
    return model
