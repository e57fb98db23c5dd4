"""kanzoo: a model zoo of Kolmogorov-Arnold convolutional networks for PyTorch and timm."""

from . import layers, models
from .models import create_model, is_model, kanify, list_models
from . import hub
from .hub import push_to_hub, save_pretrained

__version__ = "0.1.0"
