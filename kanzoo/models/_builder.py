"""The one place where every kanzoo architecture is built (timm's builder plus kanzoo's weight loading).

Pretrained weights go through a loader that the hub floor installs with :func:`set_pretrained_loader`
(``import kanzoo`` does it). The loader fetches the state dict before the model is built (so a
missing file fails fast), then prepares it for the built model (format conversion, ``in_chans``
adaptation, head reset, strict key checks); timm's builder does the rest (features_only wrapping).
Without a loader, timm's own pretrained loading is used. A build of a manifest tag (named, or the
default tag when its weights are loaded) takes the tag's ``model_args`` as defaults of its arguments.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Mapping, Protocol

from timm.models import build_model_with_cfg, resolve_pretrained_cfg
from torch import nn

from ._pretrained import build_tag, tag_model_args
from ._saved import SAVED_SOURCES, saved_config_problems

StateDict = dict[str, Any]

# placeholder handed to timm as the in-memory source; the filter below swaps in the real state dict
_PENDING = "kanzoo.pending_state_dict"


class PretrainedLoader(Protocol):
    """What the hub provides: fetch a checkpoint for a pretrained cfg, then fit it to a built model."""

    def fetch(self, pretrained_cfg: dict[str, Any], cache_dir: Any = None) -> StateDict: ...

    def prepare(self, state: StateDict, model: nn.Module, pretrained_cfg: dict[str, Any]) -> StateDict: ...

    def check_source(self, name: str) -> None: ...

    def source_weights(self, pretrained_cfg: dict[str, Any], name: str) -> ContextManager[None]: ...

    def check_saved(self, pretrained_cfg: Mapping[str, Any], model_args: Mapping[str, Any], name: str) -> None: ...


_loader: PretrainedLoader | None = None


def set_pretrained_loader(loader: PretrainedLoader | None) -> None:
    """Install (or remove, with None) the loader used for ``pretrained=True``."""
    global _loader
    _loader = loader


def check_model_source(name: str) -> None:
    """For ``'hf-hub:'`` / ``'local-dir:'`` names: let the loader fetch the config first, with its clear errors."""
    if _loader is not None:
        _loader.check_source(name)


def check_saved_source(pretrained_cfg: Any, model_args: Mapping[str, Any] | None, name: str) -> None:
    """Before building a model from a saved config (timm passes a ``pretrained_cfg`` whose source is ``'hf-hub'`` or
    ``'local-dir'``): refuse a config that says more than an architecture (see :mod:`kanzoo.models._saved`), with the
    loader's error (a ``ValueError`` without one)."""
    if not isinstance(pretrained_cfg, Mapping) or pretrained_cfg.get("source") not in SAVED_SOURCES:
        return
    if _loader is not None:
        _loader.check_saved(pretrained_cfg, model_args or {}, name)
        return
    problems = saved_config_problems(pretrained_cfg, model_args, ("hf_hub_id", "file", "source"))
    if problems:
        raise ValueError(f"the saved config of {name!r}: {'; '.join(problems)}")


def source_weights(pretrained_cfg: dict[str, Any], name: str) -> ContextManager[None]:
    """The context in which timm fetches the pretrained weights of ``name`` (``arch.tag``) for ``pretrained_cfg``.

    The loader checks that the cfg names weights and turns download failures into its one-line errors.
    """
    return _loader.source_weights(pretrained_cfg, name) if _loader is not None else contextlib.nullcontext()


def load_saved_weights(model: nn.Module, pretrained_cfg: dict[str, Any], cache_dir: Any = None,
                       rename: Callable[[StateDict], StateDict] | None = None) -> None:
    """Load the weights a ``'hf-hub:'`` / ``'local-dir:'`` cfg points at into ``model``, through the loader's checks.

    ``rename`` (a function of the state dict) maps the saved keys to the model's first.
    """
    if _loader is None:
        raise RuntimeError("no pretrained-weights loader is installed; `import kanzoo` installs the hub's")
    state = _loader.fetch(pretrained_cfg, cache_dir=cache_dir)
    if rename is not None:
        state = rename(state)
    model.load_state_dict(_loader.prepare(state, model, pretrained_cfg))


def build_kan_model(model_cls: type[nn.Module], variant: str, pretrained: bool = False, *,
                    feature_cfg: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build ``model_cls`` for the registry entry ``variant`` with its pretrained cfg (timm-style).

    A tag's ``model_args`` (see :func:`kanzoo.models._pretrained.build_tag`) fill in arguments not given, and
    are recorded with the model's arguments (``save_pretrained`` writes them to ``config.json``).
    """
    check_saved_source(kwargs.get("pretrained_cfg"), kwargs.get("pretrained_model_args"), variant)
    default_tag = resolve_pretrained_cfg(variant).tag
    tag = build_tag(pretrained, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay"), default_tag)
    from_tag = {key: value for key, value in tag_model_args(variant, tag).items() if key not in kwargs}
    model = _build(model_cls, variant, pretrained, feature_cfg, {**from_tag, **kwargs})
    # timm records the arguments given to create_model in _model_args (save_config_for_hf writes them as the
    # config's model_args); the tag's belong there as well, so that a saved model rebuilds the same way
    if from_tag:
        model._model_args = {**getattr(model, "_model_args", {}), **from_tag}
    return model


def _build(model_cls: type[nn.Module], variant: str, pretrained: bool, feature_cfg: dict[str, Any] | None,
           kwargs: dict[str, Any]) -> nn.Module:
    if not pretrained or _loader is None:
        return build_model_with_cfg(model_cls, variant, pretrained, feature_cfg=feature_cfg, **kwargs)
    loader = _loader
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.pop("pretrained_cfg", None),
                                 pretrained_cfg_overlay=kwargs.pop("pretrained_cfg_overlay", None)).to_dict()
    state = loader.fetch(cfg, cache_dir=kwargs.pop("cache_dir", None))
    if "in_chans" in kwargs and cfg.get("input_size"):
        # the state dict handed to timm is already adapted to in_chans, so timm must not adapt it again
        cfg["input_size"] = (kwargs["in_chans"], *cfg["input_size"][1:])
    full_cfg = dict(cfg)
    # timm sees only the placeholder source and no classifier: the loader has already fitted the head
    for key in ("state_dict", "file", "url", "source", "classifier"):
        cfg.pop(key, None)
    cfg["state_dict"] = {_PENDING: True}

    def fit(_placeholder: StateDict, model: nn.Module) -> StateDict:
        return loader.prepare(state, model, full_cfg)

    model = build_model_with_cfg(model_cls, variant, True, pretrained_cfg=cfg, feature_cfg=feature_cfg,
                                 pretrained_filter_fn=fit, **kwargs)
    model.pretrained_cfg.pop("state_dict", None)
    keep = ("file", "url", "source") + (("classifier",) if "num_classes" in model.pretrained_cfg else ())
    model.pretrained_cfg.update({k: full_cfg[k] for k in keep if k in full_cfg})
    return model
