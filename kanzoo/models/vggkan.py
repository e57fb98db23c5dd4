"""VGGKAN: VGG-style stacks of KAN convolutions, including the layouts of the published ImageNet KAN checkpoints.

A network is a list of stage widths and ``'M'`` (2x2 max-pool), like timm's VGG cfgs. Conv layers and
pools live in one ``features`` Sequential whose indices match the Torch-Conv-KAN VGG networks, and the
head is global pooling -> dropout -> ``classifier.1`` (Linear), so an original checkpoint converts by
a pure key mapping (:func:`convert_tck_vgg_state_dict`, also applied automatically by ``load_state_dict``).

``vggkan_11`` is exactly ``brivangl/vgg_kagn_bn11_v4`` (VGG11v4 layout, widths x2, bottleneck Gram
convolutions of degree 5 with BatchNorm); ``vggkan_11_v2_in`` and ``vggkan_11_v4_in`` are the layouts
of ``brivangl/vgg_kagn11_v2`` and ``brivangl/vgg_kagn11_v4`` (plain Gram convolutions, affine
InstanceNorm). ``vggkan_13/16/19`` deepen the VGG11v4 stages the way VGG13/16/19 deepen VGG11.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence, Union

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import generate_default_cfgs, register_model
from torch import nn
from torch.utils.checkpoint import checkpoint

from kanzoo.layers import BottleneckKANConvBase, convert_tck_kagn_state_dict, get_conv
from kanzoo.models._blocks import (IMAGENET_MEAN, IMAGENET_STD, GroupsSpec, KANClassifierMixin, KANConvFactory,
                                   accepted_kwargs, make_factory, scale_channels)
from kanzoo.models._builder import build_kan_model
from kanzoo.models._pretrained import pretrained_cfgs

__all__ = ["VGGKAN", "VGG_LAYOUTS", "convert_tck_vgg_state_dict", "is_tck_vgg_state_dict"]

LayoutItem = Union[int, str]

_V4 = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M", 256, 256]
VGG_LAYOUTS: dict[str, list[LayoutItem]] = {
    "v2": [16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M", 128, 128],
    "v4": _V4,
    "v4_13": [16, 16, "M", 32, 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M", 256, 256],
    "v4_16": [16, 16, "M", 32, 32, "M", 64, 64, 64, "M", 128, 128, 128, "M", 128, 128, 128, "M", 256, 256],
    "v4_19": [16, 16, "M", 32, 32, "M", 64, 64, 64, 64, "M", 128, 128, 128, 128, "M", 128, 128, 128, 128, "M",
              256, 256],
}
"""Stage layouts before the width multiplier (the published networks use ``width=2``)."""

_DEFAULT_WIDTH = 2.0
_POLYNOMIAL_DEFAULT_DEGREE = 5
_ORIGINAL_LAYER_KEY = re.compile(r"^features\.(\d+)\.poly_weights$")


def _check_layout(cfg: Sequence[LayoutItem]) -> list[LayoutItem]:
    layout = list(cfg)
    if not any(isinstance(v, int) for v in layout):
        raise ValueError(f"cfg must contain at least one conv width, got {cfg!r}")
    for v in layout:
        if not (v == "M" or (isinstance(v, int) and not isinstance(v, bool) and v > 0)):
            raise ValueError(f"cfg entries must be positive ints (conv widths) or 'M' (max-pool), got {v!r} in {cfg!r}")
    if layout[0] == "M":
        raise ValueError(f"cfg must start with a conv width, not 'M': {cfg!r}")
    return layout


def _resolve_width(width: float | None, width_multiplier: float | None) -> float:
    """``width``, or its former name ``width_multiplier``, or the default 2; both together are refused."""
    if width is not None and width_multiplier is not None:
        raise TypeError(f"VGGKAN got width={width!r} and width_multiplier={width_multiplier!r}, two names for the "
                        "same multiplier; pass only width=")
    chosen = width if width is not None else width_multiplier
    return _DEFAULT_WIDTH if chosen is None else chosen


_RGB = 3


def _stem_conv(make: KANConvFactory, in_chans: int, width: int) -> nn.Module:
    """The first conv (groups=1, no dropout). A bottleneck stem keeps the inner width it has for RGB input
    whatever ``in_chans`` is (only its input-side 1x1 and base convs take ``in_chans``), so RGB
    weights adapt to other channel counts by summing or repeating over the input channels."""
    if not issubclass(make.conv_cls, BottleneckKANConvBase) or in_chans == _RGB:
        return make(in_chans, width, 3)
    stem = make(_RGB, width, 3)
    stem.inner_proj = nn.Conv2d(in_chans, stem.inner_channels, 1, bias=False)
    if stem.base_conv is not None:
        stem.base_conv = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
    stem.in_channels = in_chans
    return stem


class VGGKAN(KANClassifierMixin, nn.Module):
    """VGG-style KAN classifier: 3x3 KAN convs and max-pools, global pool, dropout, linear head.

    Args:
        cfg: stage layout (conv widths and ``'M'``), or a name from :data:`VGG_LAYOUTS`.
        num_classes: classifier outputs; 0 gives the pooled feature vector.
        in_chans: input channels.
        conv: KAN conv family (any name ``kanzoo.layers.get_conv`` accepts: ``'bottleneck_kagn'``, ``'kagn'``...).
        norm_layer: norm after each conv (``'batch'``, ``'instance'`` (affine), ``'layer'``, ``'group'``, None).
        width: multiplier of every width in ``cfg`` (rounded, at least 1); None means 2, the published networks.
        groups: groups of every conv after the first (an int, or ``'depthwise'``: ``gcd(in, out)`` per conv);
            the first conv has ``groups=1``.
        drop_rate: dropout before the classifier.
        conv_drop_rate: dropout inside every conv after the first (train only; the first has none).
        global_pool: timm pool type (``'avg'``, ``'max'``, ``'avgmax'``, ``'catavgmax'``, ``''`` for none; with
            ``num_classes > 0`` and no pooling the linear layer is applied at every position).
        conv_kwargs: family arguments as a dict; loose ``**family_kwargs`` (``degree=5``) are merged in.
        act_layer: activation after each conv's norm.
        width_multiplier: the former name of ``width``; give one of the two.
    """

    per_position_logits = True

    def __init__(
        self,
        cfg: Sequence[LayoutItem] | str = "v4",
        num_classes: int = 1000,
        in_chans: int = 3,
        conv: str = "bottleneck_kagn",
        norm_layer: Any = "batch",
        width: float | None = None,
        groups: GroupsSpec = 1,
        drop_rate: float = 0.25,
        conv_drop_rate: float = 0.15,
        global_pool: str = "avg",
        conv_kwargs: dict[str, Any] | None = None,
        act_layer: Any = "silu",
        *,
        width_multiplier: float | None = None,
        **family_kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(cfg, str):
            if cfg not in VGG_LAYOUTS:
                raise ValueError(f"unknown VGG layout {cfg!r}; use one of {sorted(VGG_LAYOUTS)} or a list like "
                                 "[16, 'M', 32, 'M', 64, 64]")
            cfg = VGG_LAYOUTS[cfg]
        layout = _check_layout(cfg)
        width = _resolve_width(width, width_multiplier)
        if "dropout" in {**(conv_kwargs or {}), **family_kwargs}:
            raise TypeError("VGGKAN sets the dropout inside its convs from conv_drop_rate; pass conv_drop_rate= "
                            "instead of dropout=")
        self._check_head(num_classes, global_pool)
        make = make_factory(conv, groups, conv_kwargs, family_kwargs, norm_layer, act_layer)
        self.conv_name = make.conv
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        layers: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        channels, reduction = in_chans, 1
        for index, item in enumerate(layout):
            if item == "M":
                self.feature_info.append(dict(num_chs=channels, reduction=reduction, module=f"features.{index - 1}"))
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                reduction *= 2
                continue
            out_chs = scale_channels(item, width)
            if layers:
                layers.append(make(channels, out_chs, 3, grouped=True, dropout=conv_drop_rate))
            else:
                layers.append(_stem_conv(make, in_chans, out_chs))
            channels = out_chs
        if layout[-1] != "M":
            self.feature_info.append(dict(num_chs=channels, reduction=reduction, module=f"features.{len(layout) - 1}"))
        self.features = nn.Sequential(*layers)
        pools = [i + 1 for i, item in enumerate(layout) if item == "M"]
        # checkpointing segments: each stage's convs with the pool that ends it
        self._stages = [(a, b) for a, b in zip([0] + pools, pools + [len(layout)]) if b > a]
        self.num_features = self.head_hidden_size = channels
        self._traits = dict(first_conv=self._first_conv_names())
        self._build_head(num_classes, global_pool)
        self.register_load_state_dict_pre_hook(_convert_original_keys)

    def _first_conv_names(self) -> tuple[str, ...]:
        first = self.features[0]
        if isinstance(first, BottleneckKANConvBase):
            names = ["features.0.inner_proj"] + (["features.0.base_conv"] if first.base_conv is not None else [])
            return tuple(names)
        return ("features.0",)

    def _build_head(self, num_classes: int, global_pool: str) -> None:
        """``global_pool`` (timm's pool) and ``classifier`` = Sequential(Dropout, Linear), the original keys."""
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        in_features = self.num_features * self.global_pool.feat_mult()
        fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        self.classifier = nn.Sequential(nn.Dropout(self.drop_rate), fc)

    def _head_pool_type(self) -> str:
        return self.global_pool.pool_type

    def _reset_head(self, num_classes: int, global_pool: str | None) -> None:
        self._build_head(num_classes, self._head_pool_type() if global_pool is None else global_pool)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for timm's layer-wise learning-rate decay."""
        return dict(stem=r"^features\.0\.", blocks=r"^features\.(\d+)")

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The final linear layer (``classifier.1``)."""
        return self.classifier[1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``(N, num_features, H / 2^pools, W / 2^pools)``; with grad checkpointing each
        stage (its convs up to and including their pool) is recomputed in backward."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for start, end in self._stages:
                x = checkpoint(self.features[start:end], x, use_reentrant=False)
            return x
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify (``pre_logits``: stop before the classifier); without pooling the
        classifier is applied at every position, giving ``(N, num_classes, H, W)``."""
        x = self.global_pool(x)
        x = self.classifier[0](x)
        if pre_logits:
            return x
        if x.dim() == 4:
            return self.classifier[1](x.movedim(1, -1)).movedim(-1, 1)
        return self.classifier[1](x)


def is_tck_vgg_state_dict(state: Mapping[str, Any], prefix: str = "") -> bool:
    """Whether ``state`` is in the original Torch-Conv-KAN VGG format (``features.N.poly_weights`` keys)."""
    return any(_ORIGINAL_LAYER_KEY.match(key[len(prefix):]) for key in state if key.startswith(prefix))


def convert_tck_vgg_state_dict(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Map a Torch-Conv-KAN VGG (``VGGKAGN`` / ``VGGKAGN_BN``) state dict onto :class:`VGGKAN` keys.

    Every key under ``prefix`` must be consumed (each Gram layer and ``classifier.1``); anything
    left over raises a ``KeyError`` naming it, so a conversion never silently drops weights.
    """
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    indices = sorted({int(m.group(1)) for key in state if key.startswith(prefix)
                      for m in [_ORIGINAL_LAYER_KEY.match(key[len(prefix):])] if m})
    for index in indices:
        layer = f"features.{index}."
        for key, value in convert_tck_kagn_state_dict(state, prefix=prefix + layer, used=used).items():
            out[prefix + layer + key] = value
    for key, value in state.items():
        if key.startswith(prefix + "classifier.1."):
            out[key] = value
            used.add(key)
    leftover = sorted(key for key in state if key.startswith(prefix) and key not in used)
    if leftover:
        raise KeyError(f"Torch-Conv-KAN VGG conversion left {len(leftover)} key(s) unmapped: {leftover[:8]}")
    return out


def _convert_original_keys(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str,
                           *args: Any) -> None:
    """``load_state_dict`` pre-hook: convert an original-format state dict in place, so every path accepts it."""
    if not is_tck_vgg_state_dict(state_dict, prefix):
        return
    original = {key: state_dict.pop(key) for key in [k for k in state_dict if k.startswith(prefix)]}
    state_dict.update(convert_tck_vgg_state_dict(original, prefix))


def _create_vggkan(variant: str, pretrained: bool = False, **kwargs: Any) -> VGGKAN:
    """Build an entry; polynomial families get ``degree=5`` (the published networks) unless a degree is given."""
    conv_cls = get_conv(kwargs.get("conv", "bottleneck_kagn"), 2)
    given = {**(kwargs.get("conv_kwargs") or {}), **kwargs}
    if "degree" in accepted_kwargs(conv_cls) and "degree" not in given:
        kwargs["degree"] = _POLYNOMIAL_DEFAULT_DEGREE
    return build_kan_model(VGGKAN, variant, pretrained, feature_cfg=dict(flatten_sequential=True), **kwargs)


def _cfg(first_conv: str | tuple[str, ...] = ("features.0.inner_proj", "features.0.base_conv"),
         **kwargs: Any) -> dict[str, Any]:
    return dict(num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                first_conv=first_conv, classifier="classifier.1", **kwargs)


default_cfgs = generate_default_cfgs({
    **pretrained_cfgs("vggkan_11", **_cfg()),
    **pretrained_cfgs("vggkan_13", **_cfg()),
    **pretrained_cfgs("vggkan_16", **_cfg()),
    **pretrained_cfgs("vggkan_19", **_cfg()),
    **pretrained_cfgs("vggkan_11_v2_in", **_cfg(first_conv="features.0")),
    **pretrained_cfgs("vggkan_11_v4_in", **_cfg(first_conv="features.0")),
})

_BN_RECIPE: dict[str, Any] = dict(conv="bottleneck_kagn", norm_layer="batch")
_IN_RECIPE: dict[str, Any] = dict(conv="kagn", norm_layer="instance")


@register_model
def vggkan_11(pretrained: bool = False, **kwargs: Any) -> VGGKAN:
    """VGGKAN-11 = ``brivangl/vgg_kagn_bn11_v4``: VGG11v4 x2, bottleneck Gram (degree 5), BatchNorm."""
    return _create_vggkan("vggkan_11", pretrained, **dict(dict(cfg="v4", **_BN_RECIPE), **kwargs))


@register_model
def vggkan_13(pretrained: bool = False, **kwargs: Any) -> VGGKAN:
    """VGGKAN-13: the vggkan_11 recipe with two convs in every stage."""
    return _create_vggkan("vggkan_13", pretrained, **dict(dict(cfg="v4_13", **_BN_RECIPE), **kwargs))


@register_model
def vggkan_16(pretrained: bool = False, **kwargs: Any) -> VGGKAN:
    """VGGKAN-16: the vggkan_11 recipe with stage depths 2-2-3-3-3-2."""
    return _create_vggkan("vggkan_16", pretrained, **dict(dict(cfg="v4_16", **_BN_RECIPE), **kwargs))


@register_model
def vggkan_19(pretrained: bool = False, **kwargs: Any) -> VGGKAN:
    """VGGKAN-19: the vggkan_11 recipe with stage depths 2-2-4-4-4-2."""
    return _create_vggkan("vggkan_19", pretrained, **dict(dict(cfg="v4_19", **_BN_RECIPE), **kwargs))


@register_model
def vggkan_11_v2_in(pretrained: bool = False, **kwargs: Any) -> VGGKAN:
    """Layout of ``brivangl/vgg_kagn11_v2``: VGG11v2 x2, plain Gram conv (degree 5), affine InstanceNorm."""
    return _create_vggkan("vggkan_11_v2_in", pretrained, **dict(dict(cfg="v2", **_IN_RECIPE), **kwargs))


@register_model
def vggkan_11_v4_in(pretrained: bool = False, **kwargs: Any) -> VGGKAN:
    """Layout of ``brivangl/vgg_kagn11_v4``: VGG11v4 x2, plain Gram conv (degree 5), affine InstanceNorm."""
    return _create_vggkan("vggkan_11_v4_in", pretrained, **dict(dict(cfg="v4", **_IN_RECIPE), **kwargs))
