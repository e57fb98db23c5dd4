"""DenseKANet: DenseNet layouts (121/161/169/201) built from KAN convolutions.

Each dense layer is a 1x1 KAN conv to ``bn_size * growth_rate`` channels and a 3x3 KAN conv to
``growth_rate`` channels; the new channels are concatenated to the layer's input, as in DenseNet.
Transitions are a 1x1 KAN conv (``compression`` of the channels) and a 2x2 average pool. The stem is a
7x7 stride-2 KAN conv (the plain form of a bottleneck family) with its norm and activation, and a 3x3
max-pool. ``groups=`` applies to the 3x3 convs.

By default (``preact=False``) every KAN conv ends with its own norm and activation, so the concatenated
tensor is already normalised. ``preact=True`` is DenseNet's pre-activation layout instead: norm and
activation before each conv of the dense layers and transitions (the convs have none of their own), and
a final norm and activation (``features.norm5``, ``features.act5``) before the head; with ReLU, an
identity base branch and zero basis weights it computes DenseNet exactly (the ``tv_in1k`` tags).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
import torch.utils.checkpoint
from timm.models import generate_default_cfgs, register_model
from torch import nn

from kanzoo.layers import create_act, create_norm
from kanzoo.models._blocks import (GroupsSpec, KANClassifierMixin, KANConvFactory, classifier_cfg,
                                   make_factory, make_head, scale_channels)
from kanzoo.models._builder import build_kan_model
from kanzoo.models._pretrained import pretrained_cfgs

__all__ = ["DenseKANet", "DenseKANLayer", "DenseKANBlock"]


def _norm_act(make: KANConvFactory, channels: int, preact: bool) -> tuple[nn.Module, nn.Module]:
    """The norm and activation in front of a pre-activation conv (identities without ``preact``)."""
    if not preact:
        return nn.Identity(), nn.Identity()
    return create_norm(make.norm_layer, channels, 2), create_act(make.act_layer)


class DenseKANLayer(nn.Module):
    """1x1 KAN conv to ``bn_size * growth`` channels, then a 3x3 KAN conv to ``growth`` new channels.

    With ``preact`` each conv has a norm and activation in front (``norm1``, ``act1``, ``norm2``, ``act2``)
    instead of its own; without, those are identities (no parameters, no state-dict keys).
    """

    def __init__(self, make: KANConvFactory, in_chs: int, growth: int, bn_size: int, preact: bool = False) -> None:
        super().__init__()
        inner = bn_size * growth
        self.norm1, self.act1 = _norm_act(make, in_chs, preact)
        self.conv1 = make(in_chs, inner, 1, norm=not preact, act=not preact)
        self.norm2, self.act2 = _norm_act(make, inner, preact)
        self.conv2 = make(inner, growth, 3, grouped=True, norm=not preact, act=not preact)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act2(self.norm2(self.conv1(self.act1(self.norm1(x))))))


class DenseKANBlock(nn.ModuleDict):
    """``num_layers`` dense layers; each sees the concatenation of the block input and all earlier outputs."""

    def __init__(self, make: KANConvFactory, num_layers: int, in_chs: int, growth: int, bn_size: int,
                 preact: bool = False) -> None:
        super().__init__()
        self.grad_checkpointing = False
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseKANLayer(make, in_chs + i * growth, growth, bn_size, preact))
        self.out_chs = in_chs + num_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            joined = torch.cat(features, 1)
            if self.grad_checkpointing and joined.requires_grad and not torch.jit.is_scripting():
                features.append(torch.utils.checkpoint.checkpoint(layer, joined, use_reentrant=False))
            else:
                features.append(layer(joined))
        return torch.cat(features, 1)


class DenseKANet(KANClassifierMixin, nn.Module):
    """A DenseNet of KAN convolutions with timm's classifier API.

    Args:
        block_config: dense layers per block (four blocks, strides 4, 8, 16, 32).
        growth_rate: channels each dense layer adds; num_init_features: stem channels.
        bn_size: the 1x1 conv of a dense layer has ``bn_size * growth_rate`` channels.
        compression: fraction of channels a transition keeps.
        in_chans, num_classes, global_pool, drop_rate: as in timm.
        conv, conv_kwargs, groups, width, norm_layer, act_layer, **family_kwargs: as in ``ResKANet``;
        ``width`` multiplies ``growth_rate`` and ``num_init_features``.
        preact: DenseNet's pre-activation layout (see the module doc); False keeps every conv's own norm and
            activation.
    """

    def __init__(self, block_config: Sequence[int] = (6, 12, 24, 16), growth_rate: int = 32,
                 num_init_features: int = 64, bn_size: int = 4, compression: float = 0.5, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = "avg", drop_rate: float = 0.0, conv: str = "kagn",
                 conv_kwargs: dict[str, Any] | None = None, groups: GroupsSpec = 1, width: float = 1.0,
                 norm_layer: Any = "batch", act_layer: Any = "silu", preact: bool = False,
                 **family_kwargs: Any) -> None:
        super().__init__()
        if len(block_config) != 4 or any(n < 1 for n in block_config):
            raise ValueError(f"block_config must be four positive layer counts, got {tuple(block_config)}")
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        make = make_factory(conv, groups, conv_kwargs, family_kwargs, norm_layer, act_layer)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        growth = scale_channels(growth_rate, width)
        chs = scale_channels(num_init_features, width)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv0"] = make(in_chans, chs, 7, stride=2, plain=True)
        layers["pool0"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = [dict(num_chs=chs, reduction=2, module="features.conv0")]
        reduction = 4
        for index, num_layers in enumerate(block_config):
            block = DenseKANBlock(make, num_layers, chs, growth, bn_size, preact)
            layers[f"denseblock{index + 1}"] = block
            chs = block.out_chs
            last = index == len(block_config) - 1
            module = "features.act5" if last and preact else f"features.denseblock{index + 1}"
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=module))
            if not last:
                out_chs = max(1, int(chs * compression))
                layers[f"transition{index + 1}"] = _transition(make, chs, out_chs, preact)
                chs = out_chs
                reduction *= 2
        if preact:
            layers["norm5"], layers["act5"] = _norm_act(make, chs, preact)
        self.features = nn.Sequential(layers)
        self.num_features = self.head_hidden_size = chs
        self.head = make_head(chs, num_classes, global_pool, drop_rate)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning rates (timm's optimizer factory)."""
        return dict(stem=r"^features\.conv0", blocks=r"^features\.(?:denseblock|transition)(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every dense layer in backward instead of storing its activations."""
        self.grad_checkpointing = enable
        for module in self.features:
            if isinstance(module, DenseKANBlock):
                module.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _transition(make: KANConvFactory, in_chs: int, out_chs: int, preact: bool) -> nn.Sequential:
    """A 1x1 KAN conv and a 2x2 average pool; with ``preact``, a norm and activation before the conv (named as in
    DenseNet: ``norm``, ``act``, ``conv``, ``pool``)."""
    pool = nn.AvgPool2d(2, stride=2)
    if not preact:
        return nn.Sequential(make(in_chs, out_chs, 1), pool)
    norm, act = _norm_act(make, in_chs, preact)
    return nn.Sequential(OrderedDict(norm=norm, act=act, conv=make(in_chs, out_chs, 1, norm=False, act=False),
                                     pool=pool))


def _create_densekanet(variant: str, pretrained: bool, **kwargs: Any) -> DenseKANet:
    return build_kan_model(DenseKANet, variant, pretrained, feature_cfg=dict(flatten_sequential=True), **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return classifier_cfg("features.conv0", **kwargs)


default_cfgs = generate_default_cfgs({
    **pretrained_cfgs("densekanet_121", **_cfg()),
    **pretrained_cfgs("densekanet_161", **_cfg()),
    **pretrained_cfgs("densekanet_169", **_cfg()),
    **pretrained_cfgs("densekanet_201", **_cfg()),
})


@register_model
def densekanet_121(pretrained: bool = False, **kwargs: Any) -> DenseKANet:
    """DenseKANet-121: blocks (6, 12, 24, 16), growth 32."""
    model_args = dict(block_config=(6, 12, 24, 16), growth_rate=32, num_init_features=64)
    return _create_densekanet("densekanet_121", pretrained, **dict(model_args, **kwargs))


@register_model
def densekanet_161(pretrained: bool = False, **kwargs: Any) -> DenseKANet:
    """DenseKANet-161: blocks (6, 12, 36, 24), growth 48, 96 stem channels."""
    model_args = dict(block_config=(6, 12, 36, 24), growth_rate=48, num_init_features=96)
    return _create_densekanet("densekanet_161", pretrained, **dict(model_args, **kwargs))


@register_model
def densekanet_169(pretrained: bool = False, **kwargs: Any) -> DenseKANet:
    """DenseKANet-169: blocks (6, 12, 32, 32), growth 32."""
    model_args = dict(block_config=(6, 12, 32, 32), growth_rate=32, num_init_features=64)
    return _create_densekanet("densekanet_169", pretrained, **dict(model_args, **kwargs))


@register_model
def densekanet_201(pretrained: bool = False, **kwargs: Any) -> DenseKANet:
    """DenseKANet-201: blocks (6, 12, 48, 32), growth 32."""
    model_args = dict(block_config=(6, 12, 48, 32), growth_rate=32, num_init_features=64)
    return _create_densekanet("densekanet_201", pretrained, **dict(model_args, **kwargs))
