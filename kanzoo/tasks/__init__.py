"""Tasks: fine-tuning, segmentation training, evaluation, prediction and export (library functions)."""

from .classification import evaluate_classifier, finetune
from .errors import TaskError
from .train import FitResult

__all__ = ["TaskError", "FitResult", "finetune", "evaluate_classifier"]
