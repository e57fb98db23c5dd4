"""``kanzoo quickstart``: synthetic data -> fine-tune a small KAN ResNet -> evaluate -> save -> reload."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checks
from .classification import evaluate_classifier, finetune
from .errors import TaskError
from .modeling import create_task_model
from .runs import RunFolder
from .synthetic import PATTERNS, make_classification_folder

QUICKSTART_MODEL = "reskanet_18"
QUICKSTART_MODEL_KWARGS: dict[str, Any] = {"width": 0.25, "stem_width": 32}
QUICKSTART_IMG_SIZE = 32


@dataclass
class QuickstartReport:
    """Where the quick start put things and the accuracy of the reloaded model."""

    data: Path
    run: Path
    model_dir: Path
    top1: float
    images: int
    seconds: float


def quickstart(out: str | Path = "kanzoo-quickstart", *, epochs: int = 30, train_per_class: int = 60,
               overwrite: bool = False, seed: int = 0, workers: int | None = 0,
               progress: bool | None = None) -> QuickstartReport:
    """Fine-tune a small ResKANet-18 on a synthetic 4-pattern data set, then reload it and evaluate it.

    The data set is written to ``out/data`` (reused when present), the run to ``out/run``; when that
    already holds a run, the next free ``out/run-2``, ``out/run-3``, ... (unless ``overwrite``), so
    running the quick start again keeps earlier results.
    """
    started = time.perf_counter()
    checks.at_least("--epochs", epochs, 1)
    checks.at_least("train_per_class", train_per_class, 4)
    checks.seed(seed)
    out = checks.output_folder("--out", out)
    data = out / "data"
    if data.exists() and not data.is_dir():
        raise TaskError(f"{data} is a file; the quick start writes its data set there: pass another --out")
    run = out / "run" if overwrite else _free_run_dir(out / "run")
    RunFolder(run, overwrite=overwrite)  # its checks, before the data set is written
    if not (data / "train").is_dir():
        make_classification_folder(data, train_per_class=train_per_class, val_per_class=train_per_class // 4,
                                   size=QUICKSTART_IMG_SIZE, patterns=PATTERNS, seed=seed)
    result = finetune(QUICKSTART_MODEL, data, run, epochs=epochs, batch_size=16, lr=2e-3,
                      img_size=QUICKSTART_IMG_SIZE, pretrained=False, workers=workers, seed=seed,
                      overwrite=overwrite, progress=progress, model_kwargs=QUICKSTART_MODEL_KWARGS)
    reloaded = create_task_model(str(result.best_dir))
    metrics = evaluate_classifier(reloaded, data, workers=workers, progress=False)
    return QuickstartReport(data, result.out, result.best_dir, metrics["top1"], metrics["images"],
                            time.perf_counter() - started)


def _free_run_dir(base: Path) -> Path:
    """``base`` while it is missing or empty, else the first missing or empty ``base-2``, ``base-3``, ..."""
    candidate, number = base, 1
    while candidate.is_dir() and any(candidate.iterdir()):
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate
