"""Argument types of the command line: each value is checked while the arguments are parsed, before any model is
built, any data read or anything written, with the tasks' own checks (:mod:`kanzoo.tasks.checks`)."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from kanzoo.tasks import TaskError, checks

__all__ = ["Parser", "device", "fraction", "image_size", "model_arg", "model_source", "non_empty", "number",
           "positive", "repo_id", "seed", "whole"]


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``error: ...`` with where to find help, and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        option, sep, rest = message.partition(": ")
        if sep and option.startswith("argument ") and rest.startswith(option.removeprefix("argument ")):
            message = rest  # the check's own message names the option
        elif sep and option.startswith("argument "):
            message = f"{option.removeprefix('argument ')}: {rest}"
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _checked(convert: Callable[[str], Any], check: Callable[[Any], None], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects {what}, got {text!r}") from None
        try:
            check(value)
        except TaskError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value
    parse.__name__ = what
    return parse


def whole(option: str, minimum: int) -> Callable[[str], int]:
    """A whole number of at least ``minimum``."""
    return _checked(int, lambda v: checks.at_least(option, v, minimum), f"a whole number of at least {minimum}")


def number(option: str, minimum: float) -> Callable[[str], float]:
    """A finite number of at least ``minimum``."""
    return _checked(float, lambda v: checks.at_least(option, v, minimum, float), f"a number of at least {minimum}")


def positive(option: str) -> Callable[[str], float]:
    """A finite number above 0."""
    return _checked(float, lambda v: checks.positive(option, v), "a number above 0")


def fraction(option: str) -> Callable[[str], float]:
    """A number strictly between 0 and 1."""
    return _checked(float, lambda v: checks.fraction(option, v), "a fraction between 0 and 1")


def image_size(text: str) -> int:
    """``--img-size``: a whole number of pixels, at least ``checks.MIN_IMG_SIZE``."""
    return _checked(int, checks.image_size, f"a whole number of pixels (at least {checks.MIN_IMG_SIZE})")(text)


def seed(text: str) -> int:
    """``--seed``: 0 to 2**32 - 1."""
    return _checked(int, checks.seed, "a whole number from 0 to 4294967295")(text)


def non_empty(option: str) -> Callable[[str], str]:
    """A string that is not empty or blank."""
    return _checked(str, lambda v: checks.text(option, v), "a value")


def model_source(option: str = "--model") -> Callable[[str], str]:
    """A model name, ``hf-hub:org/name`` or folder: not empty, and a well-formed Hub id."""
    return _checked(str, lambda v: checks.model_source(v, option), "a model name")


def repo_id(option: str) -> Callable[[str], str]:
    """A Hub repository id ``org/name``."""
    return _checked(str, lambda v: checks.repo_id(option, v), "a Hub repository id 'org/name'")


def device(text: str) -> str:
    """``--device``: cpu, cuda, cuda:N or mps, present on this machine."""
    return _checked(str, checks.device, "a device")(text)


def model_arg(text: str) -> str:
    """``--model-arg KEY=VALUE`` (the value is read later, as a Python literal when it is one)."""
    key, sep, _ = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expects KEY=VALUE (e.g. width=0.25), got {text!r}")
    return text
