"""A downloaded (or local) config.json describes an architecture only: every way it could name weights elsewhere,
load another model or point at a path is refused, through kanzoo.create_model and timm.create_model alike; and a
checkpoint file that holds Python objects runs no code."""

from __future__ import annotations

import json
import os
import uuid

import pytest
import timm
import torch

import kanzoo
from kanzoo.hub import CheckpointMismatchError, ModelConfigError

TINY = dict(cfg=[4, "M", 8], num_classes=2)
CASES = {  # (where in the config, what it sets), the words of the refusal
    "weights file": (("pretrained_cfg", {"file": "/etc/passwd"}), r"pretrained_cfg names where weights are \(file\)"),
    "another file of the repo": (("pretrained_cfg", {"hf_hub_filename": "evil.bin"}), r"\(hf_hub_filename\)"),
    "another repo": (("pretrained_cfg", {"hf_hub_id": "someone/else"}), r"\(hf_hub_id\)"),
    "encoder from a folder": (("model_args", {"encoder": "local-dir:/tmp/x"}), r"source or a path \(encoder\)"),
    "encoder from the Hub": (("model_args", {"encoder": "HF-HUB:org/repo"}), r"source or a path \(encoder\)"),
    "a URL": (("model_args", {"encoder": "https://example.com/x"}), r"source or a path \(encoder\)"),
    "a nested path": (("model_args", {"encoder_kwargs": {"conv_kwargs": ["../x"]}}), r"\(encoder_kwargs\)"),
    "a nested checkpoint": (("model_args", {"encoder_kwargs": {"checkpoint_path": "cnn.pth"}}),
                            r"set encoder_kwargs\.checkpoint_path, which load weights"),
    "a nested overlay": (("model_args", {"encoder_kwargs": {"pretrained_cfg_overlay": {"file": "x.pth"}}}),
                         r"set encoder_kwargs\.pretrained_cfg_overlay"),
    "the encoder's weights": (("model_args", {"pretrained_encoder": True}), r"set pretrained_encoder, which load"),
    "a checkpoint": (("model_args", {"checkpoint_path": "model.pth"}), r"set checkpoint_path"),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = kanzoo.save_pretrained(kanzoo.create_model("vggkan_11", **TINY), tmp_path_factory.mktemp("saved") / "m")
    return folder, (folder / "config.json").read_text()


def _stage(local_hub, folder, config) -> str:
    repo_id = f"kanzoo-test/config-{uuid.uuid4().hex[:8]}"
    local_hub.stage(repo_id, {"config.json": json.dumps(config), "model.safetensors": folder / "model.safetensors"})
    return repo_id


@pytest.mark.parametrize("case", list(CASES))
def test_a_config_naming_weights_or_sources_is_refused(case, saved, local_hub, hf_cache) -> None:
    folder, text = saved
    (section, values), words = CASES[case]
    config = json.loads(text)
    config[section].update(values)
    (folder / "config.json").write_text(json.dumps(config))
    try:
        for name in (f"hf-hub:{_stage(local_hub, folder, config)}", f"local-dir:{folder}"):
            for build in (kanzoo.create_model, timm.create_model):
                replaced_by_timm = {"hf-hub": "hf_hub_id", "local-dir": "file"}[name.partition(":")[0]]
                if build is timm.create_model and section == "pretrained_cfg" and replaced_by_timm in values:
                    continue  # timm sets that field to the repository (folder) itself before kanzoo sees the config
                with pytest.raises(ModelConfigError, match=f"says more than an architecture: .*{words}") as info:
                    build(name, pretrained=True)
                assert "\n" not in str(info.value) and "remove those fields" in str(info.value)
    finally:
        (folder / "config.json").write_text(text)


def test_configs_that_are_not_model_configs_are_refused(saved, tmp_path) -> None:
    folder, text = saved
    for config, words in (([1, 2], "is not a timm model config"), ({"architecture": "vggkan_99"},
                          "names the architecture 'vggkan_99', which neither kanzoo nor timm registers"),
                          (dict(json.loads(text), model_args=[1]), "must be objects")):
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(ModelConfigError, match=words):
            kanzoo.create_model(f"local-dir:{folder}", pretrained=True)
    (folder / "config.json").write_text(text)
    assert kanzoo.create_model(f"local-dir:{folder}", pretrained=True).num_classes == 2


class _Payload:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_checkpoint_file_runs_no_code(tmp_path) -> None:
    path, marker = tmp_path / "weights.pth", tmp_path / "pwned"
    torch.save({"conv.weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointMismatchError, match=r"holds Python objects besides tensors \(it names posix.system"
                                                      r"\), which kanzoo never unpickles") as info:
        kanzoo.create_model("vggkan_11", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY)
    assert not marker.exists() and "\n" not in str(info.value)
