"""Download from the Hugging Face Hub with sha256 verification and one-line errors."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from .errors import (ChecksumMismatchError, HubDownloadError, WeightsNotFoundError,
                     WeightsUnavailableOfflineError)
from .manifest import manifest_entry

__all__ = ["download_timm_weights", "download_weights", "hub_download", "is_offline", "sha256_file"]

_logger = logging.getLogger(__name__)
_reported_unverified: set[tuple[str, str]] = set()
_CHUNK = 1 << 20


def is_offline() -> bool:
    """Offline mode: ``HF_HUB_OFFLINE`` set now or when huggingface_hub was imported."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.is_offline_mode()) or flag in ("1", "ON", "YES", "TRUE")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _how_to_fetch(what: str) -> str:
    return (f"fetch it on a connected machine with `kanzoo download {what}` (then copy the Hugging Face cache, "
            "HF_HOME, over), or load a local file with "
            f"create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file='/path/to/file'))")


def _offline_error(location: str, what: str) -> WeightsUnavailableOfflineError:
    return WeightsUnavailableOfflineError(f"{location} is not in the local cache and offline mode (HF_HUB_OFFLINE) "
                                          f"is on: {_how_to_fetch(what)}")


@contextlib.contextmanager
def _hub_errors(repo_id: str, filename: str, revision: str, what: str) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into kanzoo's one-line errors."""
    from huggingface_hub import errors

    location = f"{filename!r} of {repo_id!r} (revision {revision!r})"
    try:
        yield
    except errors.HFValidationError as err:
        raise WeightsNotFoundError(f"{repo_id!r} is not a Hub repository id such as 'org/name' ({_first_line(err)})"
                                   ) from None
    except errors.GatedRepoError:
        raise HubDownloadError(f"{repo_id!r} is gated: accept its terms on the Hub and log in (`hf auth login` or "
                               "HF_TOKEN) to download it") from None
    except errors.RepositoryNotFoundError:
        raise WeightsNotFoundError(f"Hub repository {repo_id!r} not found (or private: log in with `hf auth login` "
                                   "or set HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise WeightsNotFoundError(f"revision {revision!r} not found in Hub repository {repo_id!r}") from None
    except errors.LocalEntryNotFoundError as err:
        if is_offline():
            raise _offline_error(location, what) from None
        cause = err.__cause__ or err
        raise HubDownloadError(f"cannot download {location}: the Hub is unreachable "
                               f"({type(cause).__name__}: {_first_line(cause)}); check the connection or "
                               f"HF_ENDPOINT, or {_how_to_fetch(what)}") from None
    except errors.OfflineModeIsEnabled:
        raise _offline_error(location, what) from None
    except errors.RemoteEntryNotFoundError:
        raise WeightsNotFoundError(f"file {filename!r} not found in Hub repository {repo_id!r} "
                                   f"(revision {revision!r})") from None
    except errors.HfHubHTTPError as err:
        status = err.response.status_code if getattr(err, "response", None) is not None else "?"
        raise HubDownloadError(f"the Hub refused {location} (HTTP {status}): {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def hub_download(repo_id: str, filename: str, revision: str | None = None, *, cache_dir: Any = None,
                 what: str | None = None) -> Path:
    """``hf_hub_download`` with kanzoo's errors (offline mode honoured even if set after import)."""
    from huggingface_hub import hf_hub_download

    revision = revision or "main"
    with _hub_errors(repo_id, filename, revision, what or repo_id):
        path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                               local_files_only=is_offline())
    return Path(path)


def _remove_cached(path: Path) -> None:
    """Delete a cached snapshot file and the blob it points to."""
    blob = Path(os.path.realpath(path))
    for target in {path, blob}:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()


def verify_file(path: Path, name: str, entry: dict[str, Any]) -> str:
    """Check ``path`` against the entry's sha256 (removing it on mismatch); log the hash of unverified files once."""
    actual = sha256_file(path)
    expected = entry.get("sha256")
    if expected is None:
        key = (name, actual)
        if key not in _reported_unverified:
            _reported_unverified.add(key)
            _logger.warning("%s: %s has no sha256 in the weights manifest yet (unverified third-party file); "
                            "computed sha256=%s", name, entry.get("filename"), actual)
        return actual
    if actual != expected.lower():
        _remove_cached(path)
        raise ChecksumMismatchError(
            f"sha256 mismatch for {entry['filename']!r} of {entry['hf_hub_id']!r} ({name}): expected {expected}, "
            f"got {actual}; the corrupt file was removed from the cache, so the next call downloads it again")
    return actual


def download_weights(name: str, *, cache_dir: Any = None) -> Path:
    """Download (or find in the cache) and verify the weights file of a pretrained tag; returns its path."""
    tag, entry = manifest_entry(name)
    path = hub_download(entry["hf_hub_id"], entry["filename"], entry.get("revision"), cache_dir=cache_dir, what=tag)
    verify_file(path, tag, entry)
    return path


def download_timm_weights(name: str, *, cache_dir: Any = None) -> Path:
    """Fetch the Hub weights file timm loads for ``name`` (``'arch[.tag]'`` or ``'kanify:arch[.tag]'``) into the cache.

    timm publishes no sha256 of its files, so none is checked; the file is the one timm reads offline.
    """
    from timm.models import resolve_pretrained_cfg

    from ..models.kanified import KANIFY_PREFIX, check_timm_name

    try:
        arch, tag = check_timm_name(name.removeprefix(KANIFY_PREFIX))
    except ValueError as err:
        raise WeightsNotFoundError(str(err)) from None
    cfg = resolve_pretrained_cfg(arch, pretrained_cfg=tag).to_dict()
    if not cfg.get("hf_hub_id"):
        where = f"from {cfg['url']!r}, not from the Hub" if cfg.get("url") else "nowhere: timm has no weights for it"
        raise WeightsNotFoundError(f"timm fetches the weights of {name!r} {where}")
    repo_id, _, revision = cfg["hf_hub_id"].partition("@")
    return hub_download(repo_id, cfg.get("hf_hub_filename") or "model.safetensors", revision or None,
                        cache_dir=cache_dir, what=name)
