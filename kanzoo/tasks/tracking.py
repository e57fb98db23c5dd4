"""Experiment tracking of a training run: TensorBoard event files and a Weights & Biases run inside the run folder.

Each epoch's scalars carry ``metrics.csv``'s column names (``train_loss``, ``val_top1``, ``lr``...) plus
``images_per_s``; the step is the epoch. Only the process that writes the run's files (rank 0) tracks.
"""

from __future__ import annotations

import importlib.util
import math
import os
import uuid
from pathlib import Path
from typing import Any, Sequence

from .errors import TaskError

LOGGERS = ("tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
THROUGHPUT = "images_per_s"
WANDB_PROJECT = "kanzoo"
_PACKAGES = {"tensorboard": ("tensorboard", 'pip install tensorboard (or "kanzoo[train]")'),
             "wandb": ("wandb", "pip install wandb")}


def check_loggers(names: Sequence[str]) -> None:
    """Refuse a tracker whose package is not installed, naming the install command."""
    for name in names:
        package, install = _PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise TaskError(f"--log {name} needs the {package} package, which is not installed: {install}")


def new_run_id() -> str:
    """An id for a W&B run, kept in ``last.pt`` so that a resumed run continues the same W&B run."""
    return uuid.uuid4().hex[:12]


def wandb_mode() -> str | None:
    """``offline`` unless ``WANDB_MODE`` says otherwise (nothing leaves the machine unless asked: ``wandb sync``
    uploads an offline run later)."""
    return None if os.environ.get("WANDB_MODE") else "offline"


class Tracker:
    """The trackers named in ``names`` for the run in ``folder``; they start at the first :meth:`log` (after the
    first epoch's outputs are in place, so that ``--overwrite`` retires only the previous run's files)."""

    def __init__(self, names: Sequence[str], folder: Path, columns: Sequence[str], config: dict[str, Any],
                 run_id: str) -> None:
        self.names = list(names)
        self.folder = Path(folder)
        self.columns = [name for name in columns if name != "epoch"]
        self.config = config
        self.run_id = run_id
        self._writer: Any = None
        self._wandb: Any = None

    def log(self, row: dict[str, Any]) -> None:
        """Log one epoch's row: the tracked columns and the throughput, at step ``row['epoch']``."""
        scalars = {key: float(row[key]) for key in [*self.columns, THROUGHPUT]
                   if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])}
        step = int(row["epoch"])
        if "tensorboard" in self.names:
            writer = self._tensorboard()
            for key, value in scalars.items():
                writer.add_scalar(key, value, step)
            writer.flush()
        if "wandb" in self.names:
            self._wandb_run().log({**scalars, "epoch": step}, step=step)

    def _tensorboard(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder / TENSORBOARD_DIR))
        return self._writer

    def _wandb_run(self) -> Any:
        if self._wandb is None:
            import wandb

            (self.folder / WANDB_DIR).mkdir(exist_ok=True)
            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), name=self.folder.name,
                                     id=self.run_id, resume="allow", dir=str(self.folder), config=self.config,
                                     mode=wandb_mode())
        return self._wandb

    def close(self) -> None:
        """Flush and close the trackers that were started."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
