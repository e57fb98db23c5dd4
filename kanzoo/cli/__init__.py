"""The ``kanzoo`` command line: a thin front over the library; each area adds its own sub-commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

_COMMAND_MODULES = ("kanzoo.cli.models", "kanzoo.cli.hub", "kanzoo.cli.tasks", "kanzoo.cli.bench")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every sub-command that is installed."""
    parser = argparse.ArgumentParser(prog="kanzoo", description="Kolmogorov-Arnold convolutional networks: "
                                     "models, pretrained weights, fine-tuning and export.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
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
