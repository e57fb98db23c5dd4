"""kanzoo's view of timm's registry: create, list and check kanzoo's own entries (and ``kanify:`` names)."""

from __future__ import annotations

import difflib
from typing import Any

import timm
from timm.models import get_arch_name, model_entrypoint
from torch import nn

from ._builder import check_model_source
from .kanified import ENTRY, KANIFY_PREFIX, check_timm_name, create_kanified
from .pruned import PRUNED_ENTRY

_PACKAGE = "kanzoo."
_SOURCE_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def _is_kanzoo_architecture(arch: str) -> bool:
    """Whether ``arch`` is a registered entry point that lives in one of kanzoo's modules (``kanify`` and
    ``kanzoo_pruned``, which rebuild saved kanified and pruned models, are not zoo entries)."""
    return (arch not in (ENTRY, PRUNED_ENTRY) and timm.is_model(arch)
            and model_entrypoint(arch).__module__.startswith(_PACKAGE))


def _kanzoo_architectures() -> list[str]:
    """Names of the registered entry points that live in kanzoo's modules (sorted as timm sorts)."""
    return [name for name in timm.list_models() if _is_kanzoo_architecture(name)]


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """kanzoo's registry entries (sorted), optionally filtered by a wildcard ``pattern`` like ``'reskanet*'``.

    With ``pretrained=True`` only entries with downloadable weights are listed, as ``'arch.tag'`` names.
    """
    names = timm.list_models(filter=pattern or "", pretrained=pretrained)
    return [name for name in names if _is_kanzoo_architecture(get_arch_name(name))]


def is_model(name: str) -> bool:
    """Whether ``name`` (``'arch'`` or ``'arch.tag'``) is one of kanzoo's registry entries, or a ``kanify:`` name
    of a timm architecture (``'kanify:resnet18'``)."""
    if name.startswith(KANIFY_PREFIX):
        try:
            check_timm_name(name.removeprefix(KANIFY_PREFIX))
        except ValueError:
            return False
        return True
    return _is_kanzoo_architecture(get_arch_name(name))


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a kanzoo model by registry name, exactly like ``timm.create_model``.

    ``name`` is an entry (``'reskanet_18'``), an entry with a weights tag, a timm source prefix
    (``'hf-hub:org/repo'``, ``'local-dir:/path'``), or ``'kanify:<timm name>[.<tag>]'``: timm's model (its
    weights fetched by timm with ``pretrained=True``) with its convolutions turned into KAN convolutions by
    :func:`kanzoo.kanify` (``conv=``, ``filter=`` and the family's arguments go to ``kanify``, the rest to
    ``timm.create_model``). ``kwargs`` go to the architecture: ``conv=``, ``groups=``, family arguments
    (``degree=``...), ``in_chans``, ``num_classes``, ``features_only``...
    """
    if name.startswith(KANIFY_PREFIX):
        return create_kanified(name.removeprefix(KANIFY_PREFIX), pretrained, **kwargs)
    if not name.startswith(_SOURCE_PREFIXES) and not is_model(name):
        raise ValueError(_unknown_model_message(name))
    check_model_source(name)
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def _unknown_model_message(name: str) -> str:
    ours = sorted(_kanzoo_architectures())
    close = difflib.get_close_matches(get_arch_name(name), ours, n=3)
    message = f"unknown kanzoo model {name!r}"
    if timm.is_model(name):
        message += (f" (it is a timm model: build it with timm.create_model, or its KAN version with "
                    f"create_model('{KANIFY_PREFIX}{name}'))")
    if close:
        message += f"; did you mean {' or '.join(map(repr, close))}?"
    return message + " (kanzoo.list_models() lists every entry; `kanzoo list` prints them with sizes)"
