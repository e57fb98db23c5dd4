"""kanzoo: a model zoo of Kolmogorov-Arnold convolutional networks for PyTorch and timm."""

from . import layers, models
from .models import create_model, is_model, list_models

__version__ = "0.1.0"
