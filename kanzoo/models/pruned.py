"""Pruned models: the structural changes pruning makes, recorded so that a saved pruned model rebuilds exactly.

A pruning stage maps KAN conv names to what each became (every value JSON: numbers, lists of numbers, a name):

- ``{"degree": 2}`` (any integer family argument, only lowered): the same layer with a smaller basis
  (:func:`~kanzoo.layers.partial.smaller_kan_conv`);
- ``{"kan_channels": [0, 5, 7]}``, optionally with family arguments: a
  :class:`~kanzoo.layers.partial.PartialKANConv` in which only those input channels keep their bases;
- ``{"kan_channels": [], "linear_activation": "identity"}``: a plain convolution (plus the layer's norm and
  activation).

``model.pruning_record`` (a :class:`PruningRecord`) lists the stages applied to a model. ``save_pretrained`` saves
a pruned model as the architecture ``kanzoo_pruned`` with ``pruned_from`` (the architecture it was built as),
``pruned_layers`` (the stages) and that architecture's own arguments; the entry point registered here rebuilds
the architecture, applies the stages and loads the saved weights strictly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import timm
from timm.models import register_model
from torch import nn

from ..layers import KANConvBase
from ..layers.partial import PartialKANConv, smaller_kan_conv
from ._builder import load_saved_weights
from ._saved import LOCATION_ARGS, SAVED_SOURCES, SOURCE_FIELDS

__all__ = ["PRUNED_ENTRY", "PRUNED_KEYS", "PruningRecord", "apply_pruning", "pruned_layer"]

PRUNED_ENTRY = "kanzoo_pruned"
"""The registered architecture that rebuilds saved pruned models (``architecture`` in their ``config.json``)."""
PRUNED_KEYS = ("pruned_from", "pruned_layers")
_LAYER_KEYS = ("kan_channels", "linear_activation")
_LINEAR_ACTIVATIONS = ("identity",)


@dataclasses.dataclass
class PruningRecord:
    """The pruning stages applied to a model, in order: each maps a KAN conv's name to what it became."""

    stages: list[dict[str, dict[str, Any]]] = dataclasses.field(default_factory=list)


def pruned_layer(layer: KANConvBase, change: Mapping[str, Any]) -> nn.Module:
    """What ``layer`` becomes under one entry of a pruning stage (see the module doc)."""
    if not isinstance(change, Mapping) or not change:
        raise ValueError(f"a pruned layer is described by a non-empty object, got {change!r}")
    overrides = {key: value for key, value in change.items() if key not in _LAYER_KEYS}
    activation = change.get("linear_activation")
    if activation is not None and activation not in _LINEAR_ACTIVATIONS:
        raise ValueError(f"linear_activation must be one of {list(_LINEAR_ACTIVATIONS)}, got {activation!r}")
    if "kan_channels" not in change:
        if activation is not None:
            raise ValueError("linear_activation needs kan_channels (the channels that keep their bases)")
        return smaller_kan_conv(layer, **overrides)
    channels = change["kan_channels"]
    if not isinstance(channels, Sequence) or isinstance(channels, str):
        raise ValueError(f"kan_channels must be a list of input channel indices, got {channels!r}")
    return PartialKANConv(layer, list(channels), linear_activation=activation, **overrides)


def apply_pruning(model: nn.Module, stages: Sequence[Mapping[str, Mapping[str, Any]]]) -> nn.Module:
    """Replace the KAN convs that each stage names with their pruned forms (in place; also recorded in
    ``model.pruning_record``). Returns the model."""
    if isinstance(stages, (str, Mapping)) or not isinstance(stages, Sequence):
        raise ValueError(f"pruning stages are a list of objects mapping layer names to changes, got {stages!r}")
    record = getattr(model, "pruning_record", None)
    done = list(record.stages) if isinstance(record, PruningRecord) else []
    for stage in stages:
        if not isinstance(stage, Mapping):
            raise ValueError(f"a pruning stage maps layer names to changes, got {stage!r}")
        modules = dict(model.named_modules())
        for name, change in stage.items():
            layer = modules.get(name)
            if not isinstance(layer, KANConvBase):
                what = "no module" if layer is None else f"a {type(layer).__name__}, not a KAN convolution"
                raise ValueError(f"the pruning record names {name!r}, but the model has {what} there; rebuild it with "
                                 "the architecture and arguments it was pruned from")
            try:
                replacement = pruned_layer(layer, change)
            except (TypeError, ValueError) as err:
                raise ValueError(f"cannot prune {name!r}: {err}") from None
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, replacement)
        done.append({name: dict(change) for name, change in stage.items()})
    model.pruning_record = PruningRecord(done)
    return model


def _entry(pretrained: bool = False, *, pruned_from: str | None = None, pruned_layers: Any = None,
           pretrained_cfg: Any = None, pretrained_cfg_overlay: Any = None, cache_dir: Any = None,
           pretrained_model_args: Mapping[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """A pruned model: the architecture ``pruned_from`` built with ``kwargs``, then the stages ``pruned_layers``
    (what a saved pruned model's config.json holds; ``kanzoo.inspect.prune_model`` makes new ones)."""
    if not isinstance(pruned_from, str) or pruned_layers is None:
        raise TypeError(f"the {PRUNED_ENTRY} entry point needs pruned_from='<architecture>' and pruned_layers=[...] "
                        "(the config.json of a saved pruned model holds them)")
    if pruned_from == PRUNED_ENTRY or not timm.is_model(pruned_from):
        raise ValueError(f"pruned_from={pruned_from!r} is not an architecture a pruned model can be built from")
    bad = sorted((set(kwargs) | set(pretrained_model_args or {})) & LOCATION_ARGS)
    if bad:
        raise ValueError(f"a pruned model's arguments may not set {bad}: they describe an architecture, and its "
                         "weights come from the same repository or folder")
    if kwargs.get("features_only"):
        raise ValueError("features_only is not available for pruned models; build the whole model and call its "
                         "forward_features, or prune a features_only model built from the original")
    model = timm.create_model(pruned_from, pretrained=False, **kwargs)
    apply_pruning(model, pruned_layers)
    saved = dict(pretrained_cfg) if isinstance(pretrained_cfg, Mapping) \
        and pretrained_cfg.get("source") in SAVED_SOURCES else None
    if saved is not None:
        base = {k: v for k, v in model.pretrained_cfg.items() if k not in SOURCE_FIELDS}
        model.pretrained_cfg = model.default_cfg = {**base, **saved,
                                                    "architecture": model.pretrained_cfg["architecture"]}
        if pretrained:
            load_saved_weights(model, model.pretrained_cfg, cache_dir)
    elif pretrained:
        raise ValueError(f"{PRUNED_ENTRY} has no weights of its own; load a saved pruned model with "
                         "create_model('local-dir:FOLDER', pretrained=True) or 'hf-hub:org/repo'")
    return model


_entry.__name__ = _entry.__qualname__ = PRUNED_ENTRY
register_model(_entry)
