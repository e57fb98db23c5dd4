"""What ``kanify`` costs: ImageNet CNNs against their KAN conversions, ``kanzoo bench kanify``.

For each CNN it measures three variants side by side: the CNN, ``kanify`` of every convolution, and
``kanify`` of part of them (the depthwise convolutions where the network has some, else the spatial
ones, kernel > 1). Reported per variant: parameters, forward GFLOPs at batch 1 (convolutions and matrix
products, counted on the meta device; a KAN conv is one convolution over its expansion, the pointwise
expansion itself is not counted), the forward + backward time of one training step (the variants run
interleaved, A B C A B C ..., after a warm-up, and the minimum of the repeats is kept), and the step's
peak memory: how far the process' resident size rises during one forward + backward, gradients
included (Linux only: freed memory is handed back and the peak counter reset before the step).
"""

from __future__ import annotations

import argparse
import ctypes
import re
import sys
from typing import Callable, Sequence

import timm
import torch
from torch import nn

from kanzoo import runtime
from kanzoo.bench import CLOCKS, interleaved_min_times, machine_info
from kanzoo.inspect import count_gflops, count_parameters
from kanzoo.layers import BENCH_KWARGS, FAMILIES
from kanzoo.models import kanify

DEFAULT_MODELS = ("resnet50", "resnext50_32x4d", "mobilenetv3_large_100", "convnext_tiny", "efficientnet_b0")
COLUMNS = ("model", "variant", "params_m", "gflops", "step_ms", "time_x", "peak_mb", "memory_x")
HEADERS = {"model": "model", "variant": "variant", "params_m": "params (M)", "gflops": "GFLOPs",
           "step_ms": "fwd+bwd ms", "time_x": "time x CNN", "peak_mb": "step peak MB", "memory_x": "memory x CNN"}


def partial_filter(model: nn.Module) -> str:
    """``'depthwise'`` for a network with depthwise convolutions, else ``'spatial'``."""
    has_depthwise = any(isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 for m in model.modules())
    return "depthwise" if has_depthwise else "spatial"


def variants(name: str, conv: str, device: torch.device | str) -> dict[str, nn.Module]:
    """The CNN ``name`` (random weights) and its two KAN conversions, by variant name."""
    family_kwargs = BENCH_KWARGS[conv]
    built = {}
    for variant in ("cnn", "kanify all", "kanify partial"):
        torch.manual_seed(0)
        with torch.device(device):
            model = timm.create_model(name)
        if variant == "kanify all":
            kanify(model, conv, **family_kwargs)
        elif variant == "kanify partial":
            kind = partial_filter(model)
            kanify(model, conv, filter=kind, **family_kwargs)
            variant = f"kanify {kind}"
        built[variant] = model
    return built


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE).group(1)) * 1024


def peak_step_bytes(step: Callable[[], None]) -> int | None:
    """How far the resident size rises while ``step`` runs, or None where this cannot be measured (not Linux/glibc).

    Freed memory is first handed back to the system (``malloc_trim``) and the kernel's peak counter reset
    (``/proc/self/clear_refs``), so the peak belongs to this step alone.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
        with open("/proc/self/clear_refs", "w") as f:
            trim(0)
            f.write("5")
        before = _status("VmRSS")
        step()
        return _status("VmHWM") - before
    except (OSError, AttributeError):
        return None


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    params = list(model.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        model(x).sum().backward()

    return step


def bench_kanify(name: str, conv: str = "kagn", *, batch: int = 16, size: int = 224, repeats: int = 3,
                 warmup: int = 1, clock: str = "wall") -> list[dict[str, object]]:
    """One row per variant of the CNN ``name`` (see ``COLUMNS``)."""
    with torch.device("meta"):
        counted = {variant: (count_parameters(m), count_gflops(m, (3, size, size)))
                   for variant, m in variants(name, conv, "meta").items()}
    models = variants(name, conv, "cpu")
    x = torch.randn(batch, 3, size, size)
    steps = {variant: _train_step(model.train(), x) for variant, model in models.items()}
    times = interleaved_min_times(steps, repeats, warmup, torch.device("cpu"), clock)
    peaks = {variant: peak_step_bytes(step) for variant, step in steps.items()}
    rows = []
    for variant in models:
        params, flops = counted[variant]
        peak = peaks[variant]
        rows.append({
            "model": name, "variant": variant, "params_m": params / 1e6, "gflops": flops,
            "step_ms": times[variant] * 1e3, "time_x": times[variant] / times["cnn"],
            "peak_mb": None if peak is None else peak / 1e6,
            "memory_x": None if peak is None or not peaks["cnn"] else peak / peaks["cnn"],
        })
    return rows


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return str(value)


def format_table(rows: Sequence[dict[str, object]], markdown: bool = False) -> str:
    """Rows as an aligned text table or a Markdown table."""
    headers = [HEADERS[c] for c in COLUMNS]
    body = [[_cell(row[c]) for c in COLUMNS] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in [headers] + body)


def check_models(names: Sequence[str]) -> None:
    """Raise a ``ValueError`` naming any name timm does not know."""
    unknown = [name for name in names if not timm.is_model(name)]
    if unknown:
        raise ValueError(f"unknown timm model(s) {unknown}; timm.list_models('resnet*') lists names")


def add_kanify_command(commands: argparse._SubParsersAction) -> None:
    """Add the ``kanify`` sub-command (its options, and ``func=run_kanify``) to ``commands``."""
    parser = commands.add_parser("kanify", help="time and size CNNs against their kanify conversions",
                                 description=__doc__.splitlines()[0])
    add_kanify_arguments(parser)
    parser.set_defaults(func=run_kanify)


def add_kanify_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``kanify`` benchmark."""
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME",
                        help=f"timm CNNs (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--conv", default="kagn", choices=sorted(FAMILIES),
                        help="KAN family, with the layer benchmark's arguments (degree 3 or its equivalent)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--size", type=int, default=224, help="height and width (default 224)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the minimum is kept (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall (default) or cpu time")
    parser.add_argument("--allocator", choices=runtime.ALLOCATORS, default="keep",
                        help="keep: glibc's malloc keeps freed memory, as in training (default); default: leave it")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")


def run_kanify(args: argparse.Namespace) -> int:
    """Run the ``kanify`` benchmark from parsed arguments and print the table."""
    problems = [f"--{name} must be at least 1, got {value}" for name, value in
                (("batch", args.batch), ("size", args.size), ("repeats", args.repeats), ("threads", args.threads))
                if value is not None and value < 1]
    try:
        check_models(args.models)
    except ValueError as err:
        problems.append(str(err))
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    runtime.configure_allocator(args.allocator)
    print(machine_info("cpu"))
    print(f"forward+backward, batch {args.batch}, {args.size}x{args.size}, fp32, cpu; conv={args.conv} "
          f"{BENCH_KWARGS[args.conv]}; min of {args.repeats} interleaved repeats, {args.clock} clock")
    rows = []
    for name in args.models:
        rows += bench_kanify(name, args.conv, batch=args.batch, size=args.size, repeats=args.repeats,
                             clock=args.clock)
        print(f"  measured {name}", file=sys.stderr, flush=True)
    print(format_table(rows, markdown=args.markdown))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m kanzoo.bench_kanify``."""
    parser = argparse.ArgumentParser(prog="python -m kanzoo.bench_kanify", description=__doc__.splitlines()[0])
    add_kanify_arguments(parser)
    return run_kanify(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
