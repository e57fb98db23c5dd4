"""The names of the KAN convolution families: each family registers here once, models look classes up by name.

A family module decorates its family class with :func:`register_family` (name, aliases, benchmark
defaults) and then declares its ``1d``/``2d``/``3d`` classes (``ndim = 1``, ...) and bottleneck classes
(``kan_conv = ...``); those register themselves under the family's name as they are defined
(``KANConvBase.__init_subclass__`` and ``BottleneckKANConvBase.__init_subclass__`` call :func:`add_conv`
and :func:`add_bottleneck`). Nothing else needs to know a family exists.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from torch import nn

BOTTLENECK_PREFIX = "bottleneck_"

FAMILIES: dict[str, tuple[type[nn.Module], ...]] = {}
"""``{name: (Conv1d, Conv2d, Conv3d)}`` of every registered family, in registration order."""
BOTTLENECK_FAMILIES: dict[str, tuple[type[nn.Module], ...]] = {}
"""``{name: (BottleneckConv1d, BottleneckConv2d, BottleneckConv3d)}`` of every registered family."""
ALIASES: dict[str, str] = {}
"""``{alias: name}``, e.g. ``'gram' -> 'kagn'``."""
BENCH_KWARGS: dict[str, dict[str, Any]] = {}
"""Family arguments the layer benchmark uses: degree 3 or the family's equivalent."""

_Family = TypeVar("_Family", bound=type)


def register_family(name: str, *, aliases: tuple[str, ...] = (), bench_kwargs: dict[str, Any] | None = None
                    ) -> Callable[[_Family], _Family]:
    """Class decorator that names a KAN conv family: ``@register_family('kagn', aliases=('gram',))``.

    Sets the class' ``family`` attribute; the family's dimensioned and bottleneck classes then register
    under that name as they are defined.
    """
    if name in FAMILIES or name in ALIASES:
        raise ValueError(f"KAN conv family {name!r} is already registered")

    def decorate(cls: _Family) -> _Family:
        cls.family = name
        FAMILIES[name] = ()
        BOTTLENECK_FAMILIES[name] = ()
        ALIASES.update({alias: name for alias in aliases})
        BENCH_KWARGS[name] = dict(bench_kwargs or {})
        return cls

    return decorate


def _add(table: dict[str, tuple[type[nn.Module], ...]], family: str, ndim: int, cls: type[nn.Module]) -> None:
    if family not in table:
        raise ValueError(f"{cls.__name__} belongs to family {family!r}, which no @register_family names")
    classes = table[family]
    if len(classes) != ndim - 1:
        raise ValueError(f"{cls.__name__}: declare a family's classes in the order 1d, 2d, 3d "
                         f"(family {family!r} has {len(classes)} so far)")
    table[family] = (*classes, cls)


def add_conv(family: str, ndim: int, cls: type[nn.Module]) -> None:
    """Record ``cls`` as the ``ndim``-d KAN convolution of ``family``."""
    _add(FAMILIES, family, ndim, cls)


def add_bottleneck(family: str, ndim: int, cls: type[nn.Module]) -> None:
    """Record ``cls`` as the ``ndim``-d bottleneck KAN convolution of ``family``."""
    _add(BOTTLENECK_FAMILIES, family, ndim, cls)


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
