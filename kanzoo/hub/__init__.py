"""Pretrained weights: the manifest, Hub download with sha256 verification, converters, save and push.

Importing this package installs its loader into ``build_kan_model`` (and its ``ManifestError`` as the error of
an invalid manifest), so ``pretrained=True`` in
``kanzoo.create_model``, ``timm.create_model`` and ``torch.hub.load`` downloads, verifies,
converts and adapts weights the same way (``import kanzoo`` imports it).
"""

from ..models._builder import set_pretrained_loader
from ..models._pretrained import set_manifest_error
from .convert import CONVERTERS, adapt_input_channels, convert_state_dict, prepare_state_dict
from .download import download_timm_weights, download_weights, hub_download, is_offline, sha256_file
from .errors import (ChecksumMismatchError, CheckpointMismatchError, HubDownloadError, HubError, ManifestError,
                     ModelConfigError, WeightsNotFoundError, WeightsUnavailableOfflineError)
from .loading import HubLoader, check_config, check_pretrained_fit, load_checkpoint_file
from .manifest import manifest, manifest_entry, resolve_tag, validate_manifest
from .pinning import Pinned, pin_weights
from .publish import push_to_hub, save_pretrained

__all__ = [
    "CONVERTERS", "ChecksumMismatchError", "CheckpointMismatchError", "HubDownloadError", "HubError", "HubLoader",
    "ManifestError", "ModelConfigError", "Pinned", "WeightsNotFoundError", "WeightsUnavailableOfflineError",
    "adapt_input_channels", "check_config", "check_pretrained_fit", "convert_state_dict", "download_timm_weights",
    "download_weights", "hub_download", "is_offline", "load_checkpoint_file", "manifest", "manifest_entry",
    "pin_weights", "prepare_state_dict", "push_to_hub", "resolve_tag", "save_pretrained", "sha256_file",
    "validate_manifest",
]

set_pretrained_loader(HubLoader())
set_manifest_error(ManifestError)
