"""The one place where every kanzoo architecture is built (timm's builder plus kanzoo's weight loading)."""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg
from torch import nn


def build_kan_model(model_cls: type[nn.Module], variant: str, pretrained: bool = False, *,
                    feature_cfg: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build ``model_cls`` for the registry entry ``variant`` with its pretrained cfg (timm-style)."""
    return build_model_with_cfg(model_cls, variant, pretrained, feature_cfg=feature_cfg, **kwargs)
