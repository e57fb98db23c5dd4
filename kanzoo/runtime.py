"""Process-wide settings that make CPU training of KAN convolutions faster.

A KAN layer's expansion and its gradient are tensors several times the size of the layer's input,
made and freed in every step. glibc's ``malloc`` serves blocks of that size from fresh pages (it maps
blocks above its mmap threshold on each request and gives the top of the heap back to the system
once enough of it is free), and the first write to each fresh 4 KiB page is a page fault. On virtual
machines a fault costs about a microsecond, so a 36 MB buffer costs some 10 ms before any arithmetic,
as much as the kernel that fills it. ``keep_freed_memory`` makes ``malloc`` keep freed memory for the
next request instead, at the price of a resident size that stays at its peak.

The fused CPU kernels call ``keep_freed_memory_for_training`` before their first backward pass, so
training on the CPU gets this without asking; ``KANZOO_KEEP_FREED_MEMORY=0`` in the environment
leaves ``malloc`` alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2 ** 31 - 1
ENV_VAR = "KANZOO_KEEP_FREED_MEMORY"
_training_checked = False


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` reuse freed memory instead of returning it to the system.

    Large blocks come from the heap instead of separate mappings, and the heap is not trimmed.
    Returns True where this was applied (Linux with glibc) and False elsewhere, where nothing changes.
    The setting lasts for the whole process.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))


def enabled_by_env(value: str | None) -> bool:
    """Whether an on/off environment variable's value (None: unset) leaves its feature on."""
    return (value or "1").strip().lower() not in ("0", "false", "off", "no")


def keep_freed_memory_for_training() -> None:
    """Apply ``keep_freed_memory`` once per process, unless ``KANZOO_KEEP_FREED_MEMORY`` turns it off."""
    global _training_checked
    if _training_checked:
        return
    _training_checked = True
    if enabled_by_env(os.environ.get(ENV_VAR)):
        keep_freed_memory()


ALLOCATORS = ("keep", "default")


def configure_allocator(choice: str) -> bool:
    """A program's ``--allocator`` choice: ``keep`` applies ``keep_freed_memory`` now (returns whether it
    took effect); ``default`` leaves ``malloc`` alone, also on the layers' first backward (returns False)."""
    if choice not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {list(ALLOCATORS)}, got {choice!r}")
    if choice == "keep":
        return keep_freed_memory()
    os.environ[ENV_VAR] = "0"
    return False
