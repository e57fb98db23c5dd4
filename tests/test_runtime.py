"""kanzoo.runtime: the allocator setting, checked in child processes (it lasts for the whole process)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# page faults of the fourth 40 MB tensor made and freed in a row (above glibc's largest mmap threshold;
# the first ones may still grow the heap)
FAULTS = """
import resource, sys, torch
from kanzoo.runtime import keep_freed_memory
from kanzoo.layers import KALNConv2d, fused_kernels_enabled
if sys.argv[1] == "keep":
    assert keep_freed_memory()
if sys.argv[1] == "train":  # one training step through the fused kernels
    assert fused_kernels_enabled()
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    KALNConv2d(2, 2, 3, padding=1)(x).sum().backward()
def faults_of_a_new_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(10 * 2 ** 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for _ in range(3):
    faults_of_a_new_tensor()
print(faults_of_a_new_tensor())
"""


def _faults(mode: str, keep_env: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "KANZOO_KEEP_FREED_MEMORY"}
    env["KANZOO_FUSED_KERNELS"] = "1"
    if keep_env is not None:
        env["KANZOO_KEEP_FREED_MEMORY"] = keep_env
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.strip().splitlines()[-1])


needs_glibc = pytest.mark.skipif(not GLIBC, reason="keep_freed_memory configures glibc's malloc; "
                                                    "this is not Linux with glibc")


@pytest.fixture
def default_faults() -> int:
    """Faults of a fresh 40 MB tensor with malloc as it is (skips where there is nothing to compare)."""
    default = _faults("default")
    if default < 1000:
        pytest.skip(f"malloc here faults only {default} times on a fresh 40 MB tensor (huge pages?): "
                    "nothing to compare against")
    return default


@needs_glibc
def test_keep_freed_memory_reuses_the_pages_of_freed_tensors(default_faults):
    assert _faults("keep") * 10 < default_faults


@needs_glibc
def test_first_fused_backward_keeps_freed_memory_unless_switched_off(default_faults):
    assert _faults("train") * 10 < default_faults
    assert _faults("train", keep_env="0") * 10 > default_faults


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


def test_configure_allocator_default_switches_the_layers_off_and_names_bad_choices(monkeypatch):
    from kanzoo.runtime import ENV_VAR, configure_allocator

    monkeypatch.delenv(ENV_VAR, raising=False)  # restored afterwards
    assert configure_allocator("default") is False
    assert os.environ[ENV_VAR] == "0"
    with pytest.raises(ValueError, match=r"allocator must be one of \['keep', 'default'\], got 'jemalloc'"):
        configure_allocator("jemalloc")
