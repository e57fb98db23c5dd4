"""U2KANet: U^2-Net style salient-object / segmentation network of nested residual U-blocks with KAN convs.

Six encoder stages of residual U-blocks (RSU-7, 6, 5, 4 and two dilated RSU-4F) and five decoder
stages mirror them; each RSU block is itself a small U-Net of KAN convs whose output is added to its
input projection. Every decoder stage (and the deepest encoder stage) gives a side output (a plain
3x3 conv to ``num_classes`` channels, upsampled to the input size); a 1x1 conv (``head``) fuses the
six side outputs. ``forward`` returns only the fused logits ``(N, num_classes, H, W)``.

H and W must be multiples of ``output_stride`` (32): every RSU block halves its input down to 1/32
of the network input. Other sizes raise a ``ValueError`` naming the multiple (pad or resize first).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from timm.models import generate_default_cfgs, register_model
from torch import nn

from kanzoo.models._blocks import IMAGENET_MEAN, IMAGENET_STD, GroupsSpec, KANConvFactory, make_factory, scale_channels
from kanzoo.models._builder import build_kan_model
from kanzoo.models._pretrained import pretrained_cfgs
from kanzoo.models._segmentation import KANSegmentationModel

__all__ = ["U2KANet", "RSUBlock"]

# (height, dilated, mid, out) of the encoder stages, then of the decoder stages (deepest first); the input
# channels of each stage follow from the previous stage and the skip connection
_U2NET = (
    [(7, False, 32, 64), (6, False, 32, 128), (5, False, 64, 256), (4, False, 128, 512), (4, True, 256, 512),
     (4, True, 256, 512)],
    [(4, True, 256, 512), (4, False, 128, 256), (5, False, 64, 128), (6, False, 32, 64), (7, False, 16, 64)],
)
_U2NET_SMALL = (
    [(7, False, 16, 64), (6, False, 16, 64), (5, False, 16, 64), (4, False, 16, 64), (4, True, 16, 64),
     (4, True, 16, 64)],
    [(4, True, 16, 64), (4, False, 16, 64), (5, False, 16, 64), (6, False, 16, 64), (7, False, 16, 64)],
)
StageSpec = tuple[int, bool, int, int]


def _upsample_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class RSUBlock(nn.Module):
    """Residual U-block of ``height`` levels: ``proj(x) + unet(proj(x))`` (RSU-L, or RSU-LF when ``dilated``).

    The plain block halves the resolution ``height - 2`` times with max-pools and ends its encoder with
    a dilation-2 conv; the dilated block keeps the resolution and grows the dilation (1, 2, 4, ...).
    """

    def __init__(self, make: KANConvFactory, height: int, in_chs: int, mid_chs: int, out_chs: int,
                 dilated: bool = False) -> None:
        super().__init__()
        if height < 2:
            raise ValueError(f"an RSU block needs height >= 2, got {height}")
        self.dilated = dilated
        self.height = height
        dilations = [2 ** i for i in range(height)] if dilated else [1] * (height - 1) + [2]
        self.proj = make(in_chs, out_chs, 3)
        self.encoder = nn.ModuleList([make(out_chs if i == 0 else mid_chs, mid_chs, 3, dilation=dilations[i],
                                           grouped=i > 0) for i in range(height - 1)])
        self.bottom = make(mid_chs, mid_chs, 3, dilation=dilations[-1], grouped=True)
        self.decoder = nn.ModuleList([make(2 * mid_chs, out_chs if i == 0 else mid_chs, 3, dilation=dilations[i],
                                           grouped=True) for i in range(height - 1)])
        self.pool = nn.MaxPool2d(2, stride=2)

    @property
    def num_pools(self) -> int:
        """How many times the block halves its input (its own output stride is ``2 ** num_pools``)."""
        return 0 if self.dilated else self.height - 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.proj(x)
        skips = []
        h = projected
        for i, conv in enumerate(self.encoder):
            if i > 0 and not self.dilated:
                h = self.pool(h)
            h = conv(h)
            skips.append(h)
        h = self.bottom(h)
        for i in reversed(range(len(self.decoder))):
            h = self.decoder[i](torch.cat([h, skips[i]], 1))
            if i > 0 and not self.dilated:
                h = _upsample_like(h, skips[i - 1])
        return h + projected


class U2KANet(KANSegmentationModel):
    """U^2-Net of KAN convolutions: nested RSU blocks, six side outputs fused by a 1x1 conv (``head``).

    Args:
        stages: ``(encoder, decoder)`` lists of ``(height, dilated, mid, out)`` per RSU block; ``'full'``
            or ``'small'`` picks U^2-Net's or U^2-Net-small's layout.
        in_chans, num_classes: input channels and logit channels.
        drop_rate: dropout on the concatenated side outputs before the fusion conv.
        conv, conv_kwargs, groups, width, norm_layer, act_layer, **family_kwargs: as in ``ResKANet``;
        ``width`` multiplies every mid and out channel count.

    ``freeze_encoder()`` freezes the six encoder stages (``encoder``); decoder, side outputs and head keep training.
    """

    def __init__(self, stages: str | tuple[Sequence[StageSpec], Sequence[StageSpec]] = "full", in_chans: int = 3,
                 num_classes: int = 1, drop_rate: float = 0.0, conv: str = "kagn",
                 conv_kwargs: dict[str, Any] | None = None, groups: GroupsSpec = 1, width: float = 1.0,
                 norm_layer: Any = "batch", act_layer: Any = "silu", **family_kwargs: Any) -> None:
        super().__init__(num_classes, in_chans)
        if isinstance(stages, str):
            layouts = {"full": _U2NET, "small": _U2NET_SMALL}
            if stages not in layouts:
                raise ValueError(f"stages must be one of {sorted(layouts)} or (encoder, decoder) lists, got {stages!r}")
            stages = layouts[stages]
        encoder_specs, decoder_specs = stages
        if len(decoder_specs) != len(encoder_specs) - 1:
            raise ValueError(f"U2KANet needs one decoder stage fewer than encoder stages, got {len(encoder_specs)} "
                             f"and {len(decoder_specs)}")
        make = make_factory(conv, groups, conv_kwargs, family_kwargs, norm_layer, act_layer)

        def build(height: int, dilated: bool, in_chs: int, mid: int, out: int) -> RSUBlock:
            return RSUBlock(make, height, in_chs, scale_channels(mid, width), scale_channels(out, width), dilated)

        encoder, encoder_chs, chs = [], [], in_chans
        for height, dilated, mid, out in encoder_specs:
            encoder.append(build(height, dilated, chs, mid, out))
            chs = scale_channels(out, width)
            encoder_chs.append(chs)
        self.encoder = nn.ModuleList(encoder)
        decoder, side_chs = [], [chs]
        for i, (height, dilated, mid, out) in enumerate(decoder_specs):
            decoder.append(build(height, dilated, chs + encoder_chs[-2 - i], mid, out))
            chs = scale_channels(out, width)
            side_chs.append(chs)
        self.decoder = nn.ModuleList(decoder)
        self.side = nn.ModuleList([nn.Conv2d(c, num_classes, 3, padding=1) for c in side_chs])
        self.head_drop = nn.Dropout(drop_rate)
        self.num_features = len(side_chs) * num_classes  # the fused side maps the head reads
        self.head = nn.Conv2d(self.num_features, num_classes, 1)
        self.output_stride = max(2 ** (i + stage.num_pools) for i, stage in enumerate(self.encoder))
        self.grad_checkpointing = False

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every RSU stage in backward instead of storing its activations."""
        self.grad_checkpointing = enable

    def _run(self, stage: RSUBlock, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(stage, x, use_reentrant=False)
        return stage(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused logits ``(N, num_classes, H, W)``; H and W must be multiples of ``output_stride``."""
        self.check_input(x)
        skips = []
        h = x
        for i, stage in enumerate(self.encoder):
            if i > 0:
                h = F.max_pool2d(h, 2)
            h = self._run(stage, h)
            skips.append(h)
        sides = [h]
        for i, stage in enumerate(self.decoder):
            skip = skips[-2 - i]
            h = self._run(stage, torch.cat([_upsample_like(h, skip), skip], 1))
            sides.append(h)
        maps = [_upsample_like(conv(side), x) for conv, side in zip(self.side, sides)]
        return self.head(self.head_drop(torch.cat(maps, 1)))


def _create_u2kanet(variant: str, pretrained: bool, **kwargs: Any) -> U2KANet:
    return build_kan_model(U2KANet, variant, pretrained, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    sides = tuple(f"side.{i}" for i in range(6))
    return dict(num_classes=1, input_size=(3, 320, 320), crop_pct=1.0, interpolation="bilinear",
                mean=IMAGENET_MEAN, std=IMAGENET_STD, first_conv="encoder.0.proj", classifier=("head", *sides),
                license="apache-2.0", **kwargs)


default_cfgs = generate_default_cfgs({
    **pretrained_cfgs("u2kanet", **_cfg()),
    **pretrained_cfgs("u2kanet_small", **_cfg()),
})


@register_model
def u2kanet(pretrained: bool = False, **kwargs: Any) -> U2KANet:
    """U2KANet: U^2-Net's stage layout (RSU-7 ... RSU-4F, 64 to 512 channels) with KAN convs."""
    return _create_u2kanet("u2kanet", pretrained, **dict(dict(stages="full"), **kwargs))


@register_model
def u2kanet_small(pretrained: bool = False, **kwargs: Any) -> U2KANet:
    """U2KANet-small: U^2-Net-small's layout (16 mid and 64 out channels in every stage) with KAN convs."""
    return _create_u2kanet("u2kanet_small", pretrained, **dict(dict(stages="small"), **kwargs))
