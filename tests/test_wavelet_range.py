"""WavKAN stays finite for huge inputs (no inf * 0 = NaN), in every floating dtype, forward and backward."""

from __future__ import annotations

import math

import pytest
import torch

from kanzoo.layers import get_conv

WAVELETS = ("mexican_hat", "morlet", "dog")
HUGE = {torch.float32: (1e19, 3e38), torch.bfloat16: (1e19, 3e38), torch.float16: (1e3, 6e4)}


def textbook(z: torch.Tensor, wavelet: str) -> torch.Tensor:
    """The mother wavelets as written in the WavKAN paper, in float64."""
    envelope = torch.exp(-0.5 * z ** 2)
    if wavelet == "mexican_hat":
        return 2 / (math.sqrt(3) * math.pi ** 0.25) * (1 - z ** 2) * envelope
    if wavelet == "morlet":
        return torch.cos(5 * z) * envelope
    return -z * envelope


def layer(wavelet: str, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_conv("wavkan", ndim=2)(2, 3, 1, wavelet=wavelet, num_wavelets=3, dtype=dtype)


@pytest.mark.parametrize("dtype", list(HUGE))
@pytest.mark.parametrize("wavelet", WAVELETS)
def test_bases_and_their_gradients_stay_finite_for_huge_inputs(wavelet: str, dtype: torch.dtype) -> None:
    conv = layer(wavelet, dtype)
    values = [0.0, 1.5, -2.0, *HUGE[dtype], *(-v for v in HUGE[dtype])]
    x = torch.tensor(values, dtype=dtype).view(1, 1, 1, -1).expand(1, 2, 1, -1).contiguous()
    params = conv.basis_parameters()
    bases, vjp = conv.basis_vjp(x, conv.squash(x), *params)
    assert all(torch.isfinite(b).all() for b in bases)
    assert all(torch.isfinite(g).all() for g in vjp(torch.ones(1, 2, len(bases), 1, len(values), dtype=dtype)))
    assert all(torch.isfinite(b).all() for b in conv.basis_from(x, conv.squash(x), *params))
    far = torch.stack(bases)[..., 3:]  # far outside every wavelet's support
    assert (far == 0).all()


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_a_layer_trains_on_huge_inputs_in_float32_and_bfloat16(wavelet: str) -> None:
    for dtype, scale in ((torch.float32, 1e19), (torch.bfloat16, 1e19)):
        conv = layer(wavelet, dtype)
        x = (torch.randn(2, 2, 4, 4) * scale).to(dtype).requires_grad_()
        y = conv(x)
        y.float().sum().backward()  # a loss that does not itself overflow
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in conv.parameters())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("wavelet", WAVELETS)
def test_normal_inputs_keep_their_values(wavelet: str, dtype: torch.dtype) -> None:
    conv = layer(wavelet, dtype)
    x = torch.linspace(-40, 40, 801, dtype=torch.float64).view(1, 1, 1, -1).expand(1, 2, 1, -1)
    bases = conv.basis_from(x.to(dtype), (), *conv.basis_parameters())
    shift, scale = (p.detach().double()[0] for p in conv.basis_parameters())
    for k, basis in enumerate(bases):
        expected = textbook((x[:, :1] - shift[k]) / scale[k], wavelet)
        tolerance = {torch.float64: 1e-12, torch.float32: 1e-6}.get(dtype, 2e-2)
        torch.testing.assert_close(basis[:, :1].double(), expected, rtol=0, atol=tolerance)
