"""A training run's output folder: guard against clobbering, atomic checkpoints, metrics.csv, curves PNG."""

from __future__ import annotations

import csv
import io
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..hub.publish import atomic_write
from .errors import TaskError

CHECKPOINT = "last.pt"
METRICS = "metrics.csv"
CURVES = "curves.png"
BEST = "best"
OVERLAYS = "overlays"
RUN_OUTPUTS = (CHECKPOINT, METRICS, CURVES, BEST, OVERLAYS)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def rng_state() -> dict[str, Any]:
    """Every random generator's state (Python, NumPy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunFolder:
    """The output folder of one run; refuses to reuse a folder holding a run unless resuming or overwriting."""

    def __init__(self, path: str | Path, *, resume: bool = False, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.resume = resume
        self.overwrite = overwrite
        if resume and overwrite:
            raise TaskError("--resume and --overwrite contradict each other; pass one of them")
        if self.path.exists() and not self.path.is_dir():
            raise TaskError(f"output {self.path} is a file; pass a folder for --out")
        existing = [name for name in RUN_OUTPUTS if (self.path / name).exists()]
        if resume and not (self.path / CHECKPOINT).is_file():
            raise TaskError(f"nothing to resume in {self.path} (no {CHECKPOINT}); drop --resume to start a new run"
                            + (" or pass --overwrite to replace the outputs there" if existing else ""))
        if existing and not resume and not overwrite:
            raise TaskError(f"{self.path} already holds a run ({', '.join(existing)}); pass --resume to continue "
                            "it, --overwrite to replace it, or choose another --out folder")

    @property
    def checkpoint_path(self) -> Path:
        """The resumable last-state checkpoint."""
        return self.path / CHECKPOINT

    @property
    def best_dir(self) -> Path:
        """The hub-ready folder of the best model so far."""
        return self.path / BEST

    def prepare(self) -> None:
        """Create the folder; with ``overwrite`` remove the previous run's outputs (and nothing else)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.overwrite:
            for name in RUN_OUTPUTS:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write the last-state checkpoint atomically."""
        atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> dict[str, Any]:
        """Read the last-state checkpoint (written by this code, so full unpickling is allowed)."""
        try:
            return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
            raise TaskError(f"cannot read checkpoint {self.checkpoint_path} ({err}); pass --overwrite to start "
                            "over") from err

    def write_metrics(self, history: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
        """Rewrite ``metrics.csv`` (one row per finished epoch) atomically."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: _format(v) for k, v in row.items()})
        atomic_write_text(self.path / METRICS, buffer.getvalue())

    def write_curves(self, history: Sequence[dict[str, Any]], losses: Sequence[str], scores: Sequence[str]) -> None:
        """Plot losses and validation scores per epoch into ``curves.png``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        epochs = [row["epoch"] for row in history]
        figure = Figure(figsize=(9, 3.5), dpi=100)
        FigureCanvasAgg(figure)
        for axis_index, (keys, title) in enumerate(((losses, "loss"), (scores, "validation"))):
            axis = figure.add_subplot(1, 2, axis_index + 1)
            for key in keys:
                axis.plot(epochs, [row[key] for row in history], marker="o", label=key)
            axis.set_xlabel("epoch")
            axis.set_title(title)
            axis.grid(alpha=0.3)
            axis.legend()
        figure.tight_layout()
        atomic_write(self.path / CURVES, lambda tmp: figure.savefig(tmp, format="png"))

    def replace_dir(self, name: str, fill: Callable[[Path], None]) -> Path:
        """Build a folder next to ``name`` with ``fill`` and swap it in, so ``name`` is never half written."""
        target = self.path / name
        tmp = self.path / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        old = self.path / f".{name}.{uuid.uuid4().hex[:8]}.old"
        try:
            fill(tmp)
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
        finally:
            for leftover in (tmp, old):
                if leftover.exists():
                    shutil.rmtree(leftover)
        return target


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
