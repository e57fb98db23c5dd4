"""What a saved model's ``config.json`` may say: an architecture, never where weights or other models come from.

A config loaded through ``'hf-hub:'`` or ``'local-dir:'`` is data from someone else. Its weights come from
the same repository or folder, so a config that names a weights location (``pretrained_cfg``'s ``file``,
``url``, ``hf_hub_id``...), sets a loading argument (``checkpoint_path``, ``pretrained``...) at any depth of
its ``model_args``, names another source or a path in any value (``encoder='local-dir:...'``), or asks for
another model's weights (``pretrained_encoder=True``) is refused.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["LOCATION_ARGS", "SAVED_SOURCES", "SOURCE_FIELDS", "saved_config_problems"]

SAVED_SOURCES = ("hf-hub", "local-dir")
LOCATION_ARGS = frozenset({"checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_model_args",
                           "cache_dir", "pretrained"})
"""Arguments that make ``create_model`` load weights from somewhere: a saved config may not set them."""
SOURCE_FIELDS = ("url", "file", "hf_hub_id", "hf_hub_filename", "source", "state_dict")
"""``pretrained_cfg`` fields that say where weights are."""
_SIDE_LOADS = frozenset({"pretrained_encoder"})
_SOURCE_MARKERS = ("hf-hub:", "hf_hub:", "local-dir:", "://")


def _names_location(value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.lower()
        return any(marker in lowered for marker in _SOURCE_MARKERS) or "/" in value or "\\" in value
    if isinstance(value, Mapping):
        return any(_names_location(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_names_location(v) for v in value)
    return False


def _loading_keys(args: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keys at any depth that load weights: ``LOCATION_ARGS``, and side loads set to a true value."""
    found = []
    for key, value in args.items():
        name = f"{prefix}{key}"
        if key in LOCATION_ARGS or (key in _SIDE_LOADS and value):
            found.append(name)
        elif isinstance(value, Mapping):
            found += _loading_keys(value, f"{name}.")
    return found


def saved_config_problems(pretrained_cfg: Mapping[str, Any] | None, model_args: Mapping[str, Any] | None,
                          set_by_loader: Iterable[str] = ()) -> list[str]:
    """What a saved config says beyond an architecture, in words (empty when nothing): weights locations in its
    ``pretrained_cfg`` (except ``set_by_loader``, the fields timm fills in itself) and loading arguments, other
    sources or paths in its ``model_args``."""
    problems = []
    skip = set(set_by_loader)
    fields = sorted(key for key in SOURCE_FIELDS if key not in skip and (pretrained_cfg or {}).get(key))
    if fields:
        problems.append(f"pretrained_cfg names where weights are ({', '.join(fields)})")
    args = model_args or {}
    loading = _loading_keys(args)
    if loading:
        problems.append(f"model_args set {', '.join(loading)}, which load weights from elsewhere")
    located = sorted(key for key, value in args.items() if _names_location(value) and key not in loading)
    if located:
        problems.append(f"model_args name another model source or a path ({', '.join(located)})")
    return problems
