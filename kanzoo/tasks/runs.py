"""A training run's output folder: lock, guard against clobbering, recovery of interrupted writes, atomic
checkpoints (loaded with ``weights_only``), metrics.csv and the curves PNG.

``--overwrite`` keeps the previous run's outputs until the new run has finished its first epoch: then
they are moved aside (renames), the new outputs are written and the old ones deleted. A kill in between
is repaired at the next start (:meth:`RunFolder.prepare`): the old outputs come back unless the new
run's ``last.pt`` is already in place.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import random
import re
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..atomic import atomic_write, fsync_dir, is_leftover, remove, replace_folder
from .errors import TaskError
from .lock import RunLock

CHECKPOINT = "last.pt"
METRICS = "metrics.csv"
CURVES = "curves.png"
BEST = "best"
OVERLAYS = "overlays"
TRACKING = ("tensorboard", "wandb")
RUN_OUTPUTS = (CHECKPOINT, METRICS, CURVES, BEST, OVERLAYS, *TRACKING)
_RETIRED = re.compile(r"^\.replaced-[0-9a-f]{8}$")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def rng_state() -> dict[str, Any]:
    """Every random generator's state (Python, NumPy, torch CPU and CUDA) as tensors and plain values, the forms
    ``torch.load(weights_only=True)`` reads back."""
    version, python, gauss = random.getstate()
    _, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(python, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    python, numpy_state = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _unsafe_reason(err: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    return f" (it names {found.group(1)})" if found else ""


class RunFolder:
    """The output folder of one run; refuses to reuse a folder holding a run unless resuming or overwriting.

    The constructor only reads; :meth:`prepare` (called when the run's inputs have been checked) creates the
    folder, takes its lock and repairs what an interrupted run left; :meth:`close` releases the lock.
    """

    def __init__(self, path: str | Path, *, resume: bool = False, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.resume = resume
        self.overwrite = overwrite
        self.lock = RunLock(self.path)
        self._replace_pending = False
        self._retired: Path | None = None
        if resume and overwrite:
            raise TaskError("--resume and --overwrite contradict each other; pass one of them")
        if os.path.lexists(self.path) and not self.path.is_dir():
            raise TaskError(f"output {self.path} is a file; pass a folder for --out")
        self._check_outputs()

    def _restorable(self) -> Path | None:
        """The outputs of a run that an ``--overwrite`` killed before its own ``last.pt`` was in place moved aside,
        which :meth:`recover` puts back (they count as the folder's run until then)."""
        if not self.path.is_dir() or (self.path / CHECKPOINT).is_file():
            return None
        retired = sorted(p for p in self.path.iterdir() if _RETIRED.match(p.name))
        return retired[-1] if retired else None

    def _existing(self) -> list[str]:
        folder = self._restorable() or self.path
        return [name for name in RUN_OUTPUTS if os.path.lexists(folder / name)]

    def _check_outputs(self) -> None:
        existing = self._existing()
        if self.resume and CHECKPOINT not in existing:
            raise TaskError(f"nothing to resume in {self.path} (no {CHECKPOINT}); drop --resume to start a new run"
                            + (" or pass --overwrite to replace the outputs there" if existing else ""))
        if existing and not self.resume and not self.overwrite:
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
        """Create the folder, lock it, repair interrupted writes and check again what it holds (under the lock).

        With ``overwrite`` nothing is removed yet: :meth:`begin_epoch_write` retires the previous run's outputs
        when the new run writes its first epoch.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            self.recover()
            self._check_outputs()
        except BaseException:
            self.close()
            raise
        self._replace_pending = self.overwrite and bool(self._existing())

    def close(self) -> None:
        """Release the folder's lock."""
        self.lock.release()

    def recover(self) -> None:
        """Undo or finish what a killed run left: a half-done ``--overwrite`` (the old outputs come back unless the
        new ``last.pt`` is in place), a ``best/`` swap cut between its renames, and temporary files."""
        restore = self._restorable()
        if restore is not None:
            for name in RUN_OUTPUTS:
                remove(self.path / name)
            for item in restore.iterdir():
                os.replace(item, self.path / item.name)
        for retired in (p for p in self.path.iterdir() if _RETIRED.match(p.name)):
            remove(retired)
        for folder in (self.path, self.path / OVERLAYS):
            if not folder.is_dir() or folder.is_symlink():
                continue
            for item in folder.iterdir():
                if not is_leftover(item.name):
                    continue
                target = folder / item.name[1:].rsplit(".", 2)[0]
                if item.name.endswith(".old") and item.is_dir() and not os.path.lexists(target):
                    os.replace(item, target)  # killed between the two renames of a folder swap
                else:
                    remove(item)
        fsync_dir(self.path)

    def begin_epoch_write(self) -> None:
        """Before an epoch's outputs are written: with a pending ``--overwrite``, move the previous run's outputs
        aside (they are deleted by :meth:`end_epoch_write`, or restored by :meth:`recover` after a kill)."""
        if not self._replace_pending:
            return
        names = [name for name in RUN_OUTPUTS if os.path.lexists(self.path / name)]
        retired = self.path / f".replaced-{uuid.uuid4().hex[:8]}"
        retired.mkdir()
        for name in names:
            os.replace(self.path / name, retired / name)
        fsync_dir(self.path)
        self._retired = retired

    def end_epoch_write(self) -> None:
        """After an epoch's outputs are written: delete the previous run's, once."""
        if self._replace_pending and self._retired is not None:
            remove(self._retired)
            fsync_dir(self.path)
            self._replace_pending, self._retired = False, None

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write the last-state checkpoint atomically."""
        atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> dict[str, Any]:
        """Read the last-state checkpoint with ``weights_only=True``: tensors and plain values, never code."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
            if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
                raise TaskError(f"cannot resume from {self.checkpoint_path}: it holds Python objects besides tensors "
                                f"and plain values{_unsafe_reason(err)}, which kanzoo never unpickles, so it is not a "
                                "checkpoint of this kanzoo version; pass --overwrite to start over") from None
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise TaskError(f"cannot read checkpoint {self.checkpoint_path}: it is damaged or not a torch checkpoint "
                            f"({type(err).__name__}: {reason[:200]}); pass --overwrite to start over") from None

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
        """Build a folder next to ``name`` with ``fill`` and swap it in (:func:`kanzoo.atomic.replace_folder`),
        so ``name`` is never half written; :meth:`recover` completes a swap a kill interrupted."""
        return replace_folder(self.path / name, fill)


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
