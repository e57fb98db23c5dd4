"""``kanzoo bench layers``: the layer speed and memory benchmark (same as ``python -m kanzoo.bench layers``)."""

from __future__ import annotations

import argparse

from kanzoo.bench import add_layers_command


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kanzoo bench layers`` to the command line."""
    parser = subparsers.add_parser("bench", help="speed and memory benchmarks")
    add_layers_command(parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True))
