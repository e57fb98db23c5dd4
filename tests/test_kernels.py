"""The fused CPU kernels (TorchInductor) against the eager expansion, which the reference tests cover.

Every family is compiled once here, at one shape, for an NCHW input; two more cases give a
channels-last input, and 1d/3d, uneven padding, padding modes and autocast run on one family.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from kanzoo.bench import saved_activation_bytes
from kanzoo.layers import FAMILIES, get_conv
from kanzoo.layers.execution import compiled as kernels

pytestmark = pytest.mark.usefixtures("single_thread")

# one small shape per test keeps each family at one compiled graph per kernel
SHAPE = (2, 8, 6, 5)


@pytest.fixture
def fused(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Turn the kernels on and record each kernel call as ``(kind, ran)`` (``ran``: compiled code ran)."""
    calls: list[tuple[str, bool]] = []
    run = kernels._run

    def spy(layer, kind, *args):
        out = run(layer, kind, *args)
        calls.append((kind, out is not None))
        return out

    monkeypatch.setattr(kernels, "_run", spy)
    kernels.set_fused_kernels(True)
    return calls


def _forward_backward(layer: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().requires_grad_(True)
    params = [p for p in layer.parameters() if p.requires_grad]
    y = layer(x)
    return [y.detach(), *torch.autograd.grad(y, [x, *params], grad)]


def _compare_with_eager(layer: torch.nn.Module, x: torch.Tensor, rtol: float = 2e-5) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        grad = torch.randn_like(layer(x))
    kernels.set_fused_kernels(True)
    fused = _forward_backward(layer, x, grad)
    kernels.set_fused_kernels(False)
    eager = _forward_backward(layer, x, grad)
    names = ["output", "grad x"] + [f"grad {n}" for n, p in layer.named_parameters() if p.requires_grad]
    for name, a, b in zip(names, fused, eager):
        scale = b.abs().max().clamp_min(1e-12)
        assert ((a - b).abs().max() / scale).item() < rtol, f"{name} differs from the eager expansion"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_matches_eager(family: str, fused: list[tuple[str, bool]]) -> None:
    torch.manual_seed(0)
    layer = get_conv(family, 2)(8, 8, 3, padding=1, groups=2)
    x = torch.randn(*SHAPE)
    _compare_with_eager(layer, x)
    assert ("expand", True) in fused and ("vjp", True) in fused, f"the fused kernels did not run: {fused}"


@pytest.mark.parametrize("family, kwargs", [("kagn", {"degree": 7}), ("kan", {"grid_size": 2, "spline_order": 1})])
def test_channels_last_input_matches_eager(family: str, kwargs: dict, fused: list[tuple[str, bool]]) -> None:
    """The kernels follow the input's memory format: a channels-last input gives a channels-last
    expansion and output (for K + 1 >= 8 and fewer bases), an NCHW input an NCHW one."""
    torch.manual_seed(0)
    layer = get_conv(family, 2)(8, 8, 3, padding=1, groups=8, **kwargs)
    x = torch.randn(*SHAPE)
    x_last = x.contiguous(memory_format=torch.channels_last)
    assert not layer.expander().channels_last(x) and layer.expander().channels_last(x_last)
    _compare_with_eager(layer, x_last)
    assert ("vjp", True) in fused
    with torch.no_grad():
        assert layer(x_last).is_contiguous(memory_format=torch.channels_last)
        assert layer(x).is_contiguous()


@pytest.mark.parametrize("case", ["1d", "3d", "same_even_kernel", "reflect_stride", "depthwise_multiplier"])
def test_layer_options_match_eager(case: str, fused: list[tuple[str, bool]]) -> None:
    torch.manual_seed(0)
    if case in ("1d", "3d"):
        nd = int(case[0])
        layer = get_conv("kacn", nd)(8, 8, 3, padding=1, groups=2)
        x = torch.randn(2, 8, *([5] * nd))
    elif case == "same_even_kernel":  # uneven zero padding: the expansion gets an extra zero pad
        layer = get_conv("kacn", 2)(8, 8, 4, padding="same", groups=2)
        x = torch.randn(*SHAPE)
    elif case == "reflect_stride":
        layer = get_conv("kacn", 2)(8, 8, 3, stride=2, padding=1, padding_mode="reflect", groups=2)
        x = torch.randn(*SHAPE)
    else:
        layer = get_conv("kacn", 2)(8, 16, 3, padding=1, groups=8)
        x = torch.randn(*SHAPE)
    _compare_with_eager(layer, x)
    assert ("vjp", True) in fused


def test_backward_keeps_only_the_input(fused: list[tuple[str, bool]]) -> None:
    layer = get_conv("kagn", 2)(8, 8, 3, padding=1)
    x = torch.randn(*SHAPE, requires_grad=True)
    params = [p for p in layer.parameters() if p.requires_grad]
    saved = saved_activation_bytes(lambda: layer(x), params)
    assert saved == x.numel() * x.element_size()
    assert ("expand", True) in fused


def test_autocast_bf16_matches_eager(fused: list[tuple[str, bool]]) -> None:
    torch.manual_seed(0)
    layer = get_conv("kacn", 2)(8, 8, 3, padding=1, groups=2)
    x = torch.randn(*SHAPE)
    grad = torch.randn(SHAPE[0], 8, *SHAPE[2:], dtype=torch.bfloat16)
    results = []
    for on in (True, False):
        kernels.set_fused_kernels(on)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(_forward_backward(layer, x, grad))
    assert results[0][0].dtype == torch.bfloat16
    for a, b in zip(*results):
        assert torch.allclose(a.float(), b.float(), rtol=2e-2, atol=2e-2)
    assert ("expand", True) in fused


def test_kernels_apply_only_where_they_can(fused: list[tuple[str, bool]]) -> None:
    x = torch.randn(*SHAPE)
    silu = get_conv("kagn", 2)(8, 8, 3)
    assert kernels.applies(silu, x)
    assert not kernels.applies(silu, x.double()), "float64 (gradcheck, references) stays eager"
    assert not kernels.applies(get_conv("kagn", 2)(8, 8, 3, base_activation="gelu"), x)
    kernels.set_fused_kernels(False)
    assert not kernels.applies(silu, x)


def test_compiler_failure_warns_once_and_falls_back(monkeypatch: pytest.MonkeyPatch,
                                                    fused: list[tuple[str, bool]]) -> None:
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(kernels, "_failure", None)
    monkeypatch.setattr(kernels, "_compiled", {})  # new code objects: nothing compiled or cached yet
    torch.manual_seed(0)
    layer = get_conv("kabn", 2)(8, 8, 3, padding=1)
    x = torch.randn(*SHAPE, requires_grad=True)
    no_compiler = inductor_config.patch({"cpp.cxx": (None, "/nonexistent/c++"), "fx_graph_cache": False})
    expected = "could not be compiled.*C\\+\\+ compiler.*KANZOO_FUSED_KERNELS=0"
    with no_compiler, pytest.warns(RuntimeWarning, match=expected):
        y = layer(x)
    assert not kernels.fused_kernels_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y.sum().backward()
        layer(x)
    assert fused == [("expand", False)], "after the failure no kernel is tried again"
    kernels.set_fused_kernels(False)
    x_ref = x.detach().requires_grad_(True)
    layer(x_ref).sum().backward()
    assert torch.equal(x.grad, x_ref.grad)


@pytest.mark.parametrize("value, enabled", [(None, True), ("1", True), ("0", False), (" Off ", False),
                                            ("false", False), ("no", False)])
def test_environment_values(value: str | None, enabled: bool) -> None:
    assert kernels.enabled_by_env(value) is enabled


def test_environment_variable_is_read_at_import() -> None:
    env = {**os.environ, kernels.ENV_VAR: "0"}
    code = "from kanzoo.layers import fused_kernels_enabled; print(fused_kernels_enabled())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_layers_of_several_shapes_share_dynamic_kernels(fused: list[tuple[str, bool]]) -> None:
    """A network's layers see many shapes: after the first change the kernels recompile with dynamic
    shapes, and every layer still matches the eager path (train and eval)."""
    torch.manual_seed(0)
    conv = get_conv("kajn", 2)
    net = torch.nn.Sequential(conv(3, 8, 3, padding=1, act_layer="silu"), conv(8, 12, 3, stride=2, padding=1),
                              conv(12, 12, 3, padding=1, groups=12))
    x = torch.randn(2, 3, 9, 7)
    _compare_with_eager(net, x)
    net.eval()
    kernels.set_fused_kernels(True)
    with torch.no_grad():
        fused_out = net(torch.randn(3, 3, 5, 6, generator=torch.Generator().manual_seed(2)))
    kernels.set_fused_kernels(False)
    with torch.no_grad():
        eager_out = net(torch.randn(3, 3, 5, 6, generator=torch.Generator().manual_seed(2)))
    torch.testing.assert_close(fused_out, eager_out, rtol=1e-5, atol=1e-6)
    assert all(ran for _, ran in fused) and len(fused) >= 7


def test_identity_base_branch_runs_compiled_and_matches_eager(fused: list[tuple[str, bool]]) -> None:
    """The identity base branch (what ``kanify`` builds) runs on the compiled kernels, like SiLU."""
    torch.manual_seed(0)
    layer = get_conv("kacn", 2)(8, 8, 3, padding=1, groups=2, base_activation="identity")
    x = torch.randn(*SHAPE)
    assert kernels.applies(layer, x)
    _compare_with_eager(layer, x)
    assert ("expand", True) in fused and ("vjp", True) in fused


def test_kernels_recompile_past_dynamos_default_limit_then_fall_back(monkeypatch: pytest.MonkeyPatch,
                                                                     fused: list[tuple[str, bool]]) -> None:
    """A network's layers need more compiled variants than dynamo's default allows: past it the kernels
    recompile under ``MAX_GRAPHS``; past that one warning, and the eager expansion for the new variant."""
    import torch._dynamo.config as dynamo_config

    monkeypatch.setattr(kernels, "_compiled", {})  # new code objects: no variants compiled yet
    monkeypatch.setattr(kernels, "_over_limit", set())
    monkeypatch.setattr(kernels, "MAX_GRAPHS", 2)
    torch.manual_seed(0)
    layer = get_conv("kacn", 2)(8, 8, 3, padding=1)
    with torch.no_grad(), dynamo_config.patch(recompile_limit=1):
        layer(torch.randn(2, 8, 5, 5))
        layer(torch.randn(2, 8, 1, 1))  # a size-1 map: a second variant, over dynamo's limit of 1
        assert fused == [("expand", True), ("expand", True)]
        x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)  # a third, over MAX_GRAPHS
        with pytest.warns(RuntimeWarning, match="expand kernel of KACNConv2d has 2 compiled variants"):
            y = layer(x)
        assert fused[-1] == ("expand", False) and kernels.fused_kernels_enabled()
        kernels.set_fused_kernels(False)
        torch.testing.assert_close(y, layer(x))


def test_wavkan_stays_finite_for_huge_inputs(fused: list[tuple[str, bool]]) -> None:
    """The compiled kernels trace the wavelets' clamped form: no inf * 0 = NaN at |x| near 1e19 in float32."""
    torch.manual_seed(0)
    layer = get_conv("wavkan", 2)(8, 8, 3, padding=1, groups=2)
    x = (torch.randn(*SHAPE) * 1e19).requires_grad_()
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert ("expand", True) in fused and ("vjp", True) in fused


def test_no_cuda_runtime_notice_of_the_cpu_build_is_silenced(tmp_path) -> None:
    """Compiling the CPU kernels imports torch's cpp_extension, which logs "No CUDA runtime is found" on machines
    without a GPU when CUDA_HOME is set; kanzoo drops that one message and nothing else of that logger."""
    script = ("import sys, torch, kanzoo\n"
              "from kanzoo.layers import get_conv\n"
              "from kanzoo.layers.execution import compiled\n"
              "compiled.set_fused_kernels(True)\n"
              "x = torch.randn(1, 2, 4, 4, requires_grad=True)\n"
              "get_conv('kacn', 2)(2, 2, 1)(x).sum().backward()\n"
              "import logging; logging.getLogger('torch.utils.cpp_extension').warning('another notice')\n"
              "print('cpp_extension' in str(sys.modules.get('torch.utils.cpp_extension')))\n")
    env = dict(os.environ, CUDA_HOME=str(tmp_path), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True", "the kernels were not compiled"
    assert "No CUDA runtime" not in done.stderr and "another notice" in done.stderr
