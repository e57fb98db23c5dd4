"""The one error type the tasks raise for bad input: the message names the problem and the fix."""

from __future__ import annotations


class TaskError(ValueError):
    """Bad input to a task (data, model name, output folder); the command line prints it and exits with 2."""
