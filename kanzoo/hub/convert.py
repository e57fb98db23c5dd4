"""Fit a checkpoint to a built model: format converters, input-channel adaptation, head reset, strict checks.

Input-channel adaptation (``in_chans != 3`` with pretrained weights) works like timm's
``adapt_input_conv`` but on each input-side weight of the first layer. A fused KAN conv weight
``(O, C * E, *k)`` (``E`` = base branch + bases, channel-major) is viewed as ``(O, C, E, *k)`` and
adapted over ``C``: for one input channel the RGB weights are summed; for ``n`` channels they are
repeated to ``n`` and scaled by ``C / n``, so a constant input gives the same pre-activation as before.
Plain conv weights (the bottleneck's ``inner_proj`` and ``base_conv``) are adapted the same way with ``E = 1``.

The ``timm_resnet`` and ``timm_densenet`` converters map timm's ResNet and DenseNet state dicts (e.g.
torchvision's ImageNet weights as timm hosts them) onto ResKANet and DenseKANet (``preact=True``): each
conv weight ``(O, C, *k)`` goes into the base-branch slot of the fused KAN weight, ``(O, C, E, *k)[:, :, 0]``,
and the ``E - 1`` basis slots are zero; every other tensor is copied. With an identity base branch the KAN
then computes the CNN exactly.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, NamedTuple

import torch
from torch import nn

from ..layers import KANConvBase
from ..models.vggkan import convert_tck_vgg_state_dict, is_tck_vgg_state_dict
from .errors import CheckpointMismatchError

__all__ = ["CONVERTERS", "Converter", "adapt_input_channels", "convert_state_dict", "convert_timm_densenet",
           "convert_timm_resnet", "prepare_state_dict", "unwrap_checkpoint"]


class Converter(NamedTuple):
    """A state-dict format: how to recognise it and how to map it to kanzoo's keys.

    ``convert(state, model)`` gets the built model (or None outside a model load) for layouts that depend on
    it, e.g. the responses per channel of each KAN conv.
    """

    detect: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, torch.Tensor], nn.Module | None], dict[str, torch.Tensor]]
    description: str


_KAN, _COPY = "kan", "copy"
# (source key, target key, kind): _KAN puts a conv weight into the base slot of a KAN conv, _COPY copies
_TIMM_RESNET_KEYS = (
    (r"(conv1|layer\d+\.\d+\.conv\d)\.weight", r"\1.weight", _KAN),
    (r"bn1\.(\w+)", r"conv1.norm.\1", _COPY),
    (r"(layer\d+\.\d+)\.bn(\d)\.(\w+)", r"\1.conv\2.norm.\3", _COPY),
    (r"(layer\d+\.\d+\.downsample\.[01]\.\w+)", r"\1", _COPY),
    (r"fc\.(weight|bias)", r"head.fc.\1", _COPY),
)
_TIMM_DENSENET_KEYS = (  # torchvision's own files spell the dense layers' norm1 and conv1 as norm.1 and conv.1
    (r"features\.conv0\.weight", r"features.conv0.weight", _KAN),
    (r"features\.norm0\.(\w+)", r"features.conv0.norm.\1", _COPY),
    (r"(features\.denseblock\d+\.denselayer\d+)\.conv\.?([12])\.weight", r"\1.conv\2.weight", _KAN),
    (r"(features\.denseblock\d+\.denselayer\d+)\.norm\.?([12])\.(\w+)", r"\1.norm\2.\3", _COPY),
    (r"(features\.transition\d+)\.conv\.weight", r"\1.conv.weight", _KAN),
    (r"(features\.transition\d+\.norm|features\.norm5)\.(\w+)", r"\1.\2", _COPY),
    (r"classifier\.(weight|bias)", r"head.fc.\1", _COPY),
)


def _into_base_slot(weight: torch.Tensor, name: str, model: nn.Module) -> torch.Tensor:
    """A conv weight ``(O, C, *k)`` as the fused weight of the KAN conv ``name``: base slot ``weight``, bases zero."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return weight  # the model has no such conv: the strict check reports the key as unexpected
    if not isinstance(module, KANConvBase):
        raise CheckpointMismatchError(f"{name} is a {type(module).__name__}, not a plain KAN conv: a CNN's weights "
                                      "go into the base branch of each KAN conv; use a plain family (e.g. conv='kacn', "
                                      "the tag's), not a bottleneck one")
    if module.base_activation is None:
        raise CheckpointMismatchError(f"{name} has no base branch (base_activation=None), which a CNN's weights go "
                                      "into; keep the tag's base_activation='identity'")
    out, channels, *kernel = weight.shape
    fused = weight.new_zeros(out, channels, module.num_responses, *kernel)
    fused[:, :, 0] = weight
    return fused.reshape(out, channels * module.num_responses, *kernel)


def _convert_cnn(state: Mapping[str, torch.Tensor], model: nn.Module | None,
                 rules: tuple[tuple[str, str, str], ...], what: str) -> dict[str, torch.Tensor]:
    if model is None:
        raise CheckpointMismatchError(f"converting {what} weights needs the built model (the responses of its KAN "
                                      "convs): load them through create_model(..., pretrained=True)")
    compiled = [(re.compile(pattern), target, kind) for pattern, target, kind in rules]
    out: dict[str, torch.Tensor] = {}
    leftover = []
    for key, value in state.items():
        for pattern, target, kind in compiled:
            match = pattern.fullmatch(key)
            if match:
                name = match.expand(target)
                out[name] = _into_base_slot(value, name.removesuffix(".weight"), model) if kind == _KAN else value
                break
        else:
            leftover.append(key)
    if leftover:
        raise KeyError(f"{len(leftover)} key(s) it does not know: {sorted(leftover)[:8]}")
    own = model.state_dict()
    for key in [k for k in out if k.endswith(".running_var")]:  # files without the counter (older torchvision)
        counter = key.removesuffix("running_var") + "num_batches_tracked"
        if counter in own and counter not in out:
            out[counter] = torch.zeros_like(own[counter], device="cpu")
    return out


def is_timm_resnet_state_dict(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is a timm (or torchvision) ResNet state dict: ``bn1`` after the stem, ``layer1.0.conv1``."""
    return "bn1.running_var" in state and "layer1.0.conv1.weight" in state


def convert_timm_resnet(state: Mapping[str, torch.Tensor], model: nn.Module | None) -> dict[str, torch.Tensor]:
    """Map a timm ResNet state dict onto ResKANet keys (each conv into its KAN conv's base slot; see module doc)."""
    return _convert_cnn(state, model, _TIMM_RESNET_KEYS, "timm ResNet")


def is_timm_densenet_state_dict(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is a timm (or torchvision) DenseNet state dict: ``features.norm0`` and dense blocks."""
    return "features.norm0.running_var" in state and any(k.startswith("features.denseblock1.") for k in state)


def convert_timm_densenet(state: Mapping[str, torch.Tensor], model: nn.Module | None) -> dict[str, torch.Tensor]:
    """Map a timm DenseNet state dict onto DenseKANet (``preact=True``) keys (see module doc)."""
    return _convert_cnn(state, model, _TIMM_DENSENET_KEYS, "timm DenseNet")


CONVERTERS: dict[str, Converter] = {
    "tck_vgg": Converter(is_tck_vgg_state_dict, lambda state, model: convert_tck_vgg_state_dict(state),
                         "Torch-Conv-KAN VGG (VGGKAGN / VGGKAGN_BN) -> kanzoo VGGKAN"),
    "timm_resnet": Converter(is_timm_resnet_state_dict, convert_timm_resnet,
                             "timm / torchvision ResNet -> kanzoo ResKANet (identity base branch)"),
    "timm_densenet": Converter(is_timm_densenet_state_dict, convert_timm_densenet,
                               "timm / torchvision DenseNet -> kanzoo DenseKANet (preact=True, identity base branch)"),
}

_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


def unwrap_checkpoint(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint (``{'state_dict': ...}``, ``{'model': ...}``) or itself."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(f"a checkpoint must be a state dict (a mapping), got {type(checkpoint).__name__}")
    for key in _WRAPPER_KEYS:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            checkpoint = inner
            break
    state = {k.removeprefix("module."): v for k, v in checkpoint.items()}
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError("the checkpoint holds non-tensor entries; pass a state dict or a "
                                      "{'state_dict': ...} training checkpoint")
    return state


def convert_state_dict(state: Mapping[str, torch.Tensor], converter: str | None = None,
                       model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Apply ``converter`` if ``state`` is in its format, or any converter that recognises it; else return as is.

    ``model`` is the model the state dict is for (some converters read its layout). A state dict whose keys
    are all the model's own is already in its format and is returned as is (a kanified timm ResNet has a
    timm ResNet's key names, for one).
    """
    if converter is not None and converter not in CONVERTERS:
        raise CheckpointMismatchError(f"unknown converter {converter!r}; known: {sorted(CONVERTERS)}")
    if model is not None and set(state) <= set(model.state_dict()):
        return dict(state)
    candidates = [CONVERTERS[converter]] if converter else []
    candidates += [c for name, c in CONVERTERS.items() if name != converter]
    for candidate in candidates:
        if candidate.detect(state):
            try:
                return candidate.convert(state, model)
            except KeyError as err:
                raise CheckpointMismatchError(f"{candidate.description}: {err.args[0]}") from None
    return dict(state)


def adapt_input_channels(weight: torch.Tensor, in_chans: int, num_responses: int = 1) -> torch.Tensor:
    """Adapt an input-side weight ``(O, C * num_responses, *k)`` to ``in_chans`` input channels (see module doc)."""
    out, fused, *kernel = weight.shape
    if fused % num_responses:
        raise CheckpointMismatchError(f"weight of shape {tuple(weight.shape)} is not {num_responses} responses "
                                      "per channel")
    channels = fused // num_responses
    view = weight.float().reshape(out, channels, num_responses, *kernel)
    if in_chans == 1:
        adapted = view.sum(dim=1, keepdim=True)
    else:
        repeats = math.ceil(in_chans / channels)
        adapted = view.repeat(1, repeats, *([1] * (view.dim() - 2)))[:, :in_chans] * (channels / in_chans)
    return adapted.reshape(out, in_chans * num_responses, *kernel).to(weight.dtype)


def _first_layer_params(model: nn.Module, pretrained_cfg: Mapping[str, Any]) -> dict[str, int]:
    """``{state key: responses per input channel}`` of the input-side weights named by the model's ``first_conv``."""
    traits = getattr(model, "_traits", {}) or {}
    names = traits.get("first_conv", pretrained_cfg.get("first_conv"))
    if not names:
        return {}
    names = (names,) if isinstance(names, str) else tuple(names)
    found: dict[str, int] = {}
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(module, KANConvBase):
            found[f"{name}.weight"] = module.num_responses
        elif hasattr(module, "weight"):
            found[f"{name}.weight"] = 1
        for child_name, child in module.named_children():
            if isinstance(child, nn.modules.conv._ConvNd) and child.weight.shape[1] * child.groups == getattr(
                    module, "in_channels", -1):
                found[f"{name}.{child_name}.weight"] = 1
    return found


def _classifier_keys(model: nn.Module, pretrained_cfg: Mapping[str, Any]) -> set[str]:
    names = pretrained_cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return {f"{name}.{param}" for name in names for param in ("weight", "bias")}


def prepare_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module,
                       pretrained_cfg: Mapping[str, Any], converter: str | None = None) -> dict[str, torch.Tensor]:
    """Convert ``state`` for ``model``: format, input channels, head; raise if anything is missing or left over.

    The checkpoint's classifier is replaced by the model's freshly initialised one when shapes differ
    from the model's, e.g. ``num_classes`` other than the checkpoint's, or a ``features_only`` model.
    """
    state = convert_state_dict(unwrap_checkpoint(state), converter, model)
    target = model.state_dict()
    for key, num_responses in _first_layer_params(model, pretrained_cfg).items():
        if key in state and key in target and state[key].shape != target[key].shape \
                and state[key].shape[0] == target[key].shape[0] and state[key].shape[2:] == target[key].shape[2:]:
            in_chans = target[key].shape[1] // num_responses
            state[key] = adapt_input_channels(state[key], in_chans, num_responses)
    head = _classifier_keys(model, pretrained_cfg)
    for key in head:
        if key in state and (key not in target or state[key].shape != target[key].shape):
            del state[key]
            if key in target:  # keep the freshly initialised head of the built model
                state[key] = target[key]
    missing = sorted(k for k in target if k not in state and k not in head)
    unexpected = sorted(k for k in state if k not in target)
    mis_shaped = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                        for k in state if k in target and state[k].shape != target[k].shape)
    if missing or unexpected or mis_shaped:
        parts = [f"{label} ({len(keys)}): {keys[:5]}{' ...' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped))
                 if keys]
        architecture = pretrained_cfg.get("architecture", type(model).__name__)
        raise CheckpointMismatchError(f"checkpoint does not fit {architecture} as built (check the model "
                                      f"arguments, e.g. cfg=, conv=, width): " + "; ".join(parts))
    return state
