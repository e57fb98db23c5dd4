"""What each KAN conv sees on real data, and what its edges do there.

:func:`collect_statistics` runs a model in eval mode over a few batches with a forward pre-hook on every KAN conv
and keeps, per layer: how many inputs each channel saw, how many fell outside the family's useful domain, the
extremes, and a uniform random sample of each channel's inputs (reservoir sampling by random keys: every input
has the same chance to be kept, however the data is batched). :func:`analyze` turns them into the input percentiles,
the ``outside_domain_fraction``, the ``nonlinearity`` and the strongest edges.

The nonlinearity of an edge is the share of its function's variance over the observed inputs (its channel's
sample) that the best linear fit ``a t + b`` does not explain: 0 for an edge that is a plain conv weight, 1 for
one without a linear part. A layer's nonlinearity averages its edges weighted by their size, the variance of
their function, so it is the share of all the edges' variance that is nonlinear. Both follow from each channel's
response covariances: with ``Cov`` the covariance of the responses over the sample and ``Res`` that of their
residuals after the linear regression on ``t``, an edge of weights ``w`` has variance ``w Cov w`` and
non-linear variance ``w Res w``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..layers import KANConvBase
from ..layers.partial import PartialKANConv
from .functions import kan_layers, responses, weight_view

__all__ = ["DOMAINS", "Edge", "LayerAnalysis", "LayerStatistics", "analyze", "channel_covariances",
           "collect_statistics", "edge_quadratic", "inside_domain", "register_domain"]

Domain = Callable[[KANConvBase, torch.Tensor], torch.Tensor]
DOMAINS: dict[str, Domain] = {}
"""``{family: function(layer, x) -> bool tensor}``: where an input is inside the family's useful domain."""
WAVELET_REACH = 3.0
"""An input is inside a wavelet's domain when it lies within this many scales of the wavelet's shift."""


def register_domain(*families: str) -> Callable[[Domain], Domain]:
    """Decorator: the useful domain of ``families`` (a function ``(layer, x) -> bool tensor shaped like x``)."""
    def decorate(function: Domain) -> Domain:
        DOMAINS.update({family: function for family in families})
        return function
    return decorate


@register_domain("kan", "fastkan", "relukan")
def _grid_domain(layer: KANConvBase, x: torch.Tensor) -> torch.Tensor:
    lo, hi = layer.grid_range
    return (x >= lo) & (x <= hi)


@register_domain("kacn", "kaln", "kagn", "kajn")
def _tanh_domain(layer: KANConvBase, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x).abs() <= 0.99


@register_domain("kabn")
def _sigmoid_domain(layer: KANConvBase, x: torch.Tensor) -> torch.Tensor:
    u = torch.sigmoid(x)
    return (u >= 0.01) & (u <= 0.99)


@register_domain("wavkan")
def _wavelet_domain(layer: KANConvBase, x: torch.Tensor) -> torch.Tensor:
    shape = (1, -1, *([1] * (x.dim() - 2)))
    inside = torch.zeros_like(x, dtype=torch.bool)
    for shift, scale in zip(layer.shift.detach().t(), layer.scale.detach().t()):
        inside |= (x - shift.view(shape).to(x.dtype)).abs() <= WAVELET_REACH * scale.abs().view(shape).to(x.dtype)
    return inside


def inside_domain(layer: KANConvBase, x: torch.Tensor) -> torch.Tensor | None:
    """Which inputs ``x`` ``(N, C, *spatial)`` lie in the useful domain of the layer's family: inside ``grid_range``
    (B-spline, RBF, ReLU-KAN), where tanh does not saturate (``|tanh x| <= 0.99``: Chebyshev, Legendre, Gram,
    Jacobi) or the sigmoid (0.01..0.99: Bernstein), within three scales of a wavelet; None for a family that
    registered no domain (:func:`register_domain`)."""
    domain = DOMAINS.get(layer.family)
    return None if domain is None else domain(layer, x)


@dataclasses.dataclass
class LayerStatistics:
    """The inputs one KAN conv saw (see the module doc)."""

    name: str
    layer: KANConvBase = dataclasses.field(repr=False)
    count: int = 0
    """Inputs seen per channel (samples times positions)."""
    outside: int | None = 0
    """Inputs, over every channel, outside the family's useful domain (None: the family has no domain)."""
    minimum: float = math.inf
    maximum: float = -math.inf
    samples: torch.Tensor | None = dataclasses.field(default=None, repr=False)
    """``(in_channels, S)``: a uniform random sample of each channel's inputs."""
    keys: torch.Tensor | None = dataclasses.field(default=None, repr=False)
    """The random keys of the samples: the ``S`` inputs with the smallest keys are kept (a uniform sample)."""

    @property
    def outside_domain_fraction(self) -> float:
        """The share of inputs outside the family's useful domain (NaN when unknown or nothing was seen)."""
        if self.outside is None or self.count == 0:
            return math.nan
        return self.outside / (self.count * self.layer.in_channels)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of the sampled inputs of every channel together."""
        if self.samples is None:
            return math.nan
        return float(torch.quantile(self.samples.flatten().double(), q / 100))

    def add(self, x: torch.Tensor, capacity: int, generator: torch.Generator) -> None:
        """Count one batch of layer inputs ``(N, C, *spatial)`` and update the samples."""
        x = x.detach()
        inside = inside_domain(self.layer, x)
        if inside is None:
            self.outside = None
        elif self.outside is not None:
            self.outside += int(inside.numel() - inside.sum())
        values = x.transpose(0, 1).reshape(x.shape[1], -1).float().cpu()
        self.count += values.shape[1]
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))
        keys = torch.rand(values.shape[1], generator=generator)
        if self.samples is not None:
            values = torch.cat([self.samples, values], 1)
            keys = torch.cat([self.keys, keys])
        if len(keys) > capacity:
            keep = keys.topk(capacity, largest=False).indices
            values, keys = values[:, keep], keys[keep]
        self.samples, self.keys = values, keys


def collect_statistics(model: nn.Module, batches: Iterable[torch.Tensor], *, layers: str | None = None,
                       samples_per_channel: int = 1024, seed: int = 0, progress: bool | None = False,
                       total: int | None = None) -> dict[str, LayerStatistics]:
    """Run ``model`` (eval mode, no gradients) over ``batches`` of inputs and gather what every KAN conv whose name
    matches ``layers`` sees (see :class:`LayerStatistics`); ``samples_per_channel`` bounds each channel's sample."""
    if samples_per_channel < 2:
        raise ValueError(f"samples_per_channel must be at least 2, got {samples_per_channel}")
    found = kan_layers(model, layers)
    if not found:
        raise ValueError(f"no KAN convolution in {type(model).__name__}"
                         + (f" matches {layers!r}" if layers is not None else ""))
    stats = {name: LayerStatistics(name, layer) for name, layer in found}
    generator = torch.Generator().manual_seed(seed)

    modules = dict(model.named_modules())

    def hook(name: str, layer: KANConvBase) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0]
            x = x.unsqueeze(0) if x.dim() == layer.ndim + 1 else x
            if module is not layer:  # the PartialKANConv around the layer: its kept channels
                x = x.index_select(1, module.kan_index)
            stats[name].add(x, samples_per_channel, generator)
        return record

    def hooked(name: str, layer: KANConvBase) -> nn.Module:
        """The layer, or the PartialKANConv that holds it (which may run it without calling it)."""
        parent = modules.get(name.rpartition(".")[0])
        return parent if isinstance(parent, PartialKANConv) and parent.kan is layer else layer

    handles = [hooked(name, layer).register_forward_pre_hook(hook(name, layer)) for name, layer in found]
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc="statistics", total=total, leave=False,
                              disable=None if progress is None else not progress):
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    unused = [name for name, s in stats.items() if s.count == 0]
    if unused:
        raise ValueError(f"the forward pass never reached {unused[:3]}; inspect a model whose forward uses every "
                         "KAN convolution, or pass layers= that leaves them out")
    return stats


def channel_covariances(layer: KANConvBase, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Cov, Res)``, each ``(in_channels, R, R)`` float64: the covariance of each channel's responses over its
    samples ``(in_channels, S)``, and that of their residuals after the linear regression on the input."""
    values = responses(layer, samples)
    centred = values - values.mean(-1, keepdim=True)
    t = samples.to(torch.float64)
    t = (t - t.mean(-1, keepdim=True)).unsqueeze(1)
    norm = (t * t).sum(-1, keepdim=True)
    slope = torch.where(norm > 0, (centred * t).sum(-1, keepdim=True) / norm.clamp(min=1e-300), 0.0)
    residual = centred - slope * t
    count = samples.shape[1]
    return centred @ centred.transpose(1, 2) / count, residual @ residual.transpose(1, 2) / count


def edge_quadratic(layer: KANConvBase, matrices: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``w M_c w`` for every edge, with ``M_c`` the ``(R, R)`` matrix of its input channel: ``(O, C / groups, *k)``;
    ``weight`` (default: the layer's, ``(O, C / groups, R, *k)``) may hold a subset of the responses."""
    weight = (weight_view(layer) if weight is None else weight).detach().to(torch.float64)
    taps, size = weight.shape[3:], weight.shape[2]
    groups, per_group_in = layer.groups, layer.in_channels // layer.groups
    weight = weight.reshape(groups, layer.out_channels // groups, per_group_in, size, -1)
    grouped = matrices.reshape(groups, per_group_in, size, size)
    values = torch.einsum("gocrk,gcrs,gocsk->gock", weight, grouped, weight)
    return values.reshape(layer.out_channels, per_group_in, *taps).clamp(min=0)


@dataclasses.dataclass
class Edge:
    """One edge of a layer: output channel, input channel (of the whole layer), kernel tap, the standard deviation
    of its function over the observed inputs and its nonlinearity."""

    output: int
    channel: int
    tap: tuple[int, ...]
    std: float
    nonlinearity: float


@dataclasses.dataclass
class LayerAnalysis:
    """What :func:`analyze` finds for one KAN conv (the columns of ``summary.csv``)."""

    name: str
    family: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, ...]
    num_bases: int
    params: int
    nonlinearity: float
    outside_domain_fraction: float
    input_p01: float
    input_p50: float
    input_p99: float
    input_min: float
    input_max: float
    inputs_seen: int
    variance: float = dataclasses.field(repr=False)
    """Sum of the edges' variances (the weight of the layer in a model-wide average)."""
    strongest: list[Edge] = dataclasses.field(default_factory=list, repr=False)
    edge_std: torch.Tensor | None = dataclasses.field(default=None, repr=False)
    edge_nonlinearity: torch.Tensor | None = dataclasses.field(default=None, repr=False)


def analyze(stats: LayerStatistics, top: int = 16) -> LayerAnalysis:
    """Percentiles, domain share, nonlinearity (edges weighted by variance) and the ``top`` strongest edges
    (largest standard deviation over the observed inputs) of one layer."""
    layer = stats.layer
    cov, res = channel_covariances(layer, stats.samples)
    variance, nonlinear = edge_quadratic(layer, cov), edge_quadratic(layer, res)
    total = float(variance.sum())
    edge_nonlinearity = torch.where(variance > 0, nonlinear / variance.clamp(min=1e-300), 0.0).clamp(max=1)
    std = variance.sqrt()
    per_group_in = layer.in_channels // layer.groups
    per_group_out = layer.out_channels // layer.groups
    strongest = []
    for flat in std.flatten().topk(min(top, std.numel())).indices.tolist():
        index = list(torch.unravel_index(torch.tensor(flat), std.shape))
        output, local = int(index[0]), int(index[1])
        tap = tuple(int(i) for i in index[2:])
        channel = output // per_group_out * per_group_in + local
        strongest.append(Edge(output, channel, tap, float(std[(output, local, *tap)]),
                              float(edge_nonlinearity[(output, local, *tap)])))
    return LayerAnalysis(
        stats.name, layer.family, layer.in_channels, layer.out_channels, layer.groups, tuple(layer.kernel_size),
        layer.num_bases, sum(p.numel() for p in layer.parameters()),
        float(nonlinear.sum()) / total if total > 0 else 0.0, stats.outside_domain_fraction,
        stats.percentile(1), stats.percentile(50), stats.percentile(99), stats.minimum, stats.maximum, stats.count,
        total, strongest, std.to(torch.float32), edge_nonlinearity.to(torch.float32))
