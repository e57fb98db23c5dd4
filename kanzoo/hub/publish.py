"""Save a model in timm's Hub format (config.json, model.safetensors, model card) and push it to the Hub.

``config.json`` carries ``architecture``, ``num_classes``, ``num_features``, ``pretrained_cfg`` and
``model_args`` (every constructor argument given to ``create_model``), so that
``kanzoo.create_model('hf-hub:org/repo', pretrained=True)`` and ``timm.create_model`` (after
``import kanzoo``) rebuild the same model with the same weights. A model converted by ``kanzoo.kanify``
is saved as the architecture ``kanify`` with its recipe as model arguments: ``source`` (the timm
architecture), ``conv``, ``filter`` (when it has a name), ``converted`` (the converted convolutions, so
that the rebuild is exact whatever the filter was) and the family's arguments.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..models import KANIFY_FILTERS, KANSegmentationModel, KanifyRecord, PruningRecord
from ..models.kanified import ENTRY, RECIPE_KEYS
from ..models.pruned import PRUNED_ENTRY, PRUNED_KEYS
from ..atomic import atomic_write
from .download import _hub_errors
from .errors import HubError

__all__ = ["atomic_write", "kanify_recipe", "push_to_hub", "save_pretrained"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


def _check_model(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, Mapping) or not cfg.get("architecture"):
        raise HubError(f"{type(model).__name__} has no pretrained_cfg with an architecture: save models built by "
                       "kanzoo.create_model (or timm.create_model)")
    if not hasattr(model, "num_classes"):
        raise HubError("save_pretrained saves whole models; rebuild features_only models from the saved full model")
    return cfg["architecture"]


def kanify_recipe(source: str, record: KanifyRecord) -> dict[str, Any]:
    """The model arguments of the ``kanify`` entry point that rebuild a model kanified as ``record`` says."""
    recipe: dict[str, Any] = {"source": source, "conv": record.conv}
    if record.filter in KANIFY_FILTERS:
        recipe["filter"] = record.filter
    return {**recipe, "converted": list(record.converted), **record.family_kwargs}


def _config_view(model: nn.Module, architecture: str, extra: dict[str, Any]) -> nn.Module:
    """The model as ``save_config_for_hf`` should see it: a kanified one as the ``kanify`` architecture, a pruned
    one as the ``kanzoo_pruned`` architecture around the architecture it was pruned from."""
    view = copy.copy(model)  # shares the modules; only its own _model_args (timm's arguments) differ
    view._model_args = {k: v for k, v in getattr(model, "_model_args", {}).items() if k not in PRUNED_KEYS}
    record = getattr(model, "kanify_record", None)
    if isinstance(record, KanifyRecord):
        view._model_args = {k: v for k, v in view._model_args.items()
                            if k not in (*RECIPE_KEYS, "conv_kwargs", *record.family_kwargs)}
        extra.setdefault("pretrained_cfg", {})["architecture"] = ENTRY
        extra["model_args"] = kanify_recipe(architecture, record)
    pruning = getattr(model, "pruning_record", None)
    if isinstance(pruning, PruningRecord):
        config = extra.setdefault("pretrained_cfg", {})
        source = config.get("architecture", architecture)
        config["architecture"] = PRUNED_ENTRY
        extra["model_args"] = {**extra.get("model_args", {}), "pruned_from": source,
                               "pruned_layers": pruning.stages}
    return view


def _description(model: nn.Module, architecture: str) -> str:
    record = getattr(model, "kanify_record", None)
    if isinstance(record, KanifyRecord):
        text = (f"timm's `{architecture}` with its convolutions turned into `{record.conv}` KAN convolutions by "
                f"`kanzoo.kanify` ({len(record.converted)} converted, filter `{record.filter}`)")
    else:
        text = f"A kanzoo `{architecture}` model (Kolmogorov-Arnold convolutional network)"
    pruning = getattr(model, "pruning_record", None)
    if isinstance(pruning, PruningRecord):
        changed = len({name for stage in pruning.stages for name in stage})
        text += f", pruned by `kanzoo.inspect.prune_model` ({changed} KAN convolutions made smaller)"
    return text


def _model_card(model: nn.Module, architecture: str, config: Mapping[str, Any], metrics: Mapping[str, Any] | None,
                dataset: str | None, license: str | None, repo_id: str | None) -> str:
    num_params = sum(p.numel() for p in model.parameters())
    task = "image-segmentation" if isinstance(model, KANSegmentationModel) else "image-classification"
    lines = ["---", "library_name: timm", f"pipeline_tag: {task}", "tags:", f"- {task}", "- timm", "- kanzoo",
             "- kolmogorov-arnold-network"]
    if license:
        lines.append(f"license: {license}")
    if dataset:
        lines += ["datasets:", f"- {dataset}"]
    lines += ["---", "", f"# {repo_id or architecture}", "",
              f"{_description(model, architecture)}, {num_params:,} parameters, {config['num_classes']} classes, "
              f"input {tuple(config['pretrained_cfg'].get('input_size', ()))}.", ""]
    if metrics:
        lines += ["## Metrics", "", f"Dataset: {dataset or 'not stated'}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in metrics.items()]
        lines.append("")
    args = dict(config.get("model_args") or {})
    if len(args.get("converted", ())) > 4:  # a kanified model: the full list is in config.json
        args["converted"] = [*args["converted"][:3], f"... {len(args['converted'])} in all"]
    if "pruned_layers" in args:  # a pruned model: the layers' changes are in config.json
        args["pruned_layers"] = f"{sum(len(stage) for stage in args['pruned_layers'])} layer changes (config.json)"
    lines += ["## Model arguments", "", "```json", json.dumps(args, indent=2), "```", "",
              "## How to load", "", "```python", "import kanzoo, timm", ""]
    if repo_id:
        lines += [f"model = kanzoo.create_model('hf-hub:{repo_id}', pretrained=True)",
                  f"model = timm.create_model('hf-hub:{repo_id}', pretrained=True)  # after import kanzoo"]
    else:
        lines += ["model = kanzoo.create_model('local-dir:/path/to/this/folder', pretrained=True)"]
    lines += ["```", "", f"License: {license or 'not stated'}.", ""]
    return "\n".join(lines)


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike[str], *,
                    metrics: Mapping[str, Any] | None = None, dataset: str | None = None,
                    license: str | None = None, model_card: bool = True, repo_id: str | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and (``model_card``) a ``README.md`` model card.

    Each file is written atomically. Returns the directory. Model arguments that are not JSON
    (e.g. a callable ``norm_layer``) cannot be saved and raise a ``ValueError`` naming them.
    """
    from safetensors.torch import save_file
    # timm exports no config-only writer: its public save_for_hf also writes the weights (torch .bin by default,
    # non-atomically, without the safetensors metadata), so the config writer is taken from its module
    from timm.models._hub import save_config_for_hf

    architecture = _check_model(model)
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    for_saving = getattr(model, "model_args_for_saving", None)  # e.g. UKANet: the encoder's weights are saved
    extra: dict[str, Any] = {"model_args": for_saving()} if callable(for_saving) else {}
    if license:
        extra["pretrained_cfg"] = {"license": license}
    view = _config_view(model, architecture, extra)
    atomic_write(folder / CONFIG_NAME, lambda tmp: save_config_for_hf(view, tmp, model_config=extra))
    config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    if model_card:
        card = _model_card(model, architecture, config, metrics, dataset, license, repo_id)
        atomic_write(folder / CARD_NAME, lambda tmp: tmp.write_text(card, encoding="utf-8"))
    return folder


def push_to_hub(model: nn.Module, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                token: str | None = None, metrics: Mapping[str, Any] | None = None, dataset: str | None = None,
                license: str | None = None, commit_message: str = "Add kanzoo model") -> str:
    """Create ``repo_id`` if needed and upload :func:`save_pretrained`'s files in one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp, _hub_errors(repo_id, "(upload)", revision or "main", repo_id):
        save_pretrained(model, tmp, metrics=metrics, dataset=dataset, license=license, repo_id=repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=commit_message)
    return str(info.commit_url)
