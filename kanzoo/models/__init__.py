"""kanzoo's architectures, registered into timm's registry on import (``timm.create_model`` sees them)."""

from . import reskanet
from ._registry import create_model, is_model, list_models
from .reskanet import ResKANet

__all__ = ["create_model", "is_model", "list_models", "ResKANet"]
