"""Pieces shared by kanzoo's architectures: the KAN conv factory, channel scaling, classifier heads."""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch
from timm.layers import ClassifierHead
from torch import nn

from kanzoo.layers import canonical_conv_name, get_conv
from kanzoo.layers.registry import BOTTLENECK_PREFIX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def classifier_cfg(first_conv: str, **kwargs: Any) -> dict[str, Any]:
    """The ImageNet-1k pretrained cfg shared by the ResKANet and DenseKANet classifiers."""
    return dict(num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD, first_conv=first_conv,
                classifier="head.fc", license="apache-2.0", **kwargs)

GroupsSpec = int | str
# constructor arguments the architecture decides for every conv; a user cannot override them per model
_STRUCTURAL_ARGS = frozenset({
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
    "padding_mode", "norm_layer", "act_layer", "device", "dtype",
})


def scale_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded to an integer of at least 1 (the width multiplier of every model)."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return max(1, int(round(channels * width)))


def accepted_kwargs(cls: type) -> set[str]:
    """Keyword arguments that ``cls.__init__`` (or any base class' ``__init__`` it forwards to) accepts."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is nn.Module or klass is object:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and param.name != "self":
                names.add(param.name)
    inner = getattr(cls, "kan_conv", None)
    if inner is not None:
        names |= accepted_kwargs(inner)
    return names


class KANConvFactory:
    """Builds every KAN convolution of one model from ``conv=``, ``groups=`` and the family arguments.

    ``conv`` is any name ``kanzoo.layers.get_conv`` accepts (``'kagn'``, ``'gram'``, ``'bottleneck_kacn'``...).
    ``family_kwargs`` (``degree=``, ``grid_size=``, ``dropout=``...) go to every conv; unknown names raise
    a ``TypeError`` that lists what the family accepts. Each conv ends with ``norm_layer`` and, unless the
    caller asks otherwise, ``act_layer``.
    """

    def __init__(self, conv: str = "kagn", *, groups: GroupsSpec = 1, norm_layer: Any = "batch",
                 act_layer: Any = "silu", **family_kwargs: Any) -> None:
        self.conv = canonical_conv_name(conv)
        self.conv_cls = get_conv(self.conv, ndim=2)
        self.plain_cls = get_conv(self.conv.removeprefix(BOTTLENECK_PREFIX), ndim=2)
        if not (groups == "depthwise" or (isinstance(groups, int) and groups >= 1)):
            raise ValueError(f"groups must be a positive int or 'depthwise', got {groups!r}")
        self.groups = groups
        self.norm_layer = norm_layer
        self.act_layer = act_layer
        accepted = accepted_kwargs(self.conv_cls) - _STRUCTURAL_ARGS
        structural = sorted(set(family_kwargs) & _STRUCTURAL_ARGS)
        if structural:
            raise TypeError(f"{structural} are set by the architecture for each conv and cannot be passed to "
                            "the model; use the model's own arguments (groups=, norm_layer=, act_layer=)")
        unknown = sorted(set(family_kwargs) - accepted)
        if unknown:
            raise TypeError(f"unknown argument(s) {unknown}: neither a model argument nor one that conv={conv!r} "
                            f"({self.conv_cls.__name__}) accepts; the family accepts {sorted(accepted)}")
        self.family_kwargs = family_kwargs
        plain_accepted = accepted_kwargs(self.plain_cls)
        self.plain_kwargs = {k: v for k, v in family_kwargs.items() if k in plain_accepted}

    def block_groups(self, in_chs: int, out_chs: int) -> int:
        """Groups of a conv inside a block: the ``groups`` setting, or ``gcd(in, out)`` for 'depthwise'."""
        if self.groups == "depthwise":
            return math.gcd(in_chs, out_chs)
        return int(self.groups)

    def __call__(self, in_chs: int, out_chs: int, kernel_size: int = 3, *, stride: int = 1, dilation: int = 1,
                 grouped: bool = False, act: bool = True, norm: bool = True, plain: bool = False,
                 dropout: float | None = None) -> nn.Module:
        """A KAN conv with 'same'-style padding; ``grouped`` applies ``groups=``; ``norm``/``act`` keep its own norm
        and activation; ``plain`` drops the bottleneck; ``dropout`` (when given) replaces the family's dropout."""
        cls, kwargs = (self.plain_cls, self.plain_kwargs) if plain else (self.conv_cls, self.family_kwargs)
        if dropout is not None:
            kwargs = {**kwargs, "dropout": dropout}
        groups = self.block_groups(in_chs, out_chs) if grouped else 1
        padding = dilation * (kernel_size - 1) // 2
        return cls(in_chs, out_chs, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                   bias=False, norm_layer=self.norm_layer if norm else None,
                   act_layer=self.act_layer if act else None, **kwargs)


def make_factory(conv: str, groups: GroupsSpec, conv_kwargs: dict[str, Any] | None, family_kwargs: dict[str, Any],
                 norm_layer: Any, act_layer: Any) -> KANConvFactory:
    """A factory from a model's arguments; ``conv_kwargs`` and loose family kwargs are merged (loose wins)."""
    merged = {**(conv_kwargs or {}), **family_kwargs}
    return KANConvFactory(conv, groups=groups, norm_layer=norm_layer, act_layer=act_layer, **merged)


def make_head(num_features: int, num_classes: int, global_pool: str, drop_rate: float) -> ClassifierHead:
    """timm's pool -> dropout -> linear head; refuses a linear layer over an unpooled map."""
    check_head_args(num_classes, global_pool)
    return ClassifierHead(num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)


def check_head_args(num_classes: int, global_pool: str | None, per_position: bool = False) -> None:
    """Raise for a head that cannot work: negative classes, or classes without pooling (unless the head
    applies its linear layer at every position, ``per_position``)."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 removes the classifier), got {num_classes}")
    if global_pool == "" and num_classes > 0 and not per_position:
        raise ValueError("global_pool='' (no pooling) returns the feature map and needs num_classes=0; "
                         "pass num_classes=0 or a pool type such as global_pool='avg'")


class KANClassifierMixin:
    """timm's classifier API; the model defines ``forward_features``.

    The default head is a ``ClassifierHead`` named ``head``. A model with another head layout overrides
    ``forward_head``, ``get_classifier``, ``_head_pool_type`` and ``_reset_head``. A head that applies its
    linear layer at every position of an unpooled map sets ``per_position_logits = True``, which allows
    ``global_pool=''`` with classes (logits ``(N, num_classes, H, W)``).
    """

    per_position_logits: ClassVar[bool] = False
    head: ClassifierHead
    num_classes: int
    grad_checkpointing: bool

    def _check_head(self, num_classes: int, global_pool: str | None) -> None:
        """Raise a ``ValueError`` for a head this model cannot build (see :func:`check_head_args`)."""
        check_head_args(num_classes, global_pool, per_position=self.per_position_logits)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify a feature map; ``pre_logits`` stops after pooling."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` when ``num_classes == 0``)."""
        return self.head.fc

    def _head_pool_type(self) -> str:
        """The head's timm pool type (``''`` for none)."""
        return self.head.global_pool.pool_type

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0 removes it), optionally re-pooling."""
        self._check_head(num_classes, self._head_pool_type() if global_pool is None else global_pool)
        self.num_classes = num_classes
        self._reset_head(num_classes, global_pool)

    def _reset_head(self, num_classes: int, global_pool: str | None) -> None:
        self.head.reset(num_classes, pool_type=global_pool)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in backward instead of storing them (saves memory)."""
        self.grad_checkpointing = enable
