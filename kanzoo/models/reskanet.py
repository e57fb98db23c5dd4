"""ResKANet: ResNet layouts (18/34 basic blocks, 50/101/152 bottleneck blocks) built from KAN convolutions.

Every convolution of the stem and the residual branches is a KAN convolution (``conv=``, Gram by
default) that ends with its own norm (``norm_layer``, BatchNorm by default) and, except the last conv
of a branch, the activation (``act_layer``, SiLU). The activation follows the residual sum, as in
ResNet. The stem is one 7x7 stride-2 KAN conv plus a 3x3 max-pool; with a bottleneck family
(``conv='bottleneck_kagn'``) the stem uses the plain form of that family, since a bottleneck over three
input channels has nothing to reduce. Shortcuts that change shape are plain 1x1 convs plus the norm (a
linear projection, as in ResNet). The stride of a bottleneck block sits on its 3x3 conv (ResNet v1.5);
``groups=`` applies to the 3x3 convs of the blocks ('depthwise' uses ``gcd(in, out)`` groups).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from torch import nn

from kanzoo.layers import create_act, create_norm
from kanzoo.models._blocks import (GroupsSpec, KANClassifierMixin, KANConvFactory, classifier_cfg,
                                   make_factory, make_head, scale_channels)
from kanzoo.models._builder import build_kan_model
from kanzoo.models._pretrained import pretrained_cfgs

__all__ = ["ResKANet", "BasicKANBlock", "BottleneckKANBlock"]


def _shortcut(in_chs: int, out_chs: int, stride: int, norm_layer: Any) -> nn.Module:
    if in_chs == out_chs and stride == 1:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False), create_norm(norm_layer, out_chs, 2))


class BasicKANBlock(nn.Module):
    """Two 3x3 KAN convs and a shortcut: ``act(conv2(conv1(x)) + shortcut(x))``."""

    channel_ratio = 1
    """Output channels per plane: the block maps to ``planes * channel_ratio`` channels."""

    def __init__(self, make: KANConvFactory, in_chs: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_chs = planes * self.channel_ratio
        self.conv1 = make(in_chs, planes, 3, stride=stride, grouped=True)
        self.conv2 = make(planes, out_chs, 3, grouped=True, act=False)
        self.downsample = _shortcut(in_chs, out_chs, stride, make.norm_layer)
        self.act = create_act(make.act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.downsample(x))


class BottleneckKANBlock(nn.Module):
    """1x1, 3x3 (strided, grouped) and 1x1 KAN convs to ``4 * planes`` channels, plus a shortcut."""

    channel_ratio = 4
    """Output channels per plane: the block maps to ``planes * channel_ratio`` channels."""

    def __init__(self, make: KANConvFactory, in_chs: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_chs = planes * self.channel_ratio
        self.conv1 = make(in_chs, planes, 1)
        self.conv2 = make(planes, planes, 3, stride=stride, grouped=True)
        self.conv3 = make(planes, out_chs, 1, act=False)
        self.downsample = _shortcut(in_chs, out_chs, stride, make.norm_layer)
        self.act = create_act(make.act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.downsample(x))


_BLOCKS = {"basic": BasicKANBlock, "bottleneck": BottleneckKANBlock}


class ResKANet(KANClassifierMixin, nn.Module):
    """A ResNet of KAN convolutions with timm's classifier API.

    Args:
        layers: blocks per stage (four stages, strides 4, 8, 16, 32).
        block: ``'basic'`` (two 3x3 convs) or ``'bottleneck'`` (1x1, 3x3, 1x1 convs to 4x the block's planes,
            its ``channel_ratio``).
        in_chans, num_classes, global_pool, drop_rate: as in timm (``num_classes=0`` gives pooled features).
        conv: KAN conv family (any name ``kanzoo.layers.get_conv`` accepts).
        conv_kwargs: family arguments as a dict; loose ``**family_kwargs`` (``degree=5``) are merged in.
        groups: groups of the blocks' 3x3 convs (an int or ``'depthwise'``).
        width: multiplier of every channel count (``width=0.25`` for a small model).
        stem_width: channels of the stem before ``width`` is applied.
        norm_layer, act_layer: norm and activation after each KAN conv.
    """

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), block: str = "basic", in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = "avg", drop_rate: float = 0.0, conv: str = "kagn",
                 conv_kwargs: dict[str, Any] | None = None, groups: GroupsSpec = 1, width: float = 1.0,
                 stem_width: int = 64, norm_layer: Any = "batch", act_layer: Any = "silu",
                 **family_kwargs: Any) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {block!r}")
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {tuple(layers)}")
        block_cls = _BLOCKS[block]
        make = make_factory(conv, groups, conv_kwargs, family_kwargs, norm_layer, act_layer)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        chs = scale_channels(stem_width, width)
        self.conv1 = make(in_chans, chs, 7, stride=2, plain=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = [dict(num_chs=chs, reduction=2, module="conv1")]
        reduction = 4
        for index, depth in enumerate(layers):
            planes = scale_channels(64 * 2 ** index, width)
            stride = 1 if index == 0 else 2
            reduction *= stride
            blocks = []
            for i in range(depth):
                blocks.append(block_cls(make, chs, planes, stride if i == 0 else 1))
                chs = planes * block_cls.channel_ratio
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"layer{index + 1}"))
        self.num_features = self.head_hidden_size = chs
        self.head = make_head(chs, num_classes, global_pool, drop_rate)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning rates (timm's optimizer factory)."""
        return dict(stem=r"^conv1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        stages = [self.layer1, self.layer2, self.layer3, self.layer4]
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stages, x, flatten=True)
        for stage in stages:
            x = stage(x)
        return x


def _create_reskanet(variant: str, pretrained: bool, **kwargs: Any) -> ResKANet:
    return build_kan_model(ResKANet, variant, pretrained, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return classifier_cfg("conv1", **kwargs)


default_cfgs = generate_default_cfgs({
    **pretrained_cfgs("reskanet_18", **_cfg()),
    **pretrained_cfgs("reskanet_34", **_cfg()),
    **pretrained_cfgs("reskanet_50", **_cfg()),
    **pretrained_cfgs("reskanet_101", **_cfg()),
    **pretrained_cfgs("reskanet_152", **_cfg()),
})


@register_model
def reskanet_18(pretrained: bool = False, **kwargs: Any) -> ResKANet:
    """ResKANet-18: basic blocks (2, 2, 2, 2)."""
    model_args = dict(layers=(2, 2, 2, 2), block="basic")
    return _create_reskanet("reskanet_18", pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet_34(pretrained: bool = False, **kwargs: Any) -> ResKANet:
    """ResKANet-34: basic blocks (3, 4, 6, 3)."""
    model_args = dict(layers=(3, 4, 6, 3), block="basic")
    return _create_reskanet("reskanet_34", pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet_50(pretrained: bool = False, **kwargs: Any) -> ResKANet:
    """ResKANet-50: bottleneck blocks (3, 4, 6, 3)."""
    model_args = dict(layers=(3, 4, 6, 3), block="bottleneck")
    return _create_reskanet("reskanet_50", pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet_101(pretrained: bool = False, **kwargs: Any) -> ResKANet:
    """ResKANet-101: bottleneck blocks (3, 4, 23, 3)."""
    model_args = dict(layers=(3, 4, 23, 3), block="bottleneck")
    return _create_reskanet("reskanet_101", pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet_152(pretrained: bool = False, **kwargs: Any) -> ResKANet:
    """ResKANet-152: bottleneck blocks (3, 8, 36, 3)."""
    model_args = dict(layers=(3, 8, 36, 3), block="bottleneck")
    return _create_reskanet("reskanet_152", pretrained, **dict(model_args, **kwargs))
