"""The ``kanzoo`` command line: a thin front over the library; each area adds its own sub-commands."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import bench, hub, inspection, models, tasks

_COMMAND_MODULES = (models, hub, tasks, inspection, bench)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="kanzoo", description="Kolmogorov-Arnold convolutional networks: "
                                     "models, pretrained weights, fine-tuning and export.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMAND_MODULES:
        module.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kanzoo`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
