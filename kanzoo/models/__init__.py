"""kanzoo's architectures, registered into timm's registry on import (``timm.create_model`` sees them)."""

from . import densekanet, pruned, reskanet, u2kanet, ukanet, vggkan
from ._kanify import FILTER_NAMES as KANIFY_FILTERS, KanifyRecord, kanify
from ._registry import create_model, is_model, list_models
from ._segmentation import KANSegmentationModel
from .pruned import PruningRecord, apply_pruning
from .densekanet import DenseKANet
from .reskanet import ResKANet
from .u2kanet import U2KANet
from .ukanet import UKANet
from .vggkan import VGGKAN

__all__ = ["KANIFY_FILTERS", "KanifyRecord", "PruningRecord", "apply_pruning", "create_model", "is_model", "kanify",
           "list_models", "DenseKANet", "KANSegmentationModel", "ResKANet", "U2KANet", "UKANet", "VGGKAN"]
