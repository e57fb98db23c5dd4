"""Tasks: fine-tuning, segmentation training, evaluation, prediction and export (library functions)."""

from .classification import evaluate_classifier, finetune
from .errors import TaskError, TaskRuntimeError
from .evaluation import evaluate
from .export import ExportReport, export_model
from .hfdata import HFOptions
from .predict import Prediction, predict
from .quickstart import QuickstartReport, quickstart
from .recipe import Recipe
from .segmentation import evaluate_segmenter, segment
from .train import FitResult

__all__ = [
    "TaskError", "TaskRuntimeError", "FitResult", "ExportReport", "HFOptions", "Prediction", "QuickstartReport",
    "Recipe", "finetune", "segment", "evaluate", "evaluate_classifier", "evaluate_segmenter", "predict",
    "export_model", "quickstart",
]
