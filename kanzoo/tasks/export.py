"""Export to ONNX, TorchScript or a torch.export ExportedProgram, verified by running the exported file.

At inference (no gradients needed) every KAN layer runs its plain ops (basis expansion, then one
convolution) instead of its memory-saving autograd Function, so exporters trace standard operators.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.data import resolve_data_config
from torch import nn

from . import checks
from .errors import TaskError
from .modeling import create_task_model, is_segmentation
from .runs import atomic_write
from .segmentation import input_size

FORMATS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}


@dataclass
class ExportReport:
    """Where the export went and how closely the exported model reproduced PyTorch's output."""

    path: Path
    format: str
    input_shape: tuple[int, ...]
    max_abs_diff: float


def example_input(model: nn.Module, img_size: int | None = None, batch_size: int = 2) -> torch.Tensor:
    """A random input of the model's preprocessing size (or ``img_size``)."""
    channels, height, width = resolve_data_config(model=model)["input_size"]
    if is_segmentation(model):
        height, width = input_size(model, img_size)
    elif img_size is not None:
        height = width = img_size
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, channels, height, width, generator=generator)


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _write(model: nn.Module, x: torch.Tensor, fmt: str, tmp: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    if fmt == "torchscript":
        traced = torch.jit.trace(model, (x,), check_trace=False)
        torch.jit.save(traced, str(tmp))
    elif fmt == "exported-program":
        program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(tmp))
    else:
        torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["output"],
                          dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False)


def _run(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    if fmt == "onnx":
        return _run_onnx(path, x)
    if fmt == "torchscript":
        return torch.jit.load(str(path))(x)
    return torch.export.load(str(path)).module()(x)


def export_model(model: str | nn.Module, out: str | Path, *, format: str = "onnx", img_size: int | None = None,
                 atol: float = 1e-4, rtol: float = 1e-4) -> ExportReport:
    """Export ``model`` (name, ``hf-hub:`` id, hub-ready folder or module) to ``out`` and verify it.

    The exported file is written to a private temporary folder, loaded back and run on a fresh input with a
    different batch size than the one traced (ONNX through onnxruntime); when its output differs from
    PyTorch's by more than ``atol + rtol * max|output|`` nothing is written and a :class:`TaskError` is raised.
    """
    if format not in FORMATS:
        raise TaskError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    checks.image_size(img_size)
    checks.text("--out", str(out))
    out = Path(out)
    if out.is_dir():
        raise TaskError(f"--out {out} is a folder; give a file name such as {out / ('model' + SUFFIXES[format])}")
    if format == "exported-program" and out.suffix != ".pt2":
        raise TaskError(f"an ExportedProgram file must end in .pt2 (torch.export.load requires it); use "
                        f"{out.with_suffix('.pt2')}")
    if not out.parent.is_dir():
        raise TaskError(f"the folder {out.parent} for --out does not exist; create it first")
    net = model if isinstance(model, nn.Module) else create_task_model(model)
    net = net.eval().cpu().requires_grad_(False)
    traced_input = example_input(net, img_size, batch_size=2)
    check_input = torch.randn(3, *traced_input.shape[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(check_input)
    report = ExportReport(out, format, tuple(traced_input.shape[1:]), float("nan"))

    def write_and_check(tmp: Path) -> None:
        with torch.no_grad():
            _write(net, traced_input, format, tmp)
            got = _run(tmp, format, check_input)
        if got.shape != expected.shape:
            raise TaskError(f"the exported {format} model returned shape {tuple(got.shape)} instead of "
                            f"{tuple(expected.shape)}; nothing was written")
        report.max_abs_diff = float((got.float() - expected.float()).abs().max())
        limit = atol + rtol * float(expected.abs().max())
        if not report.max_abs_diff <= limit:
            raise TaskError(f"the exported {format} model differs from PyTorch by {report.max_abs_diff:.3g} "
                            f"(allowed {limit:.3g}); nothing was written")

    # torch.export.load and torch.jit.load unpickle: they only read back the file just written, in a folder that
    # only this user can enter, which is then copied into place atomically
    with tempfile.TemporaryDirectory(prefix="kanzoo-export-") as private:
        staged = Path(private) / f"model{SUFFIXES[format]}"
        write_and_check(staged)
        atomic_write(out, lambda tmp: shutil.copyfile(staged, tmp))
    return report
