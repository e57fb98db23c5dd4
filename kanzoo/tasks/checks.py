"""Checks of the tasks' arguments, run before anything is read, built or written; each failure is a
:class:`TaskError` naming the option, the value and what fits. The command line runs the same checks while it
parses its arguments (``kanzoo.cli.arguments``)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from .errors import TaskError

MIN_IMG_SIZE = 8
MAX_SEED = 2 ** 32 - 1
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def _number(option: str, value: Any, kind: type) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise TaskError(f"{option} must be {'a number' if kind is float else 'a whole number'}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise TaskError(f"{option} must be a finite number, got {value}")


def at_least(option: str, value: Any, minimum: int, kind: type = int) -> None:
    """``value`` is a number of ``kind`` (int or float) and at least ``minimum``."""
    _number(option, value, kind)
    if value < minimum:
        raise TaskError(f"{option} must be at least {minimum}, got {value}")


def positive(option: str, value: Any) -> None:
    """``value`` is a finite number above 0."""
    _number(option, value, float)
    if not value > 0:
        raise TaskError(f"{option} must be above 0, got {value}")


def fraction(option: str, value: Any) -> None:
    """``value`` is a number strictly between 0 and 1."""
    _number(option, value, float)
    if not 0.0 < value < 1.0:
        raise TaskError(f"{option} must be a fraction between 0 and 1 (e.g. 0.2), got {value}")


def image_size(value: Any) -> None:
    """``--img-size``: None (the model's) or a whole number of pixels, at least :data:`MIN_IMG_SIZE`."""
    if value is not None:
        at_least("--img-size", value, MIN_IMG_SIZE)


def seed(value: Any) -> None:
    """``--seed``: what Python, NumPy and torch all take (0 to 2**32 - 1)."""
    at_least("--seed", value, 0)
    if value > MAX_SEED:
        raise TaskError(f"--seed must be at most {MAX_SEED}, got {value}")


def text(option: str, value: Any) -> None:
    """``value`` is a string that is not empty or blank."""
    if not isinstance(value, str) or not value.strip():
        raise TaskError(f"{option} must not be empty")


def repo_id(option: str, value: str) -> None:
    """``value`` is a Hugging Face model repository id, ``'org/name'``."""
    if not _REPO_ID.match(value) or ".." in value:
        raise TaskError(f"{option} must be a Hub repository id 'org/name' (letters, digits, '-', '_', '.'), got "
                        f"{value!r}")


def model_source(value: Any, option: str = "--model") -> None:
    """A model name's form: not empty, and an ``hf-hub:`` id that is a repository id (``org/name[@revision]``)."""
    text(option, value)
    if value.lower().startswith(("hf-hub:", "hf_hub:")):
        repo_id(option, value.partition(":")[2].partition("@")[0])


def device(value: Any) -> None:
    """``--device``: None (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, present on this machine."""
    if value is None:
        return
    text("--device", value)
    try:
        target = torch.device(value)
    except (RuntimeError, ValueError):
        raise TaskError(f"--device {value!r} is not a device; use cpu, cuda or cuda:N") from None
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise TaskError(f"--device {value}: no CUDA GPU is available on this machine; use --device cpu")
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise TaskError(f"--device {value}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif target.type == "mps":
        if not torch.backends.mps.is_available():
            raise TaskError(f"--device {value}: no Apple GPU (MPS) is available on this machine; use --device cpu")
    elif target.type != "cpu":
        raise TaskError(f"--device {value}: kanzoo runs on cpu, cuda or mps")


def output_folder(option: str, value: Any) -> Path:
    """A folder to write into: not empty, and not an existing file."""
    text(option, str(value) if isinstance(value, Path) else value)
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise TaskError(f"{option} {path} is a file; pass a folder")
    return path
