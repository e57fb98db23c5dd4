"""``kanzoo bench``: the layer benchmark (``python -m kanzoo.bench layers``) and the kanify benchmark
(``python -m kanzoo.bench_kanify``)."""

from __future__ import annotations

import argparse

from kanzoo.bench import add_layers_command
from kanzoo.bench_kanify import add_kanify_command


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kanzoo bench layers`` and ``kanzoo bench kanify`` to the command line."""
    parser = subparsers.add_parser("bench", help="speed and memory benchmarks")
    benchmarks = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    add_layers_command(benchmarks)
    add_kanify_command(benchmarks)
