"""kanzoo.runtime: the allocator setting, checked in child processes (it lasts for the whole process)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# page faults of the second 40 MB tensor made and freed in a row (above glibc's largest mmap threshold)
FAULTS = """
import resource, sys, torch
from kanzoo.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults_of_a_new_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(10 * 2 ** 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_new_tensor()
print(faults_of_a_new_tensor())
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="keep_freed_memory configures glibc's malloc; this is not Linux with glibc")
def test_keep_freed_memory_reuses_the_pages_of_freed_tensors():
    default = _faults("default")
    if default < 1000:
        pytest.skip(f"malloc here faults only {default} times on a fresh 40 MB tensor (huge pages?): "
                    "nothing to compare against")
    assert _faults("keep") * 10 < default


@pytest.mark.skipif(GLIBC, reason="checks the behaviour without glibc; this machine has glibc")
def test_keep_freed_memory_is_a_no_op_without_glibc():
    from kanzoo.runtime import keep_freed_memory

    assert keep_freed_memory() is False


def test_benchmark_header_names_the_allocator_setting():
    code = [sys.executable, "-m", "kanzoo.bench", "layers", "--families", "kacn", "--groups", "1", "--repeats", "1",
            "--batch", "1", "--size", "4", "--device", "cpu", "--kernels", "eager"]
    out = subprocess.run(code, capture_output=True, text=True, check=True).stdout
    expected = "malloc keeps freed memory" if GLIBC else "malloc as configured (not glibc)"
    assert expected in out.splitlines()[1]
