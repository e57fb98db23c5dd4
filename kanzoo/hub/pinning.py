"""Pin weights: record the sha256 of each tag's file and the commit it was downloaded from in a manifest file.

Third-party tags follow a branch (``revision: main``) and carry no sha256, so what they load can change.
:func:`pin_weights` downloads each file (or takes it from the cache), hashes it and writes a manifest whose
entries name the commit and the hash (``verified: true``); ``KANZOO_WEIGHTS_MANIFEST=FILE`` then makes kanzoo
download exactly those bytes and refuse any others.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..models._manifest import manifest_problems
from ..atomic import atomic_write
from .convert import CONVERTERS
from .download import hub_download, sha256_file, verify_file
from .errors import HubError, ManifestError
from .manifest import manifest

__all__ = ["Pinned", "pin_weights"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Pinned:
    """One pinned tag: its cached file, that file's sha256 and the commit it came from."""

    tag: str
    path: Path
    sha256: str
    commit: str


def _snapshot_commit(path: Path) -> str:
    """The commit of a file in the Hugging Face cache: the name of its ``snapshots/<commit>/`` folder."""
    parts = path.parts
    for index, part in enumerate(parts[:-1]):
        if part == "snapshots" and _COMMIT.match(parts[index + 1]):
            return parts[index + 1]
    raise HubError(f"cannot tell which commit {str(path)!r} was downloaded from (it is not in a Hugging Face cache "
                   "snapshot folder)")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ManifestError(f"cannot read the manifest {str(path)!r} to update ({type(err).__name__}: {err}); "
                            "pass another file to write") from None
    problems = manifest_problems(data, CONVERTERS)
    if problems:
        raise ManifestError(f"the manifest {str(path)!r} to update is invalid: {'; '.join(problems[:3])}; pass "
                            "another file to write")
    return data


def _tag(name: str, entries: dict[str, Any]) -> str:
    if name in entries:
        return name
    for key in entries:
        if "." not in name and key.partition(".")[0] == name:
            return key
    raise ManifestError(f"no pretrained weights named {name!r} in the weights manifest (`kanzoo list --pretrained` "
                        "shows the tags)")


def pin_weights(names: Sequence[str], manifest_file: str | Path, *, cache_dir: Any = None
                ) -> tuple[list[Pinned], list[tuple[str, HubError]]]:
    """Download (or find in the cache) the weights of ``names`` (tags or architectures; none: every tag), hash them
    and write ``manifest_file``: the active manifest (or the file itself, when it exists) with each pinned entry's
    ``revision`` set to its commit, ``sha256`` to its hash and ``verified`` to true, written atomically.

    A file whose manifest entry already has a sha256 must match it. Returns the pinned tags and the failures
    (each a one-line :class:`HubError`); the file holds the pinned ones.
    """
    target = Path(manifest_file)
    if target.is_dir() or not target.parent.is_dir():
        raise ManifestError(f"cannot write the manifest {str(target)!r}: "
                            + ("it is a folder; name a file" if target.is_dir() else "its folder does not exist"))
    entries = _read(target) if target.exists() else dict(manifest())
    tags = list(dict.fromkeys(_tag(name, entries) for name in names)) if names else list(entries)
    pinned: list[Pinned] = []
    failed: list[tuple[str, HubError]] = []
    for tag in tags:
        entry = entries[tag]
        try:
            path = hub_download(entry["hf_hub_id"], entry["filename"], entry["revision"], cache_dir=cache_dir,
                                what=tag)
            digest = verify_file(path, tag, entry) if entry["sha256"] else sha256_file(path)
            commit = _snapshot_commit(path)
        except HubError as err:
            failed.append((tag, err))
            continue
        entries[tag] = dict(entry, revision=commit, sha256=digest, verified=True)
        pinned.append(Pinned(tag, path, digest, commit))
    if pinned:
        atomic_write(target, lambda tmp: tmp.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8"))
    return pinned, failed
