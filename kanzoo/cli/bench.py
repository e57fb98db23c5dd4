"""``kanzoo bench layers``: the layer speed and memory benchmark (same as ``python -m kanzoo.bench layers``)."""

from __future__ import annotations

import argparse

from kanzoo.bench import add_layers_arguments, run_layers


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kanzoo bench layers`` to the command line."""
    parser = subparsers.add_parser("bench", help="speed and memory benchmarks")
    commands = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    layers = commands.add_parser("layers", help="time the KAN convolution layers against nn.Conv2d and their limit",
                                 description="Forward+backward time of every KAN convolution family against "
                                 "nn.Conv2d and the expand+conv limit, and the memory each keeps for backward.")
    add_layers_arguments(layers)
    layers.set_defaults(func=run_layers)
