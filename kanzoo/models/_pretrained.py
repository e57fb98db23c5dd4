"""Pretrained cfgs generated from ``weights_manifest.json``, the single source of truth for weights.

The packaged manifest is used unless the environment variable ``KANZOO_WEIGHTS_MANIFEST`` names
another manifest file (a mirror, or a test manifest pointing at a local Hub server). An entry's
``model_args`` are the constructor arguments its weights need (e.g. ``act_layer='relu'``); they are
defaults of any build of that tag (:func:`tag_model_args`), and arguments given explicitly win.
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from typing import Any, Mapping

from ._manifest import manifest_problems

MANIFEST_ENV = "KANZOO_WEIGHTS_MANIFEST"
_error: type[Exception] = ValueError


def set_manifest_error(error: type[Exception]) -> None:
    """The exception class (a ``ValueError``) raised for an unreadable or invalid manifest; the hub installs its
    ``ManifestError``."""
    global _error
    _error = error

# pretrained_cfg_overlay keys that load weights from somewhere else than the tag's file
_OTHER_SOURCES = ("file", "state_dict", "url", "hf_hub_id")
# manifest fields that map one-to-one onto timm's PretrainedCfg
_CFG_FIELDS = ("num_classes", "input_size", "mean", "std", "interpolation", "crop_pct", "license")


@functools.lru_cache(maxsize=8)
def _read_manifest(path: str | None, mtime_ns: int) -> dict[str, dict[str, Any]]:
    where = f"{MANIFEST_ENV}={path!r}" if path else "the packaged weights manifest"
    fix = f"fix it, or unset {MANIFEST_ENV} to use the packaged one" if path else "reinstall kanzoo"
    try:
        if path is None:
            text = resources.files("kanzoo").joinpath("weights_manifest.json").read_text(encoding="utf-8")
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        data = json.loads(text)
    except (OSError, ValueError) as err:
        raise _error(f"cannot read {where} ({type(err).__name__}: {err}); {fix}") from None
    problems = manifest_problems(data)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise _error(f"{where} is invalid: {'; '.join(problems[:5])}{more}; {fix}")
    return data


def manifest_path() -> str | None:
    """The manifest file named by ``KANZOO_WEIGHTS_MANIFEST``, or None for the packaged one."""
    return os.environ.get(MANIFEST_ENV) or None


def load_manifest() -> dict[str, dict[str, Any]]:
    """The active ``weights_manifest.json``: ``{'architecture.tag': entry}`` (re-read when the file changes), checked
    against the schema; a ``ValueError`` (the hub's ``ManifestError``; one line, listing the problems) when it cannot
    be read or is invalid."""
    path = manifest_path()
    if path is not None and not os.path.isfile(path):
        raise _error(f"{MANIFEST_ENV}={path!r} does not name a file; unset it to use the packaged manifest")
    return _read_manifest(path, os.stat(path).st_mtime_ns if path else 0)


def pretrained_cfgs(architecture: str, **base_cfg: Any) -> dict[str, dict[str, Any]]:
    """Cfgs for ``generate_default_cfgs``: one per manifest tag of ``architecture``, else the bare architecture.

    With an unreadable or invalid manifest no tag is registered (importing kanzoo still works; loading weights
    then raises the manifest's error).
    """
    try:
        entries = load_manifest()
    except (OSError, ValueError):
        entries = {}
    cfgs: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        arch, _, tag = name.partition(".")
        if arch != architecture:
            continue
        cfg = dict(base_cfg)
        cfg.update({k: entry[k] for k in _CFG_FIELDS if k in entry})
        if entry.get("filename"):
            cfg["hf_hub_filename"] = entry["filename"]
        for key in ("input_size", "mean", "std"):
            if key in cfg:
                cfg[key] = tuple(cfg[key])
        revision = entry.get("revision") or "main"
        cfg["hf_hub_id"] = entry["hf_hub_id"] if revision == "main" else f"{entry['hf_hub_id']}@{revision}"
        cfgs[f"{arch}.{tag}"] = cfg
    return cfgs or {architecture: dict(base_cfg)}


def tag_model_args(architecture: str, tag: str | None) -> dict[str, Any]:
    """The ``model_args`` of the manifest entry ``architecture.tag`` (empty when it has none or does not exist)."""
    entry = load_manifest().get(f"{architecture}.{tag}") if tag else None
    return dict(entry.get("model_args") or {}) if isinstance(entry, Mapping) else {}


def build_tag(pretrained: bool, pretrained_cfg: Any, overlay: Mapping[str, Any] | None,
              default_tag: str | None) -> str | None:
    """The tag whose ``model_args`` a build takes: one named explicitly (``'arch.tag'`` or ``pretrained_cfg='tag'``),
    or the default tag when ``pretrained=True`` loads that tag's own file; otherwise None (the plain architecture)."""
    if isinstance(pretrained_cfg, str):
        return pretrained_cfg
    if pretrained_cfg is None and pretrained and not any((overlay or {}).get(key) for key in _OTHER_SOURCES):
        return default_tag
    return None
