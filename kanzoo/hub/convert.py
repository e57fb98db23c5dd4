"""Fit a checkpoint to a built model: format converters, input-channel adaptation, head reset, strict checks.

Input-channel adaptation (``in_chans != 3`` with pretrained weights) works like timm's
``adapt_input_conv`` but on each input-side weight of the first layer. A fused KAN conv weight
``(O, C * E, *k)`` (``E`` = base branch + bases, channel-major) is viewed as ``(O, C, E, *k)`` and
adapted over ``C``: for one input channel the RGB weights are summed; for ``n`` channels they are
repeated to ``n`` and scaled by ``C / n``, so a constant input gives the same pre-activation as before.
Plain conv weights (the bottleneck's ``inner_proj`` and ``base_conv``) are adapted the same way with ``E = 1``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple

import torch
from torch import nn

from ..layers import KANConvBase
from ..models.vggkan import convert_tck_vgg_state_dict, is_tck_vgg_state_dict
from .errors import CheckpointMismatchError

__all__ = ["CONVERTERS", "Converter", "adapt_input_channels", "convert_state_dict", "prepare_state_dict",
           "unwrap_checkpoint"]


class Converter(NamedTuple):
    """A state-dict format: how to recognise it and how to map it to kanzoo's keys."""

    detect: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]
    description: str


CONVERTERS: dict[str, Converter] = {
    "tck_vgg": Converter(is_tck_vgg_state_dict, convert_tck_vgg_state_dict,
                         "Torch-Conv-KAN VGG (VGGKAGN / VGGKAGN_BN) -> kanzoo VGGKAN"),
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


def convert_state_dict(state: Mapping[str, torch.Tensor], converter: str | None = None) -> dict[str, torch.Tensor]:
    """Apply ``converter`` if ``state`` is in its format, or any converter that recognises it; else return as is."""
    if converter is not None and converter not in CONVERTERS:
        raise CheckpointMismatchError(f"unknown converter {converter!r}; known: {sorted(CONVERTERS)}")
    candidates = [CONVERTERS[converter]] if converter else []
    candidates += [c for name, c in CONVERTERS.items() if name != converter]
    for candidate in candidates:
        if candidate.detect(state):
            try:
                return candidate.convert(state)
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
    state = convert_state_dict(unwrap_checkpoint(state), converter)
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
