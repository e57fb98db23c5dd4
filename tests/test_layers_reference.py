"""Slow, obviously-correct references for the KAN convolution layers (test helpers only).

Each basis is written here from its textbook definition, independently of ``kanzoo.layers``:
Cox-de Boor for B-splines, closed-form sums for Legendre and Jacobi, ``cos(n acos u)`` for
Chebyshev, ``math.comb`` for Bernstein. The convolution is an explicit loop over output positions,
groups, output channels, input channels and kernel offsets.
"""

from __future__ import annotations

import itertools
import zlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F

FAMILY_NAMES = ("kan", "fastkan", "kacn", "kaln", "kagn", "kajn", "kabn", "wavkan", "relukan")


def _grid_knots(grid_range: Sequence[float], cells: int, extend: int) -> list[float]:
    lo, hi = grid_range
    h = (hi - lo) / cells
    return [lo + h * j for j in range(-extend, cells + extend + 1)]


def bspline_bases(t: torch.Tensor, grid_size: int, order: int, grid_range: Sequence[float]) -> list[torch.Tensor]:
    """Cox-de Boor recursion over the extended knot vector, general (non-uniform) form."""
    knots = _grid_knots(grid_range, grid_size, order)
    bases = [((t >= knots[i]) & (t < knots[i + 1])).to(t.dtype) for i in range(len(knots) - 1)]
    for p in range(1, order + 1):
        bases = [
            (t - knots[i]) / (knots[i + p] - knots[i]) * bases[i]
            + (knots[i + p + 1] - t) / (knots[i + p + 1] - knots[i + 1]) * bases[i + 1]
            for i in range(len(bases) - 1)
        ]
    assert len(bases) == grid_size + order
    return bases


def rbf_bases(t: torch.Tensor, grid_size: int, grid_range: Sequence[float]) -> list[torch.Tensor]:
    lo, hi = grid_range
    width = (hi - lo) / (grid_size - 1)
    centres = [lo + width * i for i in range(grid_size)]
    return [torch.exp(-(((t - mu) / width) ** 2)) for mu in centres]


def chebyshev_bases(t: torch.Tensor, degree: int) -> list[torch.Tensor]:
    u = torch.tanh(t).clamp(-1.0, 1.0)
    return [torch.cos(n * torch.acos(u)) for n in range(degree + 1)]


def legendre_bases(t: torch.Tensor, degree: int) -> list[torch.Tensor]:
    """P_n(u) = sum_k C(n, k)^2 ((u - 1) / 2)^(n - k) ((u + 1) / 2)^k."""
    u = torch.tanh(t)
    return [sum(math.comb(n, k) ** 2 * ((u - 1) / 2) ** (n - k) * ((u + 1) / 2) ** k for k in range(n + 1))
            for n in range(degree + 1)]


def gram_bases(t: torch.Tensor, degree: int, beta_weights: torch.Tensor) -> list[torch.Tensor]:
    """silu of P0 = 1, P1 = u, P_i = u P_{i-1} - beta(i-1, i) P_{i-2}, u = tanh t (Torch-Conv-KAN's Gram basis)."""

    def beta(n: int, m: int) -> torch.Tensor:
        return ((m + n) * (m - n) * n ** 2) / (m ** 2 / (4.0 * n ** 2 - 1.0)) * beta_weights[n]

    u = torch.tanh(t)
    polys = [torch.ones_like(u), u]
    for i in range(2, degree + 1):
        polys.append(u * polys[i - 1] - beta(i - 1, i) * polys[i - 2])
    return [F.silu(p) for p in polys[: degree + 1]]


def _binom(z: float, k: int) -> float:
    """Generalised binomial coefficient C(z, k) for real z > k - 1."""
    return math.gamma(z + 1) / (math.gamma(k + 1) * math.gamma(z - k + 1))


def jacobi_bases(t: torch.Tensor, degree: int, alpha: float, beta: float) -> list[torch.Tensor]:
    """P_n^(a,b)(u) = sum_s C(n + a, n - s) C(n + b, s) ((u - 1) / 2)^s ((u + 1) / 2)^(n - s)."""
    u = torch.tanh(t)
    return [sum(_binom(n + alpha, n - s) * _binom(n + beta, s) * ((u - 1) / 2) ** s * ((u + 1) / 2) ** (n - s)
                for s in range(n + 1))
            for n in range(degree + 1)]


def bernstein_bases(t: torch.Tensor, degree: int) -> list[torch.Tensor]:
    u = torch.sigmoid(t)
    return [math.comb(degree, v) * u ** v * (1 - u) ** (degree - v) for v in range(degree + 1)]


def wavelet(z: torch.Tensor, name: str) -> torch.Tensor:
    gauss = torch.exp(-z ** 2 / 2)
    if name == "mexican_hat":
        return 2 / (math.sqrt(3) * math.pi ** 0.25) * (1 - z ** 2) * gauss
    if name == "morlet":
        return torch.cos(5 * z) * gauss
    if name == "dog":
        return -z * gauss
    raise AssertionError(name)


def relukan_bases(t: torch.Tensor, grid_size: int, order: int, grid_range: Sequence[float]) -> list[torch.Tensor]:
    lo, hi = grid_range
    h = (hi - lo) / grid_size
    bases = []
    for i in range(grid_size + order):
        start = lo + h * (i - order)
        end = start + (order + 1) * h
        bases.append((torch.relu(end - t) * torch.relu(t - start)) ** 2 * 16 / (end - start) ** 4)
    return bases


def channel_bases(layer: torch.nn.Module, t: torch.Tensor, channel: int) -> list[torch.Tensor]:
    """The K basis responses of input channel ``channel`` of ``layer``, evaluated at ``t``."""
    family = layer.family
    if family == "kan":
        return bspline_bases(t, layer.grid_size, layer.spline_order, layer.grid_range)
    if family == "fastkan":
        return rbf_bases(t, layer.grid_size, layer.grid_range)
    if family == "kacn":
        return chebyshev_bases(t, layer.degree)
    if family == "kaln":
        return legendre_bases(t, layer.degree)
    if family == "kagn":
        return gram_bases(t, layer.degree, layer.beta_weights.detach())
    if family == "kajn":
        return jacobi_bases(t, layer.degree, layer.alpha, layer.beta)
    if family == "kabn":
        return bernstein_bases(t, layer.degree)
    if family == "wavkan":
        shift, scale = layer.shift.detach()[channel], layer.scale.detach()[channel]
        return [wavelet((t - shift[j]) / scale[j], layer.wavelet) for j in range(layer.num_wavelets)]
    if family == "relukan":
        return relukan_bases(t, layer.grid_size, layer.spline_order, layer.grid_range)
    raise AssertionError(family)


def source_index(q: int, size: int, mode: str) -> int | None:
    """Which input index a (possibly padded) coordinate reads; None for zero padding."""
    if 0 <= q < size:
        return q
    if mode == "zeros":
        return None
    if mode == "reflect":
        return -q if q < 0 else 2 * (size - 1) - q
    if mode == "replicate":
        return min(max(q, 0), size - 1)
    if mode == "circular":
        return q % size
    raise AssertionError(mode)


def pad_amounts(padding, kernel, dilation) -> tuple[list[int], list[int]]:
    """(before, after) per spatial dim, following nn.ConvNd's rules for ints, 'valid' and 'same'."""
    nd = len(kernel)
    if padding == "valid":
        return [0] * nd, [0] * nd
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return [t // 2 for t in totals], [t - t // 2 for t in totals]
    pads = [padding] * nd if isinstance(padding, int) else list(padding)
    return pads, pads


def reference_conv(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, stride, padding,
                   dilation, groups: int, padding_mode: str) -> torch.Tensor:
    """y[n, o, p] = bias[o] + sum over c in o's group, kernel offsets i of
    sum_f weight[o, c, f, i] * features[n, g*Cg + c, f, source(p * stride - pad + i * dilation)].

    ``features`` is (N, C, F, *spatial): the F pointwise responses (base branch, bases) of every input
    value, so ``sum_f weight[o, c, f, i] * features[..., f, q]`` is ``phi[o, c, i](x[c, q])``. Positions
    in the zero padding contribute nothing; other padding modes read the mapped input position.
    """
    n_batch, in_channels = features.shape[:2]
    sizes = features.shape[3:]
    out_channels, in_per_group = weight.shape[:2]
    kernel = weight.shape[3:]
    nd = len(kernel)
    before, after = pad_amounts(padding, kernel, dilation)
    out_sizes = [(s + b + a - d * (k - 1) - 1) // st + 1
                 for s, b, a, d, k, st in zip(sizes, before, after, dilation, kernel, stride)]
    out_per_group = out_channels // groups
    y = torch.zeros(n_batch, out_channels, *out_sizes, dtype=features.dtype)
    for p in itertools.product(*(range(s) for s in out_sizes)):
        for i in itertools.product(*(range(k) for k in kernel)):
            coords = [p[d] * stride[d] - before[d] + i[d] * dilation[d] for d in range(nd)]
            src = [source_index(q, s, padding_mode) for q, s in zip(coords, sizes)]
            if any(s is None for s in src):
                continue
            for g in range(groups):
                for o in range(g * out_per_group, (g + 1) * out_per_group):
                    for c in range(in_per_group):
                        phi = features[(slice(None), g * in_per_group + c, slice(None), *src)] @ weight[(o, c, slice(None), *i)]
                        y[(slice(None), o, *p)] += phi
    if bias is not None:
        y += bias.view(1, -1, *([1] * nd))
    return y


def layer_features(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, F, *spatial): [base_activation(x), B_0(x), ..., B_{K-1}(x)] per channel, from the formulas above."""
    per_channel = []
    for c in range(x.shape[1]):
        t = x[:, c]
        responses = channel_bases(layer, t, c)
        if layer.base_activation is not None:
            responses = [F.silu(t) if isinstance(layer.base_activation, torch.nn.SiLU) else layer.base_activation(t),
                         *responses]
        per_channel.append(torch.stack(responses, dim=1))
    return torch.stack(per_channel, dim=1)


def layer_weight(layer: torch.nn.Module) -> torch.Tensor:
    """The fused weight as (O, C/G, F, *kernel): documented channel-major layout, base branch first."""
    out_channels, fused = layer.weight.shape[:2]
    features = fused // (layer.in_channels // layer.groups)
    return layer.weight.detach().reshape(out_channels, layer.in_channels // layer.groups, features,
                                         *layer.weight.shape[2:])


def reference_kan_conv(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference output of a bare KAN convolution layer (no norm, act or dropout)."""
    bias = None if layer.bias is None else layer.bias.detach()
    return reference_conv(layer_features(layer, x), layer_weight(layer), bias, stride=layer.stride,
                          padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                          padding_mode=layer.padding_mode)


def reference_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """A grouped 1x1 convolution as explicit per-group matrix products."""
    out_channels, in_per_group = weight.shape[:2]
    out_per_group = out_channels // groups
    matrix = weight.reshape(out_channels, in_per_group)
    outs = []
    for g in range(groups):
        xg = x[:, g * in_per_group:(g + 1) * in_per_group]
        wg = matrix[g * out_per_group:(g + 1) * out_per_group]
        outs.append(torch.einsum("oc,nc...->no...", wg, xg))
    y = torch.cat(outs, dim=1)
    if bias is not None:
        y = y + bias.view(1, -1, *([1] * (x.dim() - 2)))
    return y


# ---------------------------------------------------------------------------------------------
# Tests: fast layers against the reference.

import pytest  # noqa: E402

from kanzoo.layers import BOTTLENECK_FAMILIES, FAMILIES  # noqa: E402

FAMILY_KWARGS = {
    "kan": dict(grid_size=3, spline_order=2, grid_range=(-1.5, 1.0)),
    "fastkan": dict(grid_size=4, grid_range=(-1.0, 1.5)),
    "kacn": dict(degree=3),
    "kaln": dict(degree=3),
    "kagn": dict(degree=3),
    "kajn": dict(degree=3, alpha=0.5, beta=1.5),
    "kabn": dict(degree=3),
    "wavkan": dict(num_wavelets=3),
    "relukan": dict(grid_size=3, spline_order=2, grid_range=(-1.0, 1.5)),
}
WAVELET_BY_NDIM = {1: "mexican_hat", 2: "morlet", 3: "dog"}
IN_CHANNELS = {1: 4, 2: 4, 3: 2}
INPUT_SIZES = {1: (9,), 2: (5, 6), 3: (3, 4, 5)}


pytestmark = pytest.mark.usefixtures("single_thread")


def _per_dim(value, nd: int):
    """A per-dimension value from a 3-list (first nd entries), or a scalar/string unchanged."""
    return tuple(value[:nd]) if isinstance(value, list) else value


# (out_channels as a multiple of in_channels, kernel, stride, padding, dilation, groups ("dw" = depthwise), mode)
CONFIGS = {
    "g1_pad1_zeros": (0.5, [3, 2, 2], 1, [1, 0, 1], 1, 1, "zeros"),
    "g2_stride_dilation_reflect": (1, [3, 3, 2], [2, 1, 2], [2, 1, 1], [2, 1, 1], 2, "reflect"),
    "depthwise_same_even_zeros": (2, [2, 2, 1], 1, "same", [1, 2, 1], "dw", "zeros"),
    "g2_same_even_dilated_replicate": (0.5, [2, 3, 2], 1, "same", [3, 1, 1], 2, "replicate"),
    "g1_stride3_circular": (0.5, [3, 1, 2], [3, 2, 1], 1, 1, 1, "circular"),
    "depthwise_valid_stride": (1, [3, 2, 2], [2, 2, 1], "valid", 1, "dw", "zeros"),
}


def make_layer(family: str, nd: int, config: str, **extra) -> torch.nn.Module:
    """A float64 layer of ``family`` with randomised (non-initial) basis parameters and bias."""
    out_mult, kernel, stride, padding, dilation, groups, mode = CONFIGS[config]
    in_channels = IN_CHANNELS[nd]
    groups = in_channels if groups == "dw" else groups
    kwargs = dict(FAMILY_KWARGS[family])
    if family == "wavkan":
        kwargs["wavelet"] = WAVELET_BY_NDIM[nd]
    kwargs.update(extra)
    out_channels = groups * max(1, round(in_channels * out_mult / groups))
    layer = FAMILIES[family][nd - 1](
        in_channels, out_channels,
        _per_dim(kernel, nd), stride=_per_dim(stride, nd), padding=_per_dim(padding, nd),
        dilation=_per_dim(dilation, nd), groups=groups, padding_mode=mode, dtype=torch.float64, **kwargs)
    _randomise(layer)
    return layer


def _randomise(module: torch.nn.Module) -> None:
    """Give learned basis parameters and biases values far from their (often tiny) initial ones."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "beta_weights":
                param.copy_(torch.randn_like(param) * 0.3)
            elif leaf == "shift":
                param.add_(torch.randn_like(param) * 0.3)
            elif leaf == "scale":
                param.mul_(torch.rand_like(param) + 0.5)
            elif leaf == "bias":
                param.copy_(torch.randn_like(param))


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_layer_matches_reference(family: str, nd: int, config: str) -> None:
    torch.manual_seed(zlib.crc32(f"{family}-{nd}-{config}".encode()))
    layer = make_layer(family, nd, config)
    x = torch.randn(2, IN_CHANNELS[nd], *INPUT_SIZES[nd], dtype=torch.float64) * 1.2
    expected = reference_kan_conv(layer, x)
    actual = layer(x)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_reference_sees_a_wrong_weight_layout(nd: int) -> None:
    """Sanity check of the reference itself: a degree-major weight layout gives a different answer."""
    torch.manual_seed(0)
    layer = make_layer("kacn", nd, "g1_pad1_zeros")
    x = torch.randn(2, IN_CHANNELS[nd], *INPUT_SIZES[nd], dtype=torch.float64)
    expected = reference_kan_conv(layer, x)
    with torch.no_grad():
        w = layer_weight(layer)
        layer.weight.copy_(w.transpose(1, 2).reshape(layer.weight.shape))
    assert not torch.allclose(layer(x), expected, atol=1e-3)


BOTTLENECK_CASES = [(family, 2, "reflect") for family in FAMILY_NAMES] + [("kagn", 1, "zeros"), ("kan", 3, "circular")]


@pytest.mark.parametrize("family,nd,mode", BOTTLENECK_CASES)
def test_bottleneck_matches_reference(family: str, nd: int, mode: str) -> None:
    torch.manual_seed(1)
    kwargs = dict(FAMILY_KWARGS[family])
    if family == "wavkan":
        kwargs["wavelet"] = WAVELET_BY_NDIM[nd]
    in_channels, out_channels, groups = 8, 6, 2
    layer = BOTTLENECK_FAMILIES[family][nd - 1](
        in_channels, out_channels, 3, stride=_per_dim([1, 2, 1], nd), padding=1, groups=groups, padding_mode=mode,
        dim_reduction=2.0, min_internal=2, norm_layer="batch", act_layer="relu", dtype=torch.float64, **kwargs)
    assert layer.inner_channels == 4
    _randomise(layer)
    norm = layer.norm
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(out_channels))
        norm.running_var.copy_(torch.rand(out_channels) + 0.5)
    layer.eval()
    x = torch.randn(2, in_channels, *INPUT_SIZES[nd], dtype=torch.float64)

    z = reference_pointwise(x, layer.inner_proj.weight.detach(), None, groups)
    kan = reference_kan_conv(layer.kan, z)
    up = reference_pointwise(kan, layer.out_proj.weight.detach(), layer.out_proj.bias.detach(), groups)
    base = reference_conv(F.silu(x).unsqueeze(2), layer.base_conv.weight.detach().unsqueeze(2), None,
                          stride=layer.kan.stride, padding=layer.kan.padding, dilation=layer.kan.dilation,
                          groups=groups, padding_mode=mode)
    pre = up + base
    shape = (1, -1) + (1,) * nd
    normed = ((pre - norm.running_mean.view(shape)) / torch.sqrt(norm.running_var.view(shape) + norm.eps)
              * norm.weight.detach().view(shape) + norm.bias.detach().view(shape))
    expected = torch.relu(normed)
    torch.testing.assert_close(layer(x), expected, rtol=1e-9, atol=1e-10)


EDGE_SETTINGS = [
    ("kan", dict(grid_size=1, spline_order=0)),
    ("kan", dict(grid_size=4, spline_order=1)),
    ("kan", dict(grid_size=2, spline_order=4, grid_range=(-0.5, 2.0))),
    ("relukan", dict(grid_size=1, spline_order=0)),
    ("relukan", dict(grid_size=4, spline_order=3, grid_range=(-2.0, 0.5))),
    ("fastkan", dict(grid_size=2)),
    ("fastkan", dict(grid_size=7, grid_range=(-3.0, 1.0))),
    *[(family, dict(degree=degree)) for family in ("kacn", "kaln", "kagn", "kabn") for degree in (0, 1, 6)],
    ("kajn", dict(degree=0)),
    ("kajn", dict(degree=1, alpha=2.0, beta=0.0)),
    ("kajn", dict(degree=5, alpha=-0.5, beta=0.25)),
    *[("wavkan", dict(wavelet=w, num_wavelets=n)) for w in ("mexican_hat", "morlet", "dog") for n in (1, 5)],
    ("kacn", dict(degree=2, base_activation=None)),
    ("kagn", dict(degree=2, base_activation="gelu", bias=False)),
    ("kan", dict(base_activation="identity")),
]


@pytest.mark.parametrize("family,settings", EDGE_SETTINGS,
                         ids=[f"{f}-" + "-".join(f"{k}={v}" for k, v in s.items()) for f, s in EDGE_SETTINGS])
def test_family_settings_match_reference_and_recompute(family: str, settings: dict) -> None:
    """Forward against the reference, and recomputed gradients against autograd's, at edge settings."""
    torch.manual_seed(zlib.crc32(repr((family, settings)).encode()))
    layer = FAMILIES[family][1](4, 4, (3, 2), stride=(1, 2), padding=(1, 1), groups=2,
                                padding_mode="reflect" if family in ("kan", "kagn") else "zeros",
                                dtype=torch.float64, **settings)
    _randomise(layer)
    x = (torch.randn(2, 4, 5, 6, dtype=torch.float64) * 1.5).requires_grad_()
    y = layer(x)
    torch.testing.assert_close(y, reference_kan_conv(layer, x.detach()), rtol=1e-9, atol=1e-10)
    grad_out = torch.randn_like(y)
    grads = []
    for recompute in (True, False):
        layer.recompute = recompute
        inputs = [x, *layer.parameters()]
        grads.append(torch.autograd.grad(layer(x), inputs, grad_out, allow_unused=True, materialize_grads=True))
    for name, with_recompute, stored in zip(["input", *dict(layer.named_parameters())], *grads):
        torch.testing.assert_close(with_recompute, stored, rtol=1e-10, atol=1e-12, msg=name)
