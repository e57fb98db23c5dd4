"""Atomic, durable writes: a temporary file (or folder) next to the target, fsynced, then renamed into place.

A reader sees the old file or the new one, never a half-written one, and after a crash the rename is on
disk only with the new content (the file and its folder are fsynced around it). A kill during a write
leaves a temporary name that :func:`is_leftover` recognises, so the next writer can remove it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "exchange", "fsync_dir", "fsync_tree", "is_leftover", "remove", "replace_folder",
           "temporary_name"]

_LEFTOVER = re.compile(r"^\..+\.[0-9a-f]{8}\.(tmp|old)(\.[^.]*)?$")


def temporary_name(path: Path, kind: str = "tmp") -> Path:
    """A hidden sibling of ``path`` (``.name.<8 hex>.tmp<suffix>``) that :func:`is_leftover` recognises."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.{kind}{path.suffix}")


def is_leftover(name: str) -> bool:
    """Whether ``name`` is the temporary or retired name of an interrupted atomic write."""
    return bool(_LEFTOVER.match(name))


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file and folder under ``path``."""
    if path.is_symlink() or not path.is_dir():
        _fsync_file(path)
        return
    for root, _, files in os.walk(path):
        for name in files:
            _fsync_file(Path(root) / name)
        fsync_dir(Path(root))


def remove(path: Path) -> None:
    """Delete a file, a symlink (not what it points to) or a folder tree; nothing if it does not exist."""
    if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(temporary path)`` in the same folder (same suffix), fsync it, rename it into
    place and fsync the folder. On failure the temporary file is removed and ``path`` is unchanged."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@functools.lru_cache(maxsize=1)
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except OSError:
        return None
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system or
    the file system cannot, and nothing changed."""
    function = _renameat2()
    if function is None:
        return False
    result = function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def replace_folder(target: Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder next to ``target`` with ``fill`` and swap it in, so ``target`` is never half written: in one
    atomic exchange where the system has one, else by two renames (a kill between them leaves ``target`` missing
    and the new folder under a temporary name, which ``RunFolder.recover`` completes for run folders)."""
    target = Path(target)
    tmp = temporary_name(target)
    try:
        fill(tmp)
        fsync_tree(tmp)
        if os.path.lexists(target) and exchange(tmp, target):
            remove(tmp)
        else:
            old = temporary_name(target, "old")
            if os.path.lexists(target):
                os.replace(target, old)
            os.replace(tmp, target)
            remove(old)
        fsync_dir(target.parent)
    finally:
        remove(tmp)
    return target
