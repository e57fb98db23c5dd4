"""Look up a KAN convolution class by family name, so models can take ``conv='kagn'``."""

from __future__ import annotations

from torch import nn

from .bottleneck import BOTTLENECK_FAMILIES
from .kan_conv import FAMILIES

ALIASES: dict[str, str] = {
    "bspline": "kan", "spline": "kan", "rbf": "fastkan", "chebyshev": "kacn", "legendre": "kaln",
    "gram": "kagn", "jacobi": "kajn", "bernstein": "kabn", "wavelet": "wavkan", "relu_kan": "relukan",
}
BOTTLENECK_PREFIX = "bottleneck_"


def conv_names() -> list[str]:
    """Every canonical family name ``get_conv`` accepts, bottleneck variants included."""
    return sorted(FAMILIES) + [BOTTLENECK_PREFIX + name for name in sorted(FAMILIES)]


def canonical_conv_name(name: str) -> str:
    """Normalise a family name or alias ('Gram', 'bottleneck-kagn', 'kagn') to its canonical form."""
    key = name.lower().replace("-", "_")
    bottleneck = key.startswith(BOTTLENECK_PREFIX)
    family = key.removeprefix(BOTTLENECK_PREFIX)
    family = ALIASES.get(family, family)
    if family not in FAMILIES:
        raise ValueError(f"unknown KAN conv family {name!r}; choose one of {conv_names()} "
                         f"(aliases: {sorted(ALIASES)})")
    return BOTTLENECK_PREFIX + family if bottleneck else family


def get_conv(name: str, ndim: int = 2) -> type[nn.Module]:
    """The KAN convolution class for a family name, e.g. ``get_conv('kagn', ndim=2) is KAGNConv2d``."""
    if ndim not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim}")
    canonical = canonical_conv_name(name)
    if canonical.startswith(BOTTLENECK_PREFIX):
        return BOTTLENECK_FAMILIES[canonical.removeprefix(BOTTLENECK_PREFIX)][ndim - 1]
    return FAMILIES[canonical][ndim - 1]
