"""``kanzoo info NAME`` (architecture, size, pretrained tags) and ``kanzoo download NAME...`` (fetch + verify).

Both also take ``kanify:<timm name>`` and plain timm names: ``info`` then shows the source CNN, the KAN conv
family, the filter and the converted convolutions; ``download`` fetches the weights timm loads.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import timm
import torch
from timm.models import get_arch_name, get_pretrained_cfg, model_entrypoint
from torch import nn

from kanzoo.hub import HubError, download_timm_weights, download_weights, manifest, pin_weights, resolve_tag
from kanzoo.hub.errors import RUNTIME_ERRORS
from kanzoo.models import create_model, is_model
from kanzoo.models.kanified import KANIFY_PREFIX, RECIPE_KEYS, check_timm_name, create_timm_model, split_family_kwargs
from kanzoo.tasks.modeling import is_timm_name

from . import arguments
from .tasks import _model_args


def model_info(name: str) -> dict[str, Any]:
    """What kanzoo knows about an architecture (or ``arch.tag``): description, size, cfg and its weights."""
    architecture = get_arch_name(name)
    if not is_model(architecture):
        raise ValueError(f"unknown kanzoo model {name!r} (`kanzoo list` prints every entry)")
    if "." in name and name not in manifest():
        tags = [tag for tag in manifest() if get_arch_name(tag) == architecture]
        have = f"its tags: {', '.join(tags)}" if tags else f"{architecture} has no pretrained weights yet"
        raise ValueError(f"unknown pretrained tag {name.partition('.')[2]!r} for {architecture}; {have}")
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


def timm_model_info(name: str, model_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a ``kanify:`` name (or a plain timm name) builds: the source CNN, the conversion, sizes, timm's weights."""
    source = name.removeprefix(KANIFY_PREFIX)
    arch, tag = check_timm_name(source)
    kwargs = dict(model_kwargs or {})
    with torch.device("meta"):
        plain = create_timm_model(source, **split_family_kwargs(kwargs.get("conv", "kagn"), {
            k: v for k, v in kwargs.items() if k not in (*RECIPE_KEYS, "conv_kwargs")})[1])
        model = create_model(name, **kwargs) if name.startswith(KANIFY_PREFIX) else plain
    cfg = model.pretrained_cfg
    tags = [n for n in timm.list_pretrained(f"{arch}.*") if tag is None or n == source]
    info = {
        "architecture": name, "source": arch,
        "description": (model_entrypoint(arch).__doc__ or "").strip().partition("\n")[0],
        "class": type(model).__name__, "num_params": _params(model), "source_num_params": _params(plain),
        "input_size": list(cfg.get("input_size", ())), "mean": list(cfg.get("mean", ())),
        "std": list(cfg.get("std", ())), "interpolation": cfg.get("interpolation"), "crop_pct": cfg.get("crop_pct"),
        "weights": [_timm_weights(n, default=get_pretrained_cfg(arch).tag) for n in tags],
    }
    record = getattr(model, "kanify_record", None)
    if record is not None:
        convs = sum(isinstance(m, nn.modules.conv._ConvNd) for m in plain.modules())
        info["kanify"] = dict(conv=record.conv, filter=record.filter, family_kwargs=record.family_kwargs,
                              converted=len(record.converted), convolutions=convs, skipped=record.skipped)
    return info


def format_timm_info(info: dict[str, Any]) -> str:
    """``timm_model_info`` as readable text."""
    lines = [f"{info['architecture']}: timm's {info['source']} ({info['description'] or 'no description'})",
             f"  class {info['class']}, {info['num_params']:,} parameters"]
    kan = info.get("kanify")
    if kan:
        lines[-1] += f" ({info['source_num_params']:,} in the CNN)"
        family = ", ".join(f"{k}={v!r}" for k, v in kan["family_kwargs"].items()) or "defaults"
        lines.append(f"  kanify  {kan['conv']} ({family}), filter {kan['filter']}: {kan['converted']} of "
                     f"{kan['convolutions']} convolutions converted, exactly (same outputs as the CNN)")
        if kan["skipped"]:
            lines.append(f"  kept    {', '.join(f'{k} ({v})' for k, v in kan['skipped'].items())}")
    lines.append(f"  input {'x'.join(map(str, info['input_size']))}, mean {info['mean']}, std {info['std']}, "
                 f"{info['interpolation']}, crop_pct {info['crop_pct']}")
    if not info["weights"]:
        lines.append("  timm weights: none")
    for w in info["weights"]:
        where = f"{w['hf_hub_id']} ({'cached' if w['cached'] else 'not cached'})" if w["hf_hub_id"] else "a URL"
        lines.append(f"  {w['name']}{' (default)' if w['default'] else ''}: timm weights from {where}")
    return "\n".join(lines)


def _timm_weights(name: str, default: str | None) -> dict[str, Any]:
    hub_id = get_pretrained_cfg(name).hf_hub_id
    cached = bool(hub_id) and _cached(dict(hf_hub_id=hub_id, filename="model.safetensors"))
    return dict(name=name, default=name.partition(".")[2] == default, hf_hub_id=hub_id, cached=cached)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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
    timm_name = is_timm_name(args.name)
    try:
        info = timm_model_info(args.name, _model_args(args.model_arg)) if timm_name else model_info(args.name)
    except (ValueError, TypeError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    text = format_timm_info(info) if timm_name else format_info(info)
    print(json.dumps(info, indent=2) if args.json else text)
    return 0


def _download(args: argparse.Namespace) -> int:
    if args.record is not None:
        return _record(args)
    if not args.names:
        print("error: name at least one tag or architecture to download (see `kanzoo download --help`)",
              file=sys.stderr)
        return 2
    code = 0
    for name in args.names:
        try:
            if is_timm_name(name):
                tag, path = name, download_timm_weights(name)
            else:
                tag = resolve_tag(name)
                path = download_weights(tag)
        except HubError as err:
            print(f"error: {name}: {err}", file=sys.stderr)
            code = max(code, 1 if isinstance(err, RUNTIME_ERRORS) else 2)
            continue
        print(f"{tag}\t{path}")
    return code


def _record(args: argparse.Namespace) -> int:
    timm_names = [name for name in args.names if is_timm_name(name)]
    if timm_names:
        print(f"error: --record pins manifest tags; {', '.join(timm_names)} are timm names, whose files timm "
              "chooses", file=sys.stderr)
        return 2
    pinned, failed = pin_weights(args.names, args.record)
    for item in pinned:
        print(f"{item.tag}\tsha256 {item.sha256}\tcommit {item.commit}\t{item.path}")
    for tag, err in failed:
        print(f"error: {tag}: {err}", file=sys.stderr)
    if pinned:
        print(f"wrote {args.record}: {len(pinned)} tag(s) pinned to a commit and a sha256; use it with "
              f"KANZOO_WEIGHTS_MANIFEST={args.record}")
    return max((1 if isinstance(err, RUNTIME_ERRORS) else 2 for _, err in failed), default=0)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``info`` and ``download`` to the ``kanzoo`` command."""
    info = commands.add_parser("info", help="describe a model and its pretrained weights",
                               description="Architecture, parameter count, preprocessing and pretrained tags "
                               "(Hub location, metrics, sha256, license, whether it is cached).")
    info.add_argument("name", type=arguments.model_source("name"),
                      help="architecture or architecture.tag, e.g. vggkan_11 or vggkan_11.tck_in1k; or "
                      "kanify:<timm name> (e.g. kanify:resnet18) or a timm name")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument("--model-arg", action="append", metavar="KEY=VALUE", type=arguments.model_arg,
                      help="model argument, repeatable (e.g. --model-arg conv=kacn --model-arg degree=2)")
    info.set_defaults(func=_info)
    download = commands.add_parser("download", help="download and verify pretrained weights into the Hub cache",
                                   description="Fetch each tag's weights file (an architecture means its default "
                                   "tag) into the Hugging Face cache and verify its sha256, e.g. before going "
                                   "offline (HF_HUB_OFFLINE=1). With --record FILE, write a manifest that pins "
                                   "each file to the commit it came from and its sha256.")
    download.add_argument("names", nargs="*", metavar="NAME", type=arguments.model_source("NAME"),
                          help="architecture or architecture.tag; or kanify:<timm name>[.tag] or a timm name (the "
                          "file timm loads, not verified); with --record and no NAME: every tag of the manifest")
    download.add_argument("--record", metavar="FILE", type=arguments.non_empty("--record"),
                          help="write (or update) the manifest FILE with each file's sha256 and commit; then set "
                          "KANZOO_WEIGHTS_MANIFEST=FILE to load exactly those files")
    download.set_defaults(func=_download)
