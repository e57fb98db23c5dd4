"""The schema of ``weights_manifest.json``: what every entry must hold, checked whenever a manifest is read.

Besides the required fields an entry may hold ``model_args``, an object of the constructor arguments
its weights need (applied as defaults when that tag is built), and its ``metrics`` may say ``of`` what
model they were measured (e.g. the source CNN of weights converted into a KAN).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

__all__ = ["OPTIONAL_FIELDS", "REQUIRED_FIELDS", "entry_problems", "manifest_problems"]

REQUIRED_FIELDS = ("hf_hub_id", "revision", "filename", "sha256", "verified", "num_params", "num_classes",
                   "input_size", "mean", "std", "interpolation", "crop_pct", "metrics", "license", "source",
                   "converter")
OPTIONAL_FIELDS = ("model_args",)
_METRIC_LABELS = ("dataset", "split", "of")
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
_NAME = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def entry_problems(name: str, entry: Mapping[str, Any], converters: Any = None) -> list[str]:
    """Problems with one manifest entry (empty when it is valid); ``converters``: names allowed for ``converter``."""
    problems: list[str] = []
    if not _NAME.match(name):
        problems.append(f"{name}: the key must be 'architecture.tag' (lower case, digits, underscores)")
    missing = [key for key in REQUIRED_FIELDS if key not in entry]
    if missing:
        return problems + [f"{name}: missing field(s) {missing}"]
    checks = [  # (field shown as "got", ok, message)
        ("hf_hub_id", isinstance(entry["hf_hub_id"], str) and _REPO_ID.match(entry["hf_hub_id"]),
         "hf_hub_id must be 'org/repo'"),
        ("revision", isinstance(entry["revision"], str) and entry["revision"], "revision must be a non-empty string"),
        ("filename", isinstance(entry["filename"], str) and entry["filename"], "filename must be a non-empty string"),
        ("verified", isinstance(entry["verified"], bool), "verified must be true or false"),
        ("sha256", entry["sha256"] is None or (isinstance(entry["sha256"], str) and _SHA256.match(entry["sha256"])),
         "sha256 must be null or 64 lower-case hex digits"),
        ("sha256", not (entry["sha256"] is None and entry.get("verified")), "verified=true needs a sha256"),
        ("verified", not (entry["sha256"] is not None and entry.get("verified") is False),
         "a recorded sha256 means the file was verified: set verified=true"),
        ("num_params", isinstance(entry["num_params"], int) and entry["num_params"] > 0,
         "num_params must be a positive int"),
        ("num_classes", isinstance(entry["num_classes"], int) and entry["num_classes"] > 0,
         "num_classes must be a positive int"),
        ("input_size", isinstance(entry["input_size"], list) and len(entry["input_size"]) == 3
         and all(isinstance(v, int) and v > 0 for v in entry["input_size"]), "input_size must be [C, H, W]"),
        ("interpolation", entry["interpolation"] in _INTERPOLATIONS,
         f"interpolation must be one of {list(_INTERPOLATIONS)}"),
        ("crop_pct", _is_number(entry["crop_pct"]) and 0 < entry["crop_pct"] <= 1, "crop_pct must be in (0, 1]"),
        ("license", isinstance(entry["license"], str) and entry["license"], "license must be a non-empty string"),
        ("source", isinstance(entry["source"], str) and entry["source"],
         "source must say who trained it (paper or repo)"),
        ("converter", entry["converter"] is None or (isinstance(entry["converter"], str)
                                                     and (converters is None or entry["converter"] in converters)),
         f"converter must be null or one of {sorted(converters) if converters is not None else 'the converters'}"),
    ]
    problems += [f"{name}: {message} (got {entry[field]!r})" for field, ok, message in checks if not ok]
    channels = entry["input_size"][0] if isinstance(entry["input_size"], list) and entry["input_size"] else None
    for key in ("mean", "std"):
        value = entry[key]
        if not (isinstance(value, list) and all(_is_number(v) for v in value) and len(value) == channels):
            problems.append(f"{name}: {key} must be a list of {channels} numbers (one per input channel)")
    metrics = entry["metrics"]
    if not isinstance(metrics, dict) or not isinstance(metrics.get("dataset"), str) \
            or not isinstance(metrics.get("split"), str):
        problems.append(f"{name}: metrics must be an object with 'dataset', 'split' and numbers (e.g. top1)")
    elif not any(_is_number(v) for k, v in metrics.items() if k not in _METRIC_LABELS):
        problems.append(f"{name}: metrics has no numbers besides dataset and split")
    elif "of" in metrics and not (isinstance(metrics["of"], str) and metrics["of"]):
        problems.append(f"{name}: metrics 'of' must say what model they were measured on, e.g. 'source CNN at "
                        f"initialisation' (got {metrics['of']!r})")
    model_args = entry.get("model_args", {})
    if not (isinstance(model_args, dict) and all(isinstance(k, str) and k.isidentifier() for k in model_args)):
        problems.append(f"{name}: model_args must be an object of constructor arguments, e.g. "
                        f"{{\"act_layer\": \"relu\"}} (got {model_args!r})")
    unknown = sorted(set(entry) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        problems.append(f"{name}: unknown field(s) {unknown}; the fields are {list(REQUIRED_FIELDS + OPTIONAL_FIELDS)}")
    return problems


def manifest_problems(data: Any, converters: Any = None) -> list[str]:
    """Every problem of a manifest (empty when it is valid); ``converters``: the names allowed for ``converter``."""
    if not isinstance(data, Mapping):
        return [f"the manifest must be a JSON object of 'architecture.tag' entries, got {type(data).__name__}"]
    return [p for name, entry in data.items()
            for p in (entry_problems(name, entry, converters) if isinstance(entry, Mapping)
                      else [f"{name}: the entry must be a JSON object"])]
