"""The errors the tasks raise: each message names the problem and the fix."""

from __future__ import annotations


class TaskError(ValueError):
    """Bad input to a task (data, model name, output folder, option); the command line prints it and exits with 2."""

    exit_code = 2


class TaskRuntimeError(TaskError):
    """A task with good input that failed while it ran (network, weights cache, diverging loss); exit code 1."""

    exit_code = 1
