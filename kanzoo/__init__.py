"""kanzoo: a model zoo of Kolmogorov-Arnold convolutional networks for PyTorch and timm."""

from . import layers

__version__ = "0.1.0"
