"""``kanzoo list``: every registry entry with its parameter count and GFLOPs at its default input size."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
from timm.models import get_arch_name
from torch.utils.flop_counter import FlopCounterMode

from kanzoo.models import create_model, list_models


@dataclass
class ModelStats:
    """Size of one architecture at its default configuration."""

    name: str
    params: int
    gflops: float
    input_size: tuple[int, ...]
    tags: list[str]


def model_stats(name: str) -> ModelStats:
    """Parameters and forward GFLOPs of ``name`` at its cfg's input size, computed on the meta device.

    Nothing is allocated: the model and input live on ``device='meta'`` and torch's ``FlopCounterMode``
    counts the convolutions and matrix products (2 FLOPs per multiply-add). A KAN conv is one
    convolution over its expanded channels, so its count is exact; the pointwise basis expansions and
    norms are not counted.
    """
    with torch.device("meta"):
        model = create_model(name)
    model.eval()
    input_size = tuple(model.pretrained_cfg["input_size"])
    x = torch.empty(1, *input_size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    params = sum(p.numel() for p in model.parameters())
    return ModelStats(name, params, counter.get_total_flops() / 1e9, input_size, _tags(name))


def _tags(name: str) -> list[str]:
    return [tagged.partition(".")[2] for tagged in list_models(name, pretrained=True) if get_arch_name(tagged) == name]


def format_table(rows: list[ModelStats], markdown: bool = False, show_tags: bool = False) -> str:
    """The stats as an aligned text table, or as a Markdown table."""
    header = ["model", "params (M)", "GFLOPs", "input size"] + (["pretrained tags"] if show_tags else [])
    body = [[r.name, f"{r.params / 1e6:.2f}", f"{r.gflops:.2f}", "x".join(map(str, r.input_size[1:]))]
            + ([", ".join(r.tags)] if show_tags else []) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * 3 + ["---"] * show_tags) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i in (0, 4) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header] + body]
    return "\n".join(line.rstrip() for line in lines)


def _list(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if args.pretrained:
        with_weights = {get_arch_name(name) for name in list_models(args.pattern, pretrained=True)}
        names = [name for name in names if name in with_weights]
    if not names:
        what = "pretrained entries" if args.pretrained else "entries"
        print(f"error: no kanzoo {what} match {args.pattern or '*'!r}; `kanzoo list` shows every entry",
              file=sys.stderr)
        return 1
    print(format_table([model_stats(name) for name in names], markdown=args.markdown, show_tags=args.pretrained))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kanzoo list`` to the command line."""
    parser = subparsers.add_parser("list", help="list the model zoo with parameter counts and GFLOPs",
                                   description="Print every kanzoo registry entry with its parameter count and "
                                   "forward GFLOPs at its default input size (counted on the meta device).")
    parser.add_argument("pattern", nargs="?", default=None, help="wildcard filter, e.g. 'reskanet*'")
    parser.add_argument("--pretrained", action="store_true", help="only entries with pretrained weights, with tags")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.set_defaults(func=_list)
