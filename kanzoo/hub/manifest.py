"""``weights_manifest.json``: validation (the schema is :mod:`kanzoo.models._manifest`) and lookup of a tag's entry.

The manifest is checked whenever it is read, so a malformed one (``KANZOO_WEIGHTS_MANIFEST``) is a one-line
:class:`ManifestError` listing its problems, never a crash where a field is used.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..models._manifest import OPTIONAL_FIELDS, REQUIRED_FIELDS, entry_problems, manifest_problems
from ..models._pretrained import load_manifest
from .errors import ManifestError

__all__ = ["OPTIONAL_FIELDS", "REQUIRED_FIELDS", "manifest", "manifest_entry", "resolve_tag", "validate_entry",
           "validate_manifest"]


def validate_entry(name: str, entry: Mapping[str, Any], converters: Any = None) -> list[str]:
    """Problems with one manifest entry (empty when it is valid); ``converters``: names allowed for ``converter``."""
    return entry_problems(name, entry, converters)


def validate_manifest(data: Mapping[str, Any] | None = None, converters: Any = None) -> None:
    """Raise :class:`ManifestError` listing every problem of the (active) manifest, in one line."""
    problems = manifest_problems(manifest() if data is None else data, converters)
    if problems:
        raise ManifestError(f"invalid weights manifest: {'; '.join(problems)}")


def manifest() -> dict[str, dict[str, Any]]:
    """The active manifest (packaged, or the file named by ``KANZOO_WEIGHTS_MANIFEST``); a :class:`ManifestError`
    when it cannot be read or is invalid."""
    return load_manifest()


def resolve_tag(name: str) -> str:
    """``'arch'`` -> its default tag ``'arch.tag'`` (the first manifest entry of ``arch``); ``'arch.tag'`` as is."""
    data = manifest()
    if name in data:
        return name
    if "." not in name:
        for key in data:
            if key.partition(".")[0] == name:
                return key
    known = ", ".join(sorted(data)) or "none"
    raise ManifestError(f"no pretrained weights named {name!r} in the weights manifest (known tags: {known})")


def manifest_entry(name: str) -> tuple[str, dict[str, Any]]:
    """``(architecture.tag, entry)`` for a tag or an architecture (its default tag)."""
    tag = resolve_tag(name)
    return tag, manifest()[tag]
