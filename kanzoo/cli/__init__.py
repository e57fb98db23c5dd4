"""The ``kanzoo`` command line: a thin front over the library; each area adds its own sub-commands.

Every failure is one line on stderr, ``error: ...``, naming the problem and the fix: exit code 2 for bad input
(arguments, files, data, names, configs), 1 for a failure while running (network, disk, a diverging run).
``KANZOO_TRACEBACK=1`` shows the traceback of an unexpected error instead.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from kanzoo.hub import HubError
from kanzoo.hub.errors import RUNTIME_ERRORS
from kanzoo.tasks import TaskError

from . import bench, hub, inspection, models, tasks
from .arguments import Parser

_COMMAND_MODULES = (models, hub, tasks, inspection, bench)


def build_parser() -> Parser:
    """The parser with every sub-command."""
    parser = Parser(prog="kanzoo", description="Kolmogorov-Arnold convolutional networks: "
                    "models, pretrained weights, fine-tuning and export.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMAND_MODULES:
        module.add_commands(commands)
    return parser


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def report(err: Exception) -> int:
    """Print ``err`` as one ``error:`` line; returns the exit code (2: bad input, 1: a failure while running)."""
    if isinstance(err, TaskError):
        code = err.exit_code
    elif isinstance(err, HubError):
        code = 1 if isinstance(err, RUNTIME_ERRORS) else 2
    else:
        code = 1
    message = _first_line(err)
    if isinstance(err, OSError) and err.strerror:
        message = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    elif not isinstance(err, (TaskError, HubError)):
        message = f"{type(err).__name__}: {message} (an unexpected failure; KANZOO_TRACEBACK=1 shows where)"
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kanzoo`` command; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a bad argument (already reported in one line)
        return done.code if isinstance(done.code, int) else 2 if done.code else 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the command line reports every failure in one line
        if os.environ.get("KANZOO_TRACEBACK", "").strip() not in ("", "0"):
            raise
        return report(err)
