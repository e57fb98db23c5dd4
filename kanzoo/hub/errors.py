"""Errors of the hub floor: each says, in one line, what went wrong and what to do about it."""

from __future__ import annotations

__all__ = ["HubError", "ManifestError", "WeightsNotFoundError", "WeightsUnavailableOfflineError",
           "ChecksumMismatchError", "CheckpointMismatchError", "HubDownloadError", "ModelConfigError", "RUNTIME_ERRORS"]


class HubError(RuntimeError):
    """Base class of kanzoo's pretrained-weights errors."""


class ManifestError(HubError, ValueError):
    """``weights_manifest.json`` (or an entry of it) is malformed, or a name has no entry."""


class WeightsNotFoundError(HubError, FileNotFoundError):
    """The repository, revision or file does not exist (or no weights are declared for a model)."""


class WeightsUnavailableOfflineError(HubError):
    """Offline mode is on and the file is not in the local cache."""


class ChecksumMismatchError(HubError):
    """A downloaded file's sha256 differs from the manifest's; the bad file was removed from the cache."""


class CheckpointMismatchError(HubError, KeyError):
    """A checkpoint does not fit the model: missing, unexpected or mis-shaped tensors."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class HubDownloadError(HubError, ConnectionError):
    """The Hub could not be reached, refused access (gated or private repo) or failed."""


class ModelConfigError(HubError, ValueError):
    """A saved model's ``config.json`` cannot be read, or names something besides an architecture (a file, a repo)."""


RUNTIME_ERRORS = (HubDownloadError, ChecksumMismatchError, WeightsUnavailableOfflineError)
"""Failures of a right request while it ran (network, offline cache, corrupt download), not of bad input."""
