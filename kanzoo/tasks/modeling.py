"""Models for the tasks: build by name (with suggestions for typos), from a hub-ready folder or the Hub;
class names; saving the best model as a hub-ready folder.

A name is a kanzoo entry (``reskanet_18[.tag]``), a ``kanify:`` name (``kanify:resnet18``: timm's CNN with
KAN convolutions) or a plain timm name (``resnet18``: the CNN itself, a baseline one flag away).
"""

from __future__ import annotations

import difflib
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import timm
import torch
from torch import nn

import kanzoo
from kanzoo.hub import CheckpointMismatchError, HubError, check_pretrained_fit, resolve_tag
from kanzoo.hub.errors import RUNTIME_ERRORS
from kanzoo.models import KANSegmentationModel
from kanzoo.models.kanified import ENTRY, KANIFY_PREFIX, check_timm_name, create_timm_model

from . import checks
from .errors import TaskError, TaskRuntimeError
from .runs import atomic_write_text


LOCAL_DIR = "local-dir:"


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def is_segmentation(model: nn.Module) -> bool:
    """True for models that return per-pixel logits (every :class:`KANSegmentationModel`: UKANet, U2KANet)."""
    return isinstance(unwrap(model), KANSegmentationModel)


def is_folder_source(source: str) -> bool:
    """True when ``source`` names a local hub-ready folder (one holding ``config.json``), as a path or as
    ``local-dir:PATH``."""
    path = Path(source.removeprefix(LOCAL_DIR))
    return path.is_dir() and (path / "config.json").is_file()


def is_timm_name(name: str) -> bool:
    """True for a ``kanify:`` name or a plain timm name (a timm architecture that is not one of kanzoo's)."""
    arch = name.partition(".")[0]
    return name.startswith(KANIFY_PREFIX) or (arch != ENTRY and not kanzoo.is_model(arch) and timm.is_model(arch))


def check_model_name(name: str) -> None:
    """Raise a :class:`TaskError` suggesting close registered (or timm) names when ``name[.tag]`` is unknown."""
    arch, _, tag = name.partition(".")
    if is_timm_name(name):
        try:
            check_timm_name(name.removeprefix(KANIFY_PREFIX))
        except ValueError as err:
            raise TaskError(str(err)) from None
        return
    if kanzoo.is_model(arch):
        if tag and name not in kanzoo.list_models(arch, pretrained=True):
            tags = [n.partition(".")[2] for n in kanzoo.list_models(arch, pretrained=True)]
            have = f"its tags are: {', '.join(tags)}" if tags else f"{arch} has no pretrained weights yet"
            raise TaskError(f"unknown pretrained tag {tag!r} for {arch}; {have}")
        return
    if Path(name).exists():
        raise TaskError(f"{name} is a path but not a hub-ready folder (it has no config.json); pass a folder "
                        "written by save_pretrained or a registered model name")
    close = difflib.get_close_matches(arch, kanzoo.list_models(), n=3, cutoff=0.5)
    close += difflib.get_close_matches(arch, [n for n in timm.list_models() if n != ENTRY and n not in close], n=2,
                                       cutoff=0.75)
    hint = f"did you mean: {', '.join(close)}?" if close else "run `kanzoo list` to see every name"
    raise TaskError(f"unknown model {name!r}; {hint} (timm names work too: resnet18 is the CNN, kanify:resnet18 "
                    "its KAN version)")


def has_pretrained(name: str) -> bool:
    """True when the registry (timm's, for ``kanify:`` and timm names) has weights for ``name`` (``arch[.tag]``)."""
    if is_timm_name(name):
        source = name.removeprefix(KANIFY_PREFIX)
        available = timm.list_pretrained(f"{source.partition('.')[0]}.*")
    else:
        source = name
        available = kanzoo.list_models(name.partition(".")[0], pretrained=True)
    return source in available if "." in source else bool(available)


def _weights_fit(name: str, kwargs: dict[str, Any], what: str, opt_out: str) -> bool:
    """True when the registry has weights for ``name`` that fit ``create_model(name, **kwargs)`` (checked on the
    meta device, nothing downloaded); warns, naming the arguments, when it has weights that do not fit. For
    ``kanify:`` and timm names: whether timm has weights for it."""
    if not has_pretrained(name) or is_timm_name(name):
        return has_pretrained(name)
    try:
        check_pretrained_fit(name, **kwargs)
    except CheckpointMismatchError:
        arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k not in ("num_classes", "in_chans"))
        warnings.warn(f"{what}: the pretrained weights {resolve_tag(name)} do not fit the model arguments "
                      f"({arguments}), so it starts from random initialisation; drop those arguments to start from "
                      f"the weights, or pass {opt_out} to choose random initialisation without this warning",
                      stacklevel=2)
        return False
    return True


def _encoder_option(source: str, wanted: bool | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``{'pretrained_encoder': ...}`` for a model with a classification encoder (UKANet), read from a copy built on
    the meta device; ``wanted=None`` means: when the encoder's weights fit. Empty for other models."""
    if "pretrained_encoder" in kwargs:
        return {}
    with torch.device("meta"):
        probe = kanzoo.create_model(source, **kwargs)
    encoder = getattr(probe, "encoder_name", None)
    if encoder is None:
        if wanted:
            raise TaskError(f"{source} has no classification encoder to load pretrained weights into; drop "
                            "--pretrained-encoder")
        return {}
    if wanted is None:
        wanted = _weights_fit(encoder, probe.encoder_args, f"the encoder of {source}",
                              "pretrained_encoder=False (--no-pretrained-encoder)")
    return {"pretrained_encoder": wanted}


def create_task_model(source: str, *, pretrained: bool | None = None, pretrained_encoder: bool | None = False,
                      **kwargs: Any) -> nn.Module:
    """Build a model from a registered ``name[.tag]``, a ``kanify:`` or timm name, an ``hf-hub:`` id or a folder.

    ``pretrained=None`` loads weights when they exist and fit the model as configured (always for folders and
    ``hf-hub:``); otherwise it starts from random initialisation and warns when weights exist but do not fit.
    ``pretrained_encoder`` (for models with a classification encoder, e.g. UKANet, when not ``pretrained``):
    True loads the encoder's weights, None does so when they exist and fit, False leaves the model's default.
    ``kwargs`` go to the model (e.g. ``num_classes``); for saved models the head is reset instead when the class
    count differs. Arguments the model does not take or refuses are :class:`TaskError`s, and so are failures to
    fetch weights (:class:`TaskRuntimeError` for the network, the offline cache or a corrupt download).
    """
    checks.model_source(source)
    try:
        return _create(source, pretrained, pretrained_encoder, kwargs)
    except HubError as err:
        raise (TaskRuntimeError if isinstance(err, RUNTIME_ERRORS) else TaskError)(str(err)) from None
    except TaskError:
        raise
    except (TypeError, ValueError) as err:  # the model's constructor refused an argument
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TaskError(f"cannot build {source}: {reason} (check --model-arg)") from None


def _create(source: str, pretrained: bool | None, pretrained_encoder: bool | None, kwargs: dict[str, Any]
            ) -> nn.Module:
    if source.startswith("hf-hub:") or is_folder_source(source):
        num_classes = kwargs.pop("num_classes", None)
        folder = Path(source.removeprefix(LOCAL_DIR)).resolve()
        name = source if source.startswith("hf-hub:") else f"{LOCAL_DIR}{folder}"
        model = kanzoo.create_model(name, pretrained=True, **kwargs)
        if num_classes is not None and num_classes != getattr(model, "num_classes", num_classes):
            if is_segmentation(model):
                raise TaskError(f"{source} predicts {model.num_classes} classes but the data has {num_classes}; "
                                "start from a registered architecture name instead")
            model.reset_classifier(num_classes)
        return model
    check_model_name(source)
    if pretrained is None:
        pretrained = _weights_fit(source, kwargs, source, "pretrained=False (--no-pretrained)")
    if is_timm_name(source) and not source.startswith(KANIFY_PREFIX):
        return create_timm_model(source, pretrained=pretrained, **kwargs)
    if not pretrained and pretrained_encoder is not False:
        kwargs.update(_encoder_option(source, pretrained_encoder, kwargs))
    try:
        return kanzoo.create_model(source, pretrained=pretrained, **kwargs)
    except CheckpointMismatchError as err:
        opt_out = "--no-pretrained" if pretrained else "--no-pretrained-encoder"
        raise TaskError(f"{source}: {err}; or pass {opt_out} to start from random initialisation") from None


def label_names(model: nn.Module) -> list[str] | None:
    """Class names of a model's outputs: saved ones, ImageNet's for ImageNet heads, else None."""
    cfg = getattr(unwrap(model), "pretrained_cfg", None) or {}
    names = cfg.get("label_names")
    if names:
        return [names[str(i)] if isinstance(names, dict) and str(i) in names else names[i]
                for i in range(len(names))]
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(unwrap(model))
    if subset is None:
        return None
    info = ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(unwrap(model).num_classes)]


def set_task_cfg(model: nn.Module, *, classes: Sequence[str] | None, input_size: tuple[int, int, int] | None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
    """Record the fine-tuned class names and preprocessing in the model's pretrained cfg (saved with it)."""
    model = unwrap(model)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if classes is not None:
        cfg["label_names"] = list(classes)
        cfg["num_classes"] = len(classes)
        cfg.pop("label_descriptions", None)
    if input_size is not None:
        cfg["input_size"] = tuple(input_size)
        cfg.pop("test_input_size", None)
    if mean is not None:
        cfg["mean"], cfg["std"] = tuple(mean), tuple(std)
    model.pretrained_cfg = cfg


def save_task_model(model: nn.Module, folder: Path, *, metrics: dict[str, float] | None = None,
                    dataset: str | None = None) -> Path:
    """Save a hub-ready folder with :func:`kanzoo.save_pretrained`, keeping the class names in config.json."""
    model = unwrap(model)
    path = Path(kanzoo.save_pretrained(model, folder, metrics=metrics, dataset=dataset))
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    config_path = path / "config.json"
    if names and config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("label_names") != list(names):
            config["label_names"] = list(names)
            atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
    return path
