"""``kanify:`` names: any timm CNN, with the weights timm fetches for it, turned into KAN convolutions by ``kanify``.

``create_model('kanify:resnet18.a1_in1k', pretrained=True, conv='kagn', degree=3)`` builds timm's
``resnet18`` (timm downloads the ``a1_in1k`` weights; a failure is one of the hub's one-line errors, through
the loader's ``source_weights``), then converts its convolutions exactly. The family's arguments go to
``kanify``, every other argument to ``timm.create_model``.

``save_pretrained`` writes a kanified model with ``"architecture": "kanify"`` and the recipe in
``model_args``: ``source`` (the timm architecture), ``conv``, ``filter``, ``converted`` (the names of the
converted convolutions), the family's arguments and timm's. The entry point ``kanify`` registered here
rebuilds it from ``'hf-hub:'`` / ``'local-dir:'``: the source architecture without weights, exactly the
recorded convolutions converted, then the saved weights loaded strictly; the source CNN's weights are not
fetched again.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Mapping, Sequence, Union

import timm
from timm.models import register_model, resolve_pretrained_cfg, split_model_name_tag
from timm.models._builder import pretrained_cfg_for_features
from torch import nn

from ..layers import canonical_conv_name, get_conv
from ._blocks import accepted_kwargs
from ._builder import check_saved_source, load_saved_weights, source_weights
from ._kanify import _SET_BY_KANIFY, FILTER_NAMES, ConvFilter, kanify
from ._saved import SAVED_SOURCES, SOURCE_FIELDS

__all__ = ["ENTRY", "KANIFY_PREFIX", "RECIPE_KEYS", "check_timm_name", "create_kanified",
           "create_timm_model", "split_family_kwargs"]

KANIFY_PREFIX = "kanify:"
ENTRY = "kanify"
"""The registered architecture that rebuilds saved kanified models (``architecture`` in their ``config.json``)."""
RECIPE_KEYS = ("source", "conv", "filter", "converted")


def check_timm_name(name: str) -> tuple[str, str | None]:
    """``(architecture, tag)`` of a timm registry name ``'arch[.tag]'``; a ``ValueError`` naming the fix otherwise."""
    if not isinstance(name, str) or not name or any(char in name for char in ":/\\"):
        raise ValueError(f"{name!r} is not a timm architecture name such as 'resnet18' or 'resnet18.a1_in1k' "
                         "(to kanify a model from the Hub or a folder, load it and call kanzoo.kanify(model))")
    arch, tag = split_model_name_tag(name)
    if arch == ENTRY or not timm.is_model(arch):
        close = difflib.get_close_matches(arch, [n for n in timm.list_models() if n != ENTRY], n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown timm architecture {arch!r}{hint} (timm.list_models('{arch[:3]}*') lists "
                         "timm's names)")
    if tag:
        tags = [tagged.partition(".")[2] for tagged in timm.list_pretrained(f"{arch}.*")]
        if tag not in tags:
            have = f"its tags: {', '.join(tags)}" if tags else "timm has no pretrained weights for it"
            raise ValueError(f"unknown pretrained tag {tag!r} for {arch}; {have}")
    return arch, tag or None


def _family_args(conv: str) -> set[str]:
    return accepted_kwargs(get_conv(canonical_conv_name(conv), 2)) - _SET_BY_KANIFY


def split_family_kwargs(conv: str, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(family arguments, the rest)``: the names the KAN conv family ``conv`` takes go to ``kanify``."""
    accepted = _family_args(conv)
    return ({k: v for k, v in kwargs.items() if k in accepted}, {k: v for k, v in kwargs.items() if k not in accepted})


def create_timm_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` for a timm name ``'arch[.tag]'``, with the hub's one-line errors for its weights."""
    check_timm_name(name)
    return _build_timm(name, pretrained, name, "", kwargs)


def _build_timm(name: str, pretrained: bool, shown_as: str, hint: str, kwargs: dict[str, Any]) -> nn.Module:
    arch, tag = split_model_name_tag(name)
    try:
        if not pretrained:
            return timm.create_model(name, pretrained=False, **kwargs)
        cfg = resolve_pretrained_cfg(arch, pretrained_cfg=kwargs.get("pretrained_cfg") or tag or None,
                                     pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay")).to_dict()
        with source_weights(cfg, shown_as):
            return timm.create_model(name, pretrained=True, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise TypeError(f"{arch}: {str(err).splitlines()[0]}{hint}") from None


def create_kanified(source: str, pretrained: bool = False, *, conv: str = "kagn",
                    filter: Union[str, ConvFilter, None] = None, converted: Sequence[str] | None = None,
                    conv_kwargs: Mapping[str, Any] | None = None, pretrained_cfg: Any = None,
                    pretrained_cfg_overlay: dict[str, Any] | None = None, cache_dir: Any = None,
                    pretrained_model_args: Mapping[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build the timm model ``source`` (``'arch[.tag]'``) and kanify it; see the module doc.

    ``converted`` (the names ``save_pretrained`` records) converts exactly those convolutions, whatever
    ``filter`` says (then only a name, kept in ``kanify_record``). A ``pretrained_cfg`` whose source is
    ``'hf-hub'`` or ``'local-dir'`` (what timm passes for a saved model) loads the saved kanified weights.
    """
    check_saved_source(pretrained_cfg, pretrained_model_args, ENTRY)
    arch, _ = check_timm_name(source)
    family_kwargs, timm_kwargs = split_family_kwargs(conv, kwargs)
    family_kwargs = {**(conv_kwargs or {}), **family_kwargs}
    saved = dict(pretrained_cfg) if isinstance(pretrained_cfg, Mapping) \
        and pretrained_cfg.get("source") in SAVED_SOURCES else None
    hint = (f"; a kanify: name takes conv=, filter=, the arguments of conv={canonical_conv_name(conv)!r} "
            f"({', '.join(sorted(_family_args(conv)))}) and timm.create_model's")
    features = bool(timm_kwargs.get("features_only"))
    if saved is None:
        overrides = dict(pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay,
                         cache_dir=cache_dir)
        model = _build_timm(source, pretrained, KANIFY_PREFIX + source, hint, {**timm_kwargs, **overrides})
    else:
        model = _build_timm(arch, False, KANIFY_PREFIX + arch, hint, timm_kwargs)
    if converted is None:
        kanify(model, conv, filter=filter, **family_kwargs)
    else:
        wanted = _converted_names(converted, filter)
        if features:  # the extractor's names, mapped back to the full model's that the recipe holds
            kanify(model, conv, filter=lambda name, module: any(n in wanted for n in _full_names(name)),
                   **family_kwargs)
        else:
            kanify(model, conv, filter=lambda name, module: name in wanted, **family_kwargs)
            missing = sorted(wanted - set(model.kanify_record.converted))
            if missing:
                raise ValueError(f"the kanify recipe converts {len(missing)} convolution(s) that {arch} as built does "
                                 f"not have as plain convolutions: {missing[:5]}; build it with the model arguments "
                                 "(and the timm version) it was saved with")
        model.kanify_record.filter = filter if isinstance(filter, str) else "custom"
    if saved is not None:
        base = {k: v for k, v in model.pretrained_cfg.items() if k not in SOURCE_FIELDS}
        cfg = {**base, **saved, "architecture": arch}
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(cfg) if features else cfg
        if pretrained:
            load_saved_weights(model, model.pretrained_cfg, cache_dir, _feature_keys(model) if features else None)
    return model


def _converted_names(converted: Sequence[str], filter: Any) -> set[str]:
    if isinstance(converted, str) or not all(isinstance(name, str) for name in converted):
        raise TypeError(f"converted= is a list of module names (what save_pretrained records), got {converted!r}")
    if filter is not None and filter not in FILTER_NAMES:
        raise ValueError(f"with converted=, filter= is only the recorded filter's name: one of {list(FILTER_NAMES)} "
                         f"or None, got {filter!r}")
    return set(converted)


def _full_names(name: str) -> list[str]:
    """The names a module of a ``features_only`` extractor may have in the full model: its own, or its first
    component split back (timm's ``flatten_sequential`` turns ``stages.0`` into ``stages_0``)."""
    head, dot, rest = name.partition(".")
    return [name] + [f"{head[:i]}.{head[i + 1:]}{dot}{rest}" for i, char in enumerate(head) if char == "_"]


def _feature_keys(model: nn.Module) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Map a full model's saved state dict onto the keys of the ``features_only`` extractor ``model``."""
    def rename(state: dict[str, Any]) -> dict[str, Any]:
        mapped = {}
        for key in model.state_dict():
            found = next((name for name in _full_names(key) if name in state), None)
            if found is not None:
                mapped[key] = state[found]
        return mapped

    return rename


def _entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A timm CNN with KAN convolutions: ``source='resnet18'``, ``conv=``, ``filter=`` or ``converted=``, family and
    timm arguments (what a saved kanified model's config.json holds; ``create_model('kanify:...')`` builds new ones)."""
    if "source" not in kwargs:
        raise TypeError("the kanify entry point needs source='<timm architecture>'; "
                        "or build kanzoo.create_model('kanify:resnet18', ...)")
    return create_kanified(kwargs.pop("source"), pretrained, **kwargs)


_entry.__name__ = _entry.__qualname__ = ENTRY
register_model(_entry)
