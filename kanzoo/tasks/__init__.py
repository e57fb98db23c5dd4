"""Tasks: fine-tuning, segmentation training, evaluation, prediction, export, inspection and pruning (library
functions)."""

from .classification import evaluate_classifier, finetune
from .errors import TaskError, TaskRuntimeError
from .evaluation import evaluate
from .export import ExportReport, export_model
from .hfdata import HFOptions
from .inspection import inspect
from .predict import Prediction, predict
from .pruning import PruneReport, prune
from .quickstart import QuickstartReport, quickstart
from .recipe import Recipe
from .segmentation import evaluate_segmenter, segment
from .train import FitResult

__all__ = [
    "TaskError", "TaskRuntimeError", "FitResult", "ExportReport", "HFOptions", "Prediction", "PruneReport",
    "QuickstartReport", "Recipe", "finetune", "segment", "evaluate", "evaluate_classifier", "evaluate_segmenter",
    "predict", "export_model", "quickstart", "inspect", "prune",
]
