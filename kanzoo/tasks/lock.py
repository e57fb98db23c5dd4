"""One training run per output folder: a lock file that records its owner (pid, host, start time, command).

On POSIX systems the file is held with ``flock``, which the kernel releases when the owner exits, however
it exits: a lock left by a killed run is stale and the next run takes it over. Where ``flock`` does not
exist (Windows) the file is created exclusively and a second run is refused until it is deleted.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from .errors import TaskError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".kanzoo-run.lock"


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"}


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        owner = json.loads(data.decode("utf-8"))
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def describe(owner: dict[str, Any] | None) -> str:
    """The owner of a lock in words."""
    if not owner:
        return "a run whose lock file cannot be read"
    return (f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('started')}: "
            f"{owner.get('command')}")


class RunLock:
    """The lock of one run folder; :meth:`acquire` refuses with a :class:`TaskError` naming the run that holds it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (the folder must exist)."""
        if self._fd is not None:
            return
        if fcntl is None:
            self._acquire_exclusive()
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _parse(os.pread(fd, 1 << 16, 0))
                os.close(fd)
                raise self._busy(owner) from None
            except OSError as err:  # a file system without locks (some network mounts)
                os.close(fd)
                warnings.warn(f"cannot lock {self.path} ({err}); a second run on {self.folder} would not be "
                              "detected", RuntimeWarning, stacklevel=3)
                return
            if self._same_file(fd):
                break
            os.close(fd)  # the owner removed the file between our open and flock: lock the new one
        record = json.dumps(_owner()).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        os.fsync(fd)
        self._fd = fd

    def _acquire_exclusive(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise self._busy(_parse(self.path.read_bytes()), stale_hint=True) from None
        os.write(fd, json.dumps(_owner()).encode("utf-8"))
        os.fsync(fd)
        self._fd = fd

    def _same_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def _busy(self, owner: dict[str, Any] | None, stale_hint: bool = False) -> TaskError:
        hint = f"; if that run is gone, delete {self.path}" if stale_hint else ""
        return TaskError(f"{self.folder} is in use by another kanzoo run ({describe(owner)}); wait for it to finish "
                         f"or choose another --out{hint}")

    def release(self) -> None:
        """Give the lock up and remove the lock file."""
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
