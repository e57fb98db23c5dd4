"""Pretrained cfgs generated from ``weights_manifest.json``, the single source of truth for weights."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

# manifest fields that map one-to-one onto timm's PretrainedCfg
_CFG_FIELDS = ("num_classes", "input_size", "mean", "std", "interpolation", "crop_pct", "license", "hf_hub_filename")


@functools.lru_cache(maxsize=1)
def load_manifest() -> dict[str, dict[str, Any]]:
    """The packaged ``weights_manifest.json``: ``{'architecture.tag': entry}``."""
    text = resources.files("kanzoo").joinpath("weights_manifest.json").read_text(encoding="utf-8")
    return json.loads(text)


def pretrained_cfgs(architecture: str, **base_cfg: Any) -> dict[str, dict[str, Any]]:
    """Cfgs for ``generate_default_cfgs``: one per manifest tag of ``architecture``, else the bare architecture."""
    cfgs: dict[str, dict[str, Any]] = {}
    for name, entry in load_manifest().items():
        arch, _, tag = name.partition(".")
        if arch != architecture:
            continue
        cfg = dict(base_cfg)
        cfg.update({k: entry[k] for k in _CFG_FIELDS if k in entry})
        if "input_size" in cfg:
            cfg["input_size"] = tuple(cfg["input_size"])
        cfg["hf_hub_id"] = entry["hf_hub_id"]
        cfgs[f"{arch}.{tag}"] = cfg
    return cfgs or {architecture: dict(base_cfg)}
