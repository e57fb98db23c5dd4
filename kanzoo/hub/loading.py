"""The pretrained loader installed into ``build_kan_model``: where weights come from, then how they fit.

Sources, in timm's priority order: a ``local-dir:`` or ``hf-hub:`` model (only that folder or
repository: a saved config describes an architecture, so one naming a weights location, or model
arguments that load weights or name another source or a path, is refused), an in-memory ``state_dict``, a local
``file`` (both through ``pretrained_cfg_overlay``), the manifest entry of ``architecture.tag``
(downloaded at the manifest's revision and sha256-verified), then any other ``hf_hub_id`` or ``url``
in the cfg. The same errors cover the weights timm fetches itself for ``kanify:`` sources
(:meth:`HubLoader.source_weights`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import warnings
import urllib.error
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from ..models import create_model
from ..models._saved import saved_config_problems
from .convert import prepare_state_dict
from .download import _hub_errors, download_weights, hub_download
from .errors import (CheckpointMismatchError, HubDownloadError, HubError, ModelConfigError,
                     WeightsNotFoundError)
from .manifest import manifest, resolve_tag

__all__ = ["HubLoader", "check_config", "check_pretrained_fit", "load_checkpoint_file"]

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SET_BY_TIMM = {"hf-hub": ("hf_hub_id", "source"), "local-dir": ("file", "source")}


def load_checkpoint_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or PyTorch checkpoint file onto the CPU (tensors only, no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt, foreign or unsafe file: say which file and why, in one line
        if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
            found = re.search(r"GLOBAL ([\w.]+)", str(err))
            names = f" (it names {found.group(1)})" if found else ""
            raise CheckpointMismatchError(f"cannot read checkpoint {str(path)!r}: it holds Python objects besides "
                                          f"tensors{names}, which kanzoo never unpickles; save its state dict as "
                                          "safetensors where you trust the file") from None
        raise CheckpointMismatchError(f"cannot read checkpoint {str(path)!r}: {type(err).__name__}: "
                                      f"{str(err).splitlines()[0] if str(err) else ''}") from None


_FEATURE_ARGS = ("features_only", "out_indices", "feature_cls")


def check_pretrained_fit(name: str, **kwargs: Any) -> str:
    """Check, on the meta device and downloading nothing, that the weights of ``name`` fit the model
    ``create_model(name, pretrained=True, **kwargs)`` builds; returns the tag (``name``, or its default tag).

    The model is compared with the tag's own layout (the tag built with default arguments) by the strict
    check of a real load, so another ``num_classes`` or ``in_chans`` fits, and a different width, layout or
    family raises :class:`CheckpointMismatchError`. For CNN weights (the ``timm_*`` converters) this is
    conservative: they would also fill another plain family or degree, which this check reports as mis-shaped.
    """
    tag = resolve_tag(name)
    kwargs = {key: value for key, value in kwargs.items() if key not in _FEATURE_ARGS}
    with torch.device("meta"):
        reference = create_model(tag)
        built = create_model(tag, **kwargs)
    prepare_state_dict(reference.state_dict(), built, built.pretrained_cfg)
    return tag


def _split_revision(hub_id: str) -> tuple[str, str | None]:
    repo_id, _, revision = hub_id.partition("@")
    return repo_id, revision or None


class HubLoader:
    """Fetches checkpoints for ``build_kan_model`` and fits them to the built model."""

    def fetch(self, pretrained_cfg: dict[str, Any], cache_dir: Any = None) -> dict[str, Any]:
        """The raw state dict for a resolved pretrained cfg (downloaded and verified when it comes from the Hub)."""
        name = _cfg_name(pretrained_cfg)
        source = pretrained_cfg.get("source")
        if source == "local-dir":
            return self._from_dir(Path(pretrained_cfg["file"]))
        if source == "hf-hub":
            return self._from_hub_repo(pretrained_cfg, cache_dir)
        if pretrained_cfg.get("state_dict"):
            return dict(pretrained_cfg["state_dict"])
        if pretrained_cfg.get("file"):
            return load_checkpoint_file(pretrained_cfg["file"])
        if name in manifest():
            return load_checkpoint_file(download_weights(name, cache_dir=cache_dir))
        if pretrained_cfg.get("hf_hub_id"):
            return self._from_hub_repo(pretrained_cfg, cache_dir)
        if pretrained_cfg.get("url"):
            return torch.hub.load_state_dict_from_url(pretrained_cfg["url"], map_location="cpu", weights_only=True,
                                                      model_dir=cache_dir)
        architecture = pretrained_cfg.get("architecture", name)
        tags = sorted(k for k in manifest() if k.partition(".")[0] == architecture)
        hint = f"its tags: {tags}" if tags else "no tag of it is in the weights manifest"
        raise WeightsNotFoundError(f"no pretrained weights for {name!r} ({hint}); use pretrained=False, a tag, "
                                   "or pretrained_cfg_overlay=dict(file=PATH)")

    def prepare(self, state: dict[str, Any], model: nn.Module, pretrained_cfg: dict[str, Any]) -> dict[str, Any]:
        """Convert and check ``state`` for ``model`` (see :func:`kanzoo.hub.convert.prepare_state_dict`)."""
        entry = manifest().get(_cfg_name(pretrained_cfg)) or {}
        return prepare_state_dict(state, model, pretrained_cfg, converter=entry.get("converter"))

    def check_source(self, name: str) -> None:
        """Fetch the ``config.json`` of an ``'hf-hub:org/repo[@rev]'`` name (or check a ``'local-dir:'`` one)."""
        from timm.models import parse_model_name

        source, model_id = parse_model_name(name)
        if source == "hf-hub":
            repo_id, revision = _split_revision(model_id)
            path = hub_download(repo_id, "config.json", revision)
        elif source == "local-dir":
            path = Path(model_id) / "config.json"
            if not path.is_file():
                raise WeightsNotFoundError(f"no config.json in {model_id!r}: save the model there with "
                                           "kanzoo.save_pretrained(model, folder)")
        else:
            return
        check_config(path, name)

    @contextlib.contextmanager
    def source_weights(self, pretrained_cfg: dict[str, Any], name: str) -> Iterator[None]:
        """Run timm's own download of the weights of ``name`` (``arch[.tag]``, ``kanify:...``) with kanzoo's errors."""
        arch = _cfg_name(pretrained_cfg)
        if not any(pretrained_cfg.get(key) for key in ("hf_hub_id", "url", "file", "state_dict")):
            arch = pretrained_cfg.get("architecture") or arch
            raise WeightsNotFoundError(f"timm has no pretrained weights for {arch!r}; use pretrained=False, a tag "
                                       f"with weights (timm.list_pretrained('{arch}.*')), or "
                                       "pretrained_cfg_overlay=dict(file=PATH)")
        local = pretrained_cfg.get("file") or pretrained_cfg.get("state_dict")
        repo_id, revision = _split_revision(pretrained_cfg.get("hf_hub_id") or "")
        filename = pretrained_cfg.get("hf_hub_filename") or _WEIGHT_FILES[0]
        hub = _hub_errors(repo_id, filename, revision or "main", name) if repo_id and not local \
            else contextlib.nullcontext()
        try:
            with hub:
                yield
        except HubError:
            raise
        except FileNotFoundError as err:
            raise WeightsNotFoundError(f"checkpoint file {str(err.filename or local)!r} does not exist") from None
        except urllib.error.URLError as err:
            raise HubDownloadError(f"cannot download the weights of {arch!r} from {pretrained_cfg.get('url')!r} "
                                   f"({err.reason}); check the connection, or pass "
                                   "pretrained_cfg_overlay=dict(file=PATH)") from None

    def check_saved(self, pretrained_cfg: Mapping[str, Any], model_args: Mapping[str, Any], name: str) -> None:
        """Refuse a saved config (already parsed by timm) that says more than an architecture."""
        source = pretrained_cfg.get("source")
        where = pretrained_cfg.get("hf_hub_id" if source == "hf-hub" else "file") or name
        _refuse(f"{source}:{where}", saved_config_problems(pretrained_cfg, model_args, _SET_BY_TIMM.get(source, ())))

    @staticmethod
    def _from_dir(folder: Path) -> dict[str, Any]:
        for filename in _WEIGHT_FILES:
            if (folder / filename).is_file():
                return load_checkpoint_file(folder / filename)
        raise WeightsNotFoundError(f"no {' or '.join(_WEIGHT_FILES)} in {str(folder)!r}")

    @staticmethod
    def _from_hub_repo(pretrained_cfg: dict[str, Any], cache_dir: Any) -> dict[str, Any]:
        repo_id, revision = _split_revision(pretrained_cfg["hf_hub_id"])
        filename = pretrained_cfg.get("hf_hub_filename")
        if filename:
            return load_checkpoint_file(hub_download(repo_id, filename, revision, cache_dir=cache_dir))
        try:
            path = hub_download(repo_id, _WEIGHT_FILES[0], revision, cache_dir=cache_dir)
        except WeightsNotFoundError as err:
            if _WEIGHT_FILES[0] not in str(err):
                raise
            path = hub_download(repo_id, _WEIGHT_FILES[1], revision, cache_dir=cache_dir)
        return load_checkpoint_file(path)


def check_config(path: str | os.PathLike[str], name: str) -> None:
    """Refuse a saved ``config.json`` that is not a timm model config, or that says more than an architecture: a
    weights location in its ``pretrained_cfg``, or model arguments that load weights or name another source or a
    path (see :mod:`kanzoo.models._saved`). The weights come from the same repository or folder.
    """
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelConfigError(f"cannot read the config.json of {name!r}: {type(err).__name__}: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise ModelConfigError(f"the config.json of {name!r} is not a timm model config (an object with an "
                               "'architecture' name)")
    section = config.get("pretrained_cfg", config)  # timm's older configs are a single pretrained cfg
    args = config.get("model_args")
    if not isinstance(section, dict) or not isinstance(args, (dict, type(None))):
        raise ModelConfigError(f"the config.json of {name!r} is not a timm model config ('pretrained_cfg' and "
                               "'model_args' must be objects)")
    from timm.models import is_model

    if not is_model(config["architecture"]):
        raise ModelConfigError(f"the config.json of {name!r} names the architecture {config['architecture']!r}, "
                               "which neither kanzoo nor timm registers (a newer version may have it)")
    _refuse(name, saved_config_problems(section, args))


def _refuse(name: str, problems: list[str]) -> None:
    if problems:
        raise ModelConfigError(f"the config.json of {name!r} says more than an architecture: {'; '.join(problems)}; "
                               "a saved config may only describe one (its weights come from the same repository or "
                               "folder), so remove those fields")


def _cfg_name(pretrained_cfg: dict[str, Any]) -> str:
    architecture = pretrained_cfg.get("architecture") or "model"
    tag = pretrained_cfg.get("tag")
    return f"{architecture}.{tag}" if tag else architecture
