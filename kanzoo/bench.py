"""Speed and memory benchmark of the KAN convolution layers: ``python -m kanzoo.bench layers``.

For each family and grouping it times forward + backward of the kanzoo layer, of ``nn.Conv2d`` with
the same shapes, and of the *limit*: the expansion's forward alone plus the fastest plain-PyTorch
convolution forward + backward over the already-expanded input (one grouped ``F.conv2d``, or a
depthwise conv over the expanded channels followed by a sum over bases; both memory formats). All
candidates run interleaved in one loop (A B C A B C ...) after a warm-up and the minimum of the
repeats is kept, so ratios measured on a noisy, shared machine stay meaningful. It also reports the
activation memory each layer keeps for backward, in units of the input's size.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import sys
import time
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kanzoo import runtime
from kanzoo.layers import BENCH_KWARGS, FAMILIES, KANConvBase, fused_kernels_enabled, set_fused_kernels

BASE_ACTIVATIONS = ("silu", "identity")
DEFAULT_FAMILIES = (*FAMILIES, "kagn:identity")
"""Every family with its default SiLU base branch, and Gram with the identity base branch that ``kanify`` uses."""
DEFAULT_GROUPS = ("1", "8", "dw")
QUICK_FAMILIES = ("kagn", "kan")
QUICK_GROUPS = ("8", "dw")
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
COLUMNS = ("family", "groups", "bases", "kanzoo_ms", "conv_ms", "limit_ms", "limit_kind", "vs_limit", "vs_conv",
           "saved_x", "conv_saved_x")

@dataclasses.dataclass(frozen=True)
class LayerShape:
    """The benchmarked convolution: ``batch x in_channels x size x size`` -> ``out_channels``."""

    batch: int = 16
    in_channels: int = 64
    out_channels: int = 64
    size: int = 32
    kernel_size: int = 3

    def groups_of(self, name: str) -> int:
        """Number of groups for a grouping name: an integer, or 'dw' for depthwise (groups = in_channels)."""
        if name in ("dw", "depthwise"):
            return self.in_channels
        try:
            groups = int(name)
        except ValueError:
            raise ValueError(f"groups must be an integer or 'dw' (depthwise), got {name!r}") from None
        if groups < 1 or self.in_channels % groups or self.out_channels % groups:
            raise ValueError(f"groups={groups} must be positive and divide in_channels={self.in_channels} "
                             f"and out_channels={self.out_channels}")
        return groups


def saved_activation_bytes(fn: Callable[[], torch.Tensor], parameters: Sequence[torch.Tensor] = ()) -> int:
    """Bytes of the tensors that autograd keeps for backward while running ``fn`` (parameters excluded).

    Every tensor saved for backward passes through ``saved_tensors_hooks``; storages are counted once
    (by data pointer), and tensors that are ``nn.Parameter`` or share a parameter's storage are skipped.
    """
    skip = {p.untyped_storage().data_ptr() for p in parameters}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if not isinstance(t, nn.Parameter) and ptr not in skip:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def _grads(out: torch.Tensor, inputs: Sequence[torch.Tensor], grad_out: torch.Tensor) -> None:
    torch.autograd.grad(out, inputs, grad_out)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved_min_times(cases: dict[str, Callable[[], None]], repeats: int, warmup: int,
                          device: torch.device, clock: str = "wall") -> dict[str, float]:
    """Minimum time in seconds of each case, run interleaved (A B C A B C ...) after a warm-up.

    ``clock='wall'`` measures elapsed time; ``clock='cpu'`` the process's CPU time, which time
    slices lost to other processes on a busy machine do not inflate (CPU device, best with one thread).
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {list(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    best = {name: float("inf") for name in cases}
    for round_index in range(warmup + repeats):
        for name, case in cases.items():
            _synchronize(device)
            start = now()
            case()
            _synchronize(device)
            elapsed = now() - start
            if round_index >= warmup:
                best[name] = min(best[name], elapsed)
    return best


def parse_family(spec: str) -> tuple[str, str]:
    """``'kagn'`` or ``'kagn:identity'`` -> ``(family, base activation)``; a ``ValueError`` names a bad one."""
    family, _, base = spec.partition(":")
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {sorted(FAMILIES)}")
    base = base or BASE_ACTIVATIONS[0]
    if base not in BASE_ACTIVATIONS:
        raise ValueError(f"unknown base activation {base!r} in {spec!r}; choose from {list(BASE_ACTIVATIONS)}")
    return family, base


def make_layer(family: str, shape: LayerShape, groups: int, device: torch.device) -> KANConvBase:
    """The benchmarked kanzoo layer of a family (2d, 'same' padding, bias); ``'kagn:identity'`` picks the
    identity base branch."""
    name, base = parse_family(family)
    cls = FAMILIES[name][1]
    return cls(shape.in_channels, shape.out_channels, shape.kernel_size, padding=shape.kernel_size // 2,
               groups=groups, base_activation=base, device=device, **BENCH_KWARGS[name])


LimitForward = Callable[[], tuple[torch.Tensor, tuple[torch.Tensor, ...]]]


def limit_forwards(layer: KANConvBase, expanded: torch.Tensor) -> dict[str, LimitForward]:
    """Plain-PyTorch convolutions over the already-expanded input, by name.

    Each returns its output and the tensors to differentiate (expanded input, weight, bias): one
    grouped ``F.conv2d`` in either memory format, and for depthwise layers also a depthwise conv
    over the expanded channels followed by a sum over each channel's bases.
    """
    pad = layer.kernel_size[0] // 2
    groups = layer.groups
    forwards: dict[str, LimitForward] = {}
    bias = layer.bias.detach().clone().requires_grad_(True)
    for fmt_name, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
        e = expanded.detach().contiguous(memory_format=fmt).requires_grad_(True)
        w = layer.weight.detach().contiguous(memory_format=fmt).requires_grad_(True)

        def grouped(e=e, w=w):
            return F.conv2d(e, w, bias, 1, pad, 1, groups), (e, w, bias)

        forwards[f"grouped/{fmt_name}"] = grouped
        if groups == layer.in_channels == layer.out_channels:
            wd = layer.weight.detach().reshape(-1, 1, *layer.kernel_size).contiguous(memory_format=fmt)
            wd.requires_grad_(True)

            def depthwise_sum(e=e, wd=wd):
                y = F.conv2d(e, wd, None, 1, pad, 1, e.shape[1])
                y = y.unflatten(1, (layer.in_channels, layer.num_responses)).sum(2) + bias.view(1, -1, 1, 1)
                return y, (e, wd, bias)

            forwards[f"dw+sum/{fmt_name}"] = depthwise_sum
    return forwards


def bench_case(family: str, groups_name: str, shape: LayerShape, *, repeats: int, warmup: int,
               device: torch.device, dtype: torch.dtype | None, clock: str = "wall") -> dict[str, object]:
    """One table row: times (ms), ratios and saved-for-backward memory of one family and grouping."""
    groups = shape.groups_of(groups_name)
    torch.manual_seed(0)
    layer = make_layer(family, shape, groups, device)
    conv = nn.Conv2d(shape.in_channels, shape.out_channels, shape.kernel_size, padding=shape.kernel_size // 2,
                     groups=groups, device=device)
    x = torch.randn(shape.batch, shape.in_channels, shape.size, shape.size, device=device, requires_grad=True)
    layer_params = [p for p in layer.parameters() if p.requires_grad]
    conv_params = list(conv.parameters())
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext())
    with autocast:
        with torch.no_grad():
            grad_out = torch.ones_like(conv(x))
            expanded = layer.expand(x.detach(), *layer.basis_parameters())
        cases: dict[str, Callable[[], None]] = {
            "kanzoo": lambda: _grads(layer(x), (x, *layer_params), grad_out),
            "conv": lambda: _grads(conv(x), (x, *conv_params), grad_out),
            "expand": lambda: _no_grad_expand(layer, x),
        }
        limits = limit_forwards(layer, expanded)
        for name, forward in limits.items():
            grad = grad_out.contiguous(memory_format=torch.channels_last if "nhwc" in name else torch.contiguous_format)
            cases[f"limit:{name}"] = lambda forward=forward, grad=grad: _grads(*forward(), grad)
        times = interleaved_min_times(cases, repeats, warmup, device, clock)
        input_bytes = x.numel() * x.element_size()
        saved = saved_activation_bytes(lambda: layer(x), layer_params) / input_bytes
        conv_saved = saved_activation_bytes(lambda: conv(x), conv_params) / input_bytes
    limit_kind = min(limits, key=lambda name: times[f"limit:{name}"])
    limit = times["expand"] + times[f"limit:{limit_kind}"]
    return {
        "family": family, "groups": "dw" if groups == shape.in_channels else str(groups),
        "bases": layer.num_bases, "kanzoo_ms": times["kanzoo"] * 1e3, "conv_ms": times["conv"] * 1e3,
        "limit_ms": limit * 1e3, "limit_kind": limit_kind, "vs_limit": times["kanzoo"] / limit,
        "vs_conv": times["kanzoo"] / times["conv"], "saved_x": saved, "conv_saved_x": conv_saved,
    }


def _no_grad_expand(layer: KANConvBase, x: torch.Tensor) -> None:
    with torch.no_grad():
        layer.expand(x, *layer.basis_parameters())


def check_selection(families: Sequence[str], groups: Sequence[str], shape: LayerShape) -> None:
    """Raise a ``ValueError`` naming any unknown family or invalid grouping, before anything is measured."""
    unknown = [f for f in families if f.partition(":")[0] not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; choose from {sorted(FAMILIES)}")
    for family in families:
        parse_family(family)
    for name in groups:
        shape.groups_of(name)


def bench_layers(families: Sequence[str] = DEFAULT_FAMILIES, groups: Sequence[str] = DEFAULT_GROUPS,
                 shape: LayerShape = LayerShape(), *, repeats: int = 5, warmup: int = 1,
                 device: str | torch.device = "cpu", dtype: str = "fp32", clock: str = "wall"
                 ) -> Iterator[dict[str, object]]:
    """Yield one row (see ``COLUMNS``) per family and grouping, measured as they come."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = torch.device(device)
    check_selection(families, groups, shape)
    for family in families:
        for name in groups:
            yield bench_case(family, name, shape, repeats=repeats, warmup=warmup, device=device,
                             dtype=DTYPES[dtype], clock=clock)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return str(value)


HEADERS = {
    "family": "family", "groups": "groups", "bases": "K", "kanzoo_ms": "kanzoo ms", "conv_ms": "Conv2d ms",
    "limit_ms": "limit ms", "limit_kind": "limit conv", "vs_limit": "kanzoo/limit", "vs_conv": "kanzoo/conv",
    "saved_x": "saved (x input)", "conv_saved_x": "Conv2d saved",
}


def format_table(rows: Sequence[dict[str, object]], markdown: bool = False) -> str:
    """Render rows as an aligned text table or a markdown table."""
    headers = [HEADERS[c] for c in COLUMNS]
    body = [[_cell(row[c]) for c in COLUMNS] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return "\n".join(lines)


def machine_info(device: torch.device | str = "cpu") -> str:
    """One line naming the machine: CPU model, cores, torch version, threads (and GPU when used)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    text = (f"CPU: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
    if torch.device(device).type == "cuda":
        text += f"; GPU: {torch.cuda.get_device_name(device)}"
    return text


def add_layers_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``layers`` benchmark."""
    parser.add_argument("--quick", action="store_true",
                        help=f"a small subset ({', '.join(QUICK_FAMILIES)} at groups {', '.join(QUICK_GROUPS)}, "
                             "3 repeats) that finishes in well under a minute")
    parser.add_argument("--families", nargs="+", default=None, metavar="FAMILY",
                        help="families to measure, FAMILY or FAMILY:BASE with BASE one of "
                             f"{', '.join(BASE_ACTIVATIONS)} (default: {' '.join(DEFAULT_FAMILIES)})")
    parser.add_argument("--groups", nargs="+", default=None, metavar="G",
                        help=f"groupings: integers, or 'dw' for depthwise (default: {' '.join(DEFAULT_GROUPS)})")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds; the minimum is kept (default 5)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="fp32, or bf16 under torch.autocast")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: process CPU time, robust on a busy shared "
                             "machine (CPU only, use with --threads 1)")
    parser.add_argument("--kernels", choices=("fused", "eager"), default=None,
                        help="fused: the fused CPU kernels; eager: the eager expansion (default: the library's "
                             "setting, fused unless KANZOO_FUSED_KERNELS=0)")
    parser.add_argument("--allocator", choices=runtime.ALLOCATORS, default="keep",
                        help="keep: make glibc's malloc keep freed memory, so that large tensors do not pay a "
                             "page fault per page in every repeat (default); default: leave malloc as it is")
    parser.add_argument("--batch", type=int, default=LayerShape.batch, help="batch size (default 16)")
    parser.add_argument("--size", type=int, default=LayerShape.size, help="height and width (default 32)")


def run_layers(args: argparse.Namespace) -> int:
    """Run the ``layers`` benchmark from parsed arguments and print the table."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        print(f"error: --device {device!r} is not a device; use cpu or cuda", file=sys.stderr)
        return 2
    for option, value in (("--repeats", args.repeats), ("--batch", args.batch), ("--size", args.size)):
        if value is not None and value < 1:
            print(f"error: {option} must be at least 1, got {value}", file=sys.stderr)
            return 2
    if args.clock == "cpu" and torch.device(device).type != "cpu":
        print("error: --clock cpu measures CPU time and cannot time a GPU; use --clock wall", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was asked for but no CUDA device is available; use --device cpu",
              file=sys.stderr)
        return 2
    families = args.families or (QUICK_FAMILIES if args.quick else DEFAULT_FAMILIES)
    groups = args.groups or (QUICK_GROUPS if args.quick else DEFAULT_GROUPS)
    repeats = args.repeats or (3 if args.quick else 5)
    shape = LayerShape(batch=args.batch, size=args.size)
    try:
        check_selection(families, groups, shape)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if runtime.configure_allocator(args.allocator):
        allocator = "malloc keeps freed memory"
    else:
        allocator = "malloc as configured" + (" (not glibc)" if args.allocator == "keep" else "")
    previous = fused_kernels_enabled()
    if args.kernels is not None:
        set_fused_kernels(args.kernels == "fused")
    try:
        fused = fused_kernels_enabled() and torch.device(device).type == "cpu"
        print(machine_info(device))
        print(f"forward+backward, batch {shape.batch}, {shape.in_channels}->{shape.out_channels} channels, "
              f"{shape.size}x{shape.size}, {shape.kernel_size}x{shape.kernel_size}, {args.dtype}, {device}; "
              f"min of {repeats} interleaved repeats, {args.clock} clock; "
              f"expansion: {'fused CPU kernels' if fused else 'eager'}; {allocator}")
        rows = []
        for row in bench_layers(families, groups, shape, repeats=repeats, device=device, dtype=args.dtype,
                                clock=args.clock):
            rows.append(row)
            if not args.markdown:
                print(f"  measured {row['family']} groups={row['groups']}", file=sys.stderr, flush=True)
        print(format_table(rows, markdown=args.markdown))
    finally:
        set_fused_kernels(previous)
    return 0


def add_layers_command(commands: argparse._SubParsersAction) -> None:
    """Add the ``layers`` sub-command (its options, and ``func=run_layers``) to ``commands``."""
    layers = commands.add_parser("layers", help="time the KAN convolution layers against nn.Conv2d and their limit",
                                 description="Forward+backward time of every KAN convolution family against "
                                 "nn.Conv2d and the expand+conv limit, and the memory each keeps for backward.")
    add_layers_arguments(layers)
    layers.set_defaults(func=run_layers)


def build_parser() -> argparse.ArgumentParser:
    """``python -m kanzoo.bench`` parser with its ``layers`` sub-command."""
    parser = argparse.ArgumentParser(prog="python -m kanzoo.bench", description=__doc__.splitlines()[0])
    add_layers_command(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m kanzoo.bench``."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
