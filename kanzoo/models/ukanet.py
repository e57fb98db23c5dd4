"""UKANet: a U-Net whose encoder is any registered kanzoo classifier and whose decoder is made of KAN convs.

The encoder is built with ``create_model(encoder, features_only=True)`` and every level of its
``feature_info`` is used as a skip connection. Going from the deepest level up, each decoder stage
upsamples (bilinear) to the next level, concatenates its skip and applies two 3x3 KAN convs; when the
shallowest level is below full resolution, one more stage (without skip) brings the map to the input
size. A plain 1x1 conv (``head``) gives the logits ``(N, num_classes, H, W)``. Decoder stage widths
default to the channels of the skip they join (half of it for the full-resolution stage).

H and W must be multiples of ``output_stride`` (the encoder's deepest reduction, 32 for ResKANet);
other sizes raise a ``ValueError`` naming the multiple (pad or resize the input first).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from timm.models import generate_default_cfgs, register_model, resolve_pretrained_cfg
from torch import nn

from kanzoo.models._blocks import IMAGENET_MEAN, IMAGENET_STD, GroupsSpec, KANConvFactory, make_factory
from kanzoo.models._builder import build_kan_model
from kanzoo.models._pretrained import build_tag, pretrained_cfgs, tag_model_args
from kanzoo.models._registry import create_model
from kanzoo.models._segmentation import KANSegmentationModel

__all__ = ["UKANet", "DecoderStage"]


class DecoderStage(nn.Module):
    """Upsample to the skip's size, concatenate the skip, then two 3x3 KAN convs."""

    def __init__(self, make: KANConvFactory, in_chs: int, skip_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv1 = make(in_chs + skip_chs, out_chs, 3, grouped=True)
        self.conv2 = make(out_chs, out_chs, 3, grouped=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: Sequence[int]) -> torch.Tensor:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], 1)
        return self.conv2(self.conv1(x))


class UKANet(KANSegmentationModel):
    """U-Net of KAN convolutions on a kanzoo classification encoder.

    Args:
        encoder: registry name of the encoder (``'reskanet_18'``, ``'vggkan_11'``, ``'densekanet_121'``...).
        encoder_kwargs: extra arguments for the encoder only (e.g. ``dict(cfg='v2')`` for VGGKAN).
        pretrained_encoder: load the encoder's pretrained weights (when its entry has them).
        in_chans, num_classes: input channels and logit channels.
        decoder_channels: widths of the decoder stages, deepest first (default: the skip widths).
        drop_rate: dropout before the 1x1 head.
        conv, conv_kwargs, groups, norm_layer, act_layer, **family_kwargs: the decoder's KAN convs (as in
            ``ResKANet``; default Gram). Those given explicitly go to the encoder too.
        width: channel multiplier passed to the encoder (every kanzoo classifier takes it); the decoder
            follows the encoder's widths.

    ``freeze_encoder()`` freezes the classification encoder (``encoder``); the decoder and head keep training.
    ``encoder_name`` and ``encoder_args`` record the encoder's registry name and the arguments it was built
    with (``in_chans`` included, and with ``pretrained_encoder`` those of the encoder's default tag, e.g.
    ``act_layer='relu'`` for ``reskanet_18.tv_in1k``).
    """

    def __init__(self, encoder: str = "reskanet_18", encoder_kwargs: dict[str, Any] | None = None,
                 pretrained_encoder: bool = False, in_chans: int = 3, num_classes: int = 1,
                 decoder_channels: Sequence[int] | None = None, drop_rate: float = 0.0, conv: str | None = None,
                 conv_kwargs: dict[str, Any] | None = None, groups: GroupsSpec | None = None,
                 width: float | None = None, norm_layer: Any = "batch", act_layer: Any = "silu",
                 **family_kwargs: Any) -> None:
        super().__init__(num_classes, in_chans)
        shared = dict(conv=conv, conv_kwargs=conv_kwargs, groups=groups, width=width)
        shared = {key: value for key, value in shared.items() if value is not None}
        enc_args = {**shared, **family_kwargs, **(encoder_kwargs or {})}
        levels = _count_levels(encoder, enc_args)
        self.encoder_name = encoder
        self.pretrained_encoder = pretrained_encoder
        # the arguments of the encoder's tag that create_model(encoder, pretrained=True) applies
        tag = build_tag(pretrained_encoder, None, None, resolve_pretrained_cfg(encoder).tag)
        self._encoder_tag_args = {k: v for k, v in tag_model_args(encoder, tag).items() if k not in enc_args}
        self._encoder_kwargs = dict(encoder_kwargs or {})
        self.encoder_args = {**self._encoder_tag_args, **enc_args, "in_chans": in_chans}
        self.encoder = create_model(encoder, pretrained=pretrained_encoder, features_only=True,
                                    out_indices=tuple(range(levels)), in_chans=in_chans, **enc_args)
        channels = self.encoder.feature_info.channels()
        reductions = self.encoder.feature_info.reduction()
        self.output_stride = int(max(reductions))
        make = make_factory(conv or "kagn", 1 if groups is None else groups, conv_kwargs, family_kwargs,
                            norm_layer, act_layer)
        skip_chs = list(channels[-2::-1])
        widths = skip_chs + ([max(1, channels[0] // 2)] if reductions[0] > 1 else [])
        if decoder_channels is not None:
            if len(decoder_channels) != len(widths):
                raise ValueError(f"decoder_channels needs {len(widths)} widths for encoder {encoder!r} (one per "
                                 f"decoder stage, deepest first), got {len(decoder_channels)}")
            widths = list(decoder_channels)
        stages, chs = [], channels[-1]
        for width_out, skip in zip(widths, skip_chs + [0]):
            stages.append(DecoderStage(make, chs, skip, width_out))
            chs = width_out
        self.decoder = nn.ModuleList(stages)
        self.num_features = chs
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Conv2d(chs, num_classes, 1)
        self.grad_checkpointing = False

    def model_args_for_saving(self) -> dict[str, Any]:
        """Overrides of the recorded arguments for ``save_pretrained``: the saved state holds the encoder's weights,
        so the saved model rebuilds with ``pretrained_encoder=False`` (no download) and the encoder's tag
        arguments in ``encoder_kwargs``."""
        if not self.pretrained_encoder:
            return {}
        return {"pretrained_encoder": False, "encoder_kwargs": {**self._encoder_tag_args, **self._encoder_kwargs}}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute encoder modules and decoder stages in backward instead of storing their activations."""
        self.grad_checkpointing = enable
        self.encoder.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H, W)``; H and W must be multiples of ``output_stride``."""
        self.check_input(x)
        features = self.encoder(x)
        h = features[-1]
        skips = features[-2::-1]
        for i, stage in enumerate(self.decoder):
            skip = skips[i] if i < len(skips) else None
            size = tuple(x.shape[-2:] if skip is None else skip.shape[-2:])
            if self.grad_checkpointing and not torch.jit.is_scripting():
                h = checkpoint(stage, h, skip, size, use_reentrant=False)
            else:
                h = stage(h, skip, size)
        return self.head(self.head_drop(h))


def _count_levels(encoder: str, kwargs: dict[str, Any]) -> int:
    """Number of ``feature_info`` levels of an encoder, read from a copy built on the meta device (no memory)."""
    with torch.device("meta"):
        probe = create_model(encoder, **kwargs)
    info = getattr(probe, "feature_info", None)
    if not info or len(info) < 2:
        raise ValueError(f"encoder {encoder!r} has no multi-level feature_info; use a kanzoo classifier "
                         "such as 'reskanet_18', 'densekanet_121' or 'vggkan_11'")
    return len(info)


def _create_ukanet(variant: str, pretrained: bool, **kwargs: Any) -> UKANet:
    return build_kan_model(UKANet, variant, pretrained, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return dict(num_classes=1, input_size=(3, 256, 256), crop_pct=1.0, interpolation="bilinear",
                mean=IMAGENET_MEAN, std=IMAGENET_STD, classifier="head", license="apache-2.0", **kwargs)


default_cfgs = generate_default_cfgs({
    **pretrained_cfgs("ukanet", **_cfg(first_conv=("encoder.features_0.inner_proj", "encoder.features_0.base_conv"))),
    **pretrained_cfgs("ukanet_18", **_cfg(first_conv="encoder.conv1")),
    **pretrained_cfgs("ukanet_34", **_cfg(first_conv="encoder.conv1")),
})


@register_model
def ukanet(pretrained: bool = False, **kwargs: Any) -> UKANet:
    """UKANet on any registered encoder, ``encoder='vggkan_11'`` (the published ImageNet KAN) by default."""
    return _create_ukanet("ukanet", pretrained, **dict(dict(encoder="vggkan_11"), **kwargs))


@register_model
def ukanet_18(pretrained: bool = False, **kwargs: Any) -> UKANet:
    """UKANet-18: U-Net on a ResKANet-18 encoder (skips at strides 2, 4, 8, 16; bottom at 32)."""
    return _create_ukanet("ukanet_18", pretrained, **dict(dict(encoder="reskanet_18"), **kwargs))


@register_model
def ukanet_34(pretrained: bool = False, **kwargs: Any) -> UKANet:
    """UKANet-34: U-Net on a ResKANet-34 encoder (skips at strides 2, 4, 8, 16; bottom at 32)."""
    return _create_ukanet("ukanet_34", pretrained, **dict(dict(encoder="reskanet_34"), **kwargs))
