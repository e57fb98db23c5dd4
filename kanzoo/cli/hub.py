"""``kanzoo info NAME`` (architecture, size, pretrained tags) and ``kanzoo download NAME...`` (fetch + verify)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from timm.models import get_arch_name, model_entrypoint

from kanzoo.hub import HubError, download_weights, manifest, resolve_tag
from kanzoo.models import create_model, is_model


def model_info(name: str) -> dict[str, Any]:
    """What kanzoo knows about an architecture (or ``arch.tag``): description, size, cfg and its weights."""
    architecture = get_arch_name(name)
    if not is_model(architecture):
        raise ValueError(f"unknown kanzoo model {name!r} (`kanzoo list` prints every entry)")
    with torch.device("meta"):
        model = create_model(name)
    cfg = model.pretrained_cfg
    weights = []
    for tag, entry in manifest().items():
        if get_arch_name(tag) == architecture and ("." not in name or tag == name):
            weights.append(dict(name=tag, cached=_cached(entry), **entry))
    return {
        "architecture": architecture,
        "description": (model_entrypoint(architecture).__doc__ or "").strip().splitlines()[0],
        "class": type(model).__name__,
        "num_params": sum(p.numel() for p in model.parameters()),
        "input_size": list(cfg.get("input_size", ())),
        "mean": list(cfg.get("mean", ())), "std": list(cfg.get("std", ())),
        "interpolation": cfg.get("interpolation"), "crop_pct": cfg.get("crop_pct"),
        "weights": weights,
    }


def _cached(entry: dict[str, Any]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(entry["hf_hub_id"], entry["filename"], revision=entry.get("revision"))
    return isinstance(found, str)


def format_info(info: dict[str, Any]) -> str:
    """``model_info`` as readable text."""
    lines = [f"{info['architecture']}: {info['description']}",
             f"  class {info['class']}, {info['num_params']:,} parameters",
             f"  input {'x'.join(map(str, info['input_size']))}, mean {info['mean']}, std {info['std']}, "
             f"{info['interpolation']}, crop_pct {info['crop_pct']}"]
    if not info["weights"]:
        lines.append("  pretrained weights: none")
    for w in info["weights"]:
        metrics = ", ".join(f"{k} {v}" for k, v in w["metrics"].items() if k not in ("dataset", "split", "of"))
        if w["metrics"].get("of"):
            metrics += f" (of the {w['metrics']['of']})"
        sha = w["sha256"] or "not recorded (unverified third-party file)"
        lines += [f"  {w['name']}:", f"    hub     {w['hf_hub_id']}@{w['revision']} / {w['filename']}"
                  f" ({'cached' if w['cached'] else 'not cached'})",
                  f"    metrics {w['metrics']['dataset']} {w['metrics']['split']}: {metrics}",
                  f"    sha256  {sha}", f"    license {w['license']}; converter {w['converter']}",
                  f"    source  {w['source']}"]
        if w.get("model_args"):
            lines.append("    builds  " + ", ".join(f"{k}={v!r}" for k, v in w["model_args"].items())
                         + " (defaults of this tag; arguments you pass win)")
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    try:
        info = model_info(args.name)
    except (ValueError, HubError) as err:
        print(f"kanzoo info: {err}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _download(args: argparse.Namespace) -> int:
    failures = 0
    for name in args.names:
        try:
            tag = resolve_tag(name)
            path = download_weights(tag)
        except HubError as err:
            print(f"kanzoo download: {name}: {err}", file=sys.stderr)
            failures += 1
            continue
        print(f"{tag}\t{path}")
    return 1 if failures else 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``info`` and ``download`` to the ``kanzoo`` command."""
    info = commands.add_parser("info", help="describe a model and its pretrained weights",
                               description="Architecture, parameter count, preprocessing and pretrained tags "
                               "(Hub location, metrics, sha256, license, whether it is cached).")
    info.add_argument("name", help="architecture or architecture.tag, e.g. vggkan_11 or vggkan_11.tck_in1k")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_info)
    download = commands.add_parser("download", help="download and verify pretrained weights into the Hub cache",
                                   description="Fetch each tag's weights file (an architecture means its default "
                                   "tag) into the Hugging Face cache and verify its sha256, e.g. before going "
                                   "offline (HF_HUB_OFFLINE=1).")
    download.add_argument("names", nargs="+", metavar="NAME", help="architecture or architecture.tag")
    download.set_defaults(func=_download)
