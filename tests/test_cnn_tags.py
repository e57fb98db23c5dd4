"""Tags that start a KAN from torchvision's ImageNet CNNs as timm hosts them (``reskanet_*.tv*``, ``densekanet_*.tv``).

The real files cannot be fetched here, so random weights stand in for them: each tag is served from the
local Hub (tests/conftest.py) as a timm-format repository (config.json + model.safetensors, as timm
publishes them), and the KAN built from the tag must give the logits of timm's CNN loaded from the same
file, to a relative 1e-5 in fp32, in eval mode.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
import warnings
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save, save_file
from timm.models.densenet import DenseNet
from timm.models.resnet import BasicBlock, ResNet

import kanzoo
from kanzoo.cli import build_parser
from kanzoo.cli import main as cli_main
from kanzoo.hub import (CONVERTERS, CheckpointMismatchError, ManifestError, check_pretrained_fit, convert_state_dict,
                        manifest, validate_manifest)
from kanzoo.layers import KANConvBase
from kanzoo.tasks import TaskError
from kanzoo.tasks.modeling import create_task_model

pytestmark = pytest.mark.usefixtures("single_thread")

PACKAGED = copy.deepcopy(manifest())  # read before any test points KANZOO_WEIGHTS_MANIFEST elsewhere
RTOL = 1e-5


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random norm statistics and affine parameters (timm zero-initialises some), so every tensor matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
            elif isinstance(module, torch.nn.Linear):
                module.bias.normal_(0.0, 0.1, generator=generator)
    return model.eval()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.contiguous() for key, value in model.state_dict().items()}


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _assert_same_logits(kan: torch.nn.Module, cnn: torch.nn.Module, x: torch.Tensor) -> None:
    got, want = _logits(kan, x), _logits(cnn, x)
    error = ((got - want).abs().max() / want.abs().max()).item()
    assert error <= RTOL, f"relative error {error:.2e}"


def _source_arch(tag: str) -> str:
    """timm's architecture of a tag's file, from its repository name (``timm/resnet18.tv_in1k``)."""
    return PACKAGED[tag]["hf_hub_id"].split("/", 1)[1].partition(".")[0]


@pytest.fixture
def serve(local_hub, weights_manifest, hf_cache, tmp_path):
    """Stage tags as timm-format repositories of random weights; returns ``{tag: (cnn, repo_id, local file)}``."""
    from timm.models._hub import save_config_for_hf

    def stage(*tags: str) -> dict[str, tuple[torch.nn.Module, str, Path]]:
        served, entries = {}, {}
        for index, tag in enumerate(tags):
            cnn = _randomise(timm.create_model(_source_arch(tag)), seed=index)
            data = save(_state(cnn))
            folder = tmp_path / tag
            folder.mkdir()
            (folder / "model.safetensors").write_bytes(data)
            save_config_for_hf(cnn, str(folder / "config.json"))
            repo_id = f"kanzoo-test/{uuid.uuid4().hex[:10]}"
            local_hub.stage(repo_id, {"config.json": folder / "config.json", "model.safetensors": data})
            entries[tag] = dict(copy.deepcopy(PACKAGED[tag]), hf_hub_id=repo_id,
                                sha256=hashlib.sha256(data).hexdigest(), verified=True)
            served[tag] = (cnn, repo_id, folder / "model.safetensors")
        weights_manifest(entries)
        return served

    return stage


# ----------------------------------------------------------------------------------------- the tags, end to end

@pytest.mark.parametrize("name, tag, batch", [
    ("reskanet_18.tv_in1k", "reskanet_18.tv_in1k", 2),
    ("reskanet_50", "reskanet_50.tv2_in1k", 1),  # by architecture: tv2_in1k is the default tag
    ("densekanet_121.tv_in1k", "densekanet_121.tv_in1k", 1),
])
def test_tag_gives_the_cnns_logits(name, tag, batch, serve, local_hub):
    cnn, repo_id, path = serve(tag)[tag]
    kan = kanzoo.create_model(name, pretrained=True)
    assert local_hub.downloads(repo_id) == 1 and kan.pretrained_cfg["tag"] == tag.partition(".")[2]
    reference = timm.create_model(_source_arch(tag), pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    torch.manual_seed(0)
    _assert_same_logits(kan, reference, torch.randn(batch, 3, 64, 64))
    convs = [m for m in kan.modules() if isinstance(m, KANConvBase)]
    assert convs and all(type(m.base_activation) is torch.nn.Identity for m in convs)
    assert all(torch.count_nonzero(m.basis_weight) == 0 for m in convs)  # only the base branch is loaded


def test_tags_are_the_defaults_with_the_published_source_accuracies():
    expected = {  # torchvision's published ImageNet-1k top-1 of the source CNNs
        "reskanet_18": ("tv_in1k", 69.758), "reskanet_34": ("tv_in1k", 73.314), "reskanet_50": ("tv2_in1k", 80.858),
        "reskanet_101": ("tv2_in1k", 81.886), "reskanet_152": ("tv2_in1k", 82.284),
        "densekanet_121": ("tv_in1k", 74.434), "densekanet_161": ("tv_in1k", 77.138),
        "densekanet_169": ("tv_in1k", 75.600), "densekanet_201": ("tv_in1k", 76.896),
    }
    for architecture, (tag, top1) in expected.items():
        assert kanzoo.list_models(architecture, pretrained=True)[0] == f"{architecture}.{tag}"
        entry = PACKAGED[f"{architecture}.{tag}"]
        assert entry["metrics"]["top1"] == top1 and "source CNN at initialisation" in entry["metrics"]["of"]
        source = architecture.replace("reskanet_", "resnet").replace("densekanet_", "densenet")
        assert entry["license"] == "bsd-3-clause" and entry["hf_hub_id"] == f"timm/{source}.{tag}"
    assert kanzoo.list_models("vggkan_11", pretrained=True)[0] == "vggkan_11.tck_in1k"


def test_ukanet_starts_from_the_encoder_tag_and_tasks_choose_it_when_it_fits(serve, local_hub, tmp_path):
    cnn, repo_id, _ = serve("reskanet_18.tv_in1k")["reskanet_18.tv_in1k"]
    classifier = kanzoo.create_model("reskanet_18", pretrained=True)  # the default tag
    seg = kanzoo.create_model("ukanet_18", pretrained_encoder=True, num_classes=2)
    torch.testing.assert_close(seg.encoder.conv1.weight, classifier.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(seg.encoder.layer4[1].conv2.norm.running_var,
                               cnn.layer4[1].bn2.running_var, rtol=0, atol=0)
    assert local_hub.downloads(repo_id) == 1  # the second load came from the cache
    folder = kanzoo.save_pretrained(seg, tmp_path / "seg")  # rebuilds from the saved state, downloading nothing
    saved_args = json.loads((folder / "config.json").read_text())["model_args"]
    assert saved_args["pretrained_encoder"] is False and saved_args["encoder_kwargs"]["conv"] == "kacn"
    with torch.device("meta"):
        assert kanzoo.create_model(f"local-dir:{folder}").encoder_args["act_layer"] == "relu"
    reloaded = kanzoo.create_model(f"local-dir:{folder}", pretrained=True)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_logits(reloaded, x), _logits(seg, x), rtol=0, atol=0)

    auto = create_task_model("ukanet_18", pretrained_encoder=None, num_classes=2)
    torch.testing.assert_close(auto.encoder.conv1.weight, classifier.conv1.weight, rtol=0, atol=0)
    fitted = create_task_model("reskanet_18", num_classes=3)  # pretrained=None: the weights fit, so they load
    torch.testing.assert_close(fitted.layer1[0].conv1.weight, classifier.layer1[0].conv1.weight, rtol=0, atol=0)
    fit = "reskanet_18.tv_in1k do not fit the model arguments"
    with pytest.warns(UserWarning, match=f"{fit}.*width=0.125.*--no-pretrained-encoder"):
        small = create_task_model("ukanet_18", pretrained_encoder=None, num_classes=2, width=0.125)
    assert type(small.encoder.conv1.base_activation) is torch.nn.SiLU  # the plain architecture, random init
    with pytest.warns(UserWarning, match="do not fit.*--no-pretrained\\)"):
        create_task_model("reskanet_18", num_classes=3, width=0.125)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_task_model("reskanet_18", pretrained=False, num_classes=3, width=0.125)
    with pytest.raises(TaskError, match="mis-shaped.*--no-pretrained to start from random initialisation"):
        create_task_model("reskanet_18", pretrained=True, num_classes=3, width=0.125)
    with pytest.raises(TaskError, match="no classification encoder"):
        create_task_model("u2kanet_small", pretrained_encoder=True, num_classes=2, width=0.125)
    assert local_hub.downloads(repo_id) == 1


# ----------------------------------------------------------------------------------------- the converters

def _tiny_resnet() -> tuple[torch.nn.Module, torch.nn.Module]:
    """timm's ResNet with one basic block per stage at 1/8 width, and ResKANet of the same layout."""
    cnn = _randomise(ResNet(BasicBlock, (1, 1, 1, 1), channels=(8, 16, 32, 64), num_classes=5))
    kan = kanzoo.create_model("reskanet_18.tv_in1k", layers=(1, 1, 1, 1), width=0.125, stem_width=512,
                              num_classes=5)
    return cnn, kan


def _tiny_densenet() -> tuple[torch.nn.Module, torch.nn.Module]:
    cnn = _randomise(DenseNet(growth_rate=4, block_config=(1, 2, 1, 1), num_classes=5))
    kan = kanzoo.create_model("densekanet_121.tv_in1k", block_config=(1, 2, 1, 1), growth_rate=4,
                              num_init_features=8, num_classes=5)
    return cnn, kan


@pytest.mark.parametrize("build, converter", [(_tiny_resnet, "timm_resnet"), (_tiny_densenet, "timm_densenet")])
def test_converter_consumes_every_key_and_fills_every_tensor(build, converter):
    cnn, kan = build()
    state = _state(cnn)
    assert CONVERTERS[converter].detect(state) and not CONVERTERS[converter].detect(_state(kan))
    converted = convert_state_dict(state, converter, kan)
    own = kan.state_dict()
    assert set(converted) == set(own)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in own.items()}
    kan.load_state_dict(converted)
    _assert_same_logits(kan, cnn, torch.randn(2, 3, 64, 64))
    with pytest.raises(CheckpointMismatchError, match=r"does not know: \['extra.weight'\]"):
        convert_state_dict({**state, "extra.weight": torch.zeros(1)}, converter, kan)
    with pytest.raises(CheckpointMismatchError, match="needs the built model"):
        convert_state_dict(state, converter)


def test_torchvision_spellings_and_files_without_batch_counters_convert():
    cnn, kan = _tiny_densenet()
    renamed = {key.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): value
               for key, value in _state(cnn).items() if not key.endswith("num_batches_tracked")}
    assert any(".norm.1." in key for key in renamed)
    converted = convert_state_dict(renamed, "timm_densenet", kan)
    assert set(converted) == set(kan.state_dict())
    kan.load_state_dict(converted)
    _assert_same_logits(kan, cnn, torch.randn(1, 3, 32, 32))


def test_converter_refuses_models_without_a_plain_base_branch():
    cnn, _ = _tiny_resnet()
    small = dict(layers=(1, 1, 1, 1), width=0.125, stem_width=512)
    bottleneck = kanzoo.create_model("reskanet_18.tv_in1k", conv="bottleneck_kacn", **small)
    with pytest.raises(CheckpointMismatchError, match="not a plain KAN conv.*plain family"):
        convert_state_dict(_state(cnn), "timm_resnet", bottleneck)
    no_base = kanzoo.models.ResKANet(conv="kacn", base_activation=None, **small)  # create_model drops None
    with pytest.raises(CheckpointMismatchError, match="no base branch.*base_activation='identity'"):
        convert_state_dict(_state(cnn), "timm_resnet", no_base)


def test_another_family_or_degree_takes_the_cnn_too(tmp_path):
    cnn, _ = _tiny_resnet()
    path = tmp_path / "tiny.safetensors"
    save_file(_state(cnn), path)
    kan = kanzoo.create_model("reskanet_18.tv_in1k", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              layers=(1, 1, 1, 1), width=0.125, stem_width=512, num_classes=5, conv="kaln", degree=5)
    assert kan.conv1.num_responses == 7 and type(kan.conv1).__name__ == "KALNConv2d"
    _assert_same_logits(kan, cnn, torch.randn(2, 3, 32, 32))


# ----------------------------------------------------------------------------------------- model_args and layout

def test_tag_model_args_are_defaults_that_explicit_arguments_override(tmp_path):
    plain = kanzoo.create_model("reskanet_18", width=0.125)
    assert type(plain.conv1).__name__ == "KAGNConv2d" and type(plain.conv1.base_activation) is torch.nn.SiLU
    tagged = kanzoo.create_model("reskanet_18.tv_in1k", width=0.125)
    assert type(tagged.conv1).__name__ == "KACNConv2d" and type(tagged.conv1.base_activation) is torch.nn.Identity
    assert type(tagged.layer1[0].act) is torch.nn.ReLU
    mine = kanzoo.create_model("reskanet_18.tv_in1k", width=0.125, act_layer="gelu", conv="kagn")
    assert type(mine.layer1[0].act) is torch.nn.GELU and type(mine.conv1).__name__ == "KAGNConv2d"
    assert timm.create_model("densekanet_121.tv_in1k", width=0.125).features.norm5 is not None
    # a local file in kanzoo's format still loads into the plain architecture (it is not the tag's file)
    path = tmp_path / "plain.safetensors"
    save_file(_state(plain), path)
    again = kanzoo.create_model("reskanet_18", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                width=0.125)
    torch.testing.assert_close(again.conv1.weight, plain.conv1.weight, rtol=0, atol=0)


def test_densekanet_preact_layout_and_unchanged_default_keys():
    default = kanzoo.create_model("densekanet_121", width=0.125, block_config=(1, 1, 1, 1))
    keys = set(default.state_dict())
    assert "features.transition1.0.weight" in keys and "features.denseblock1.denselayer1.conv1.norm.weight" in keys
    assert not any(".norm1." in k or ".norm5." in k or "transition1.norm" in k for k in keys)
    preact = kanzoo.create_model("densekanet_121", width=0.125, block_config=(1, 1, 1, 1), preact=True,
                                 act_layer="relu")
    layer = preact.features.denseblock1.denselayer1
    assert isinstance(layer.norm1, torch.nn.BatchNorm2d) and isinstance(layer.conv1.norm, torch.nn.Identity)
    assert isinstance(preact.features.transition1.norm, torch.nn.BatchNorm2d)
    assert preact.feature_info[-1]["module"] == "features.act5"
    features = kanzoo.create_model("densekanet_121", width=0.125, block_config=(1, 1, 1, 1), preact=True,
                                   act_layer="relu", features_only=True, pretrained=True,
                                   pretrained_cfg_overlay=dict(state_dict=preact.state_dict())).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        last = features(x)[-1]
        expected = preact.eval().forward_features(x)
    torch.testing.assert_close(last, expected)
    assert last.min() >= 0  # after the final norm and ReLU


def test_fit_check_reads_the_layout_on_the_meta_device():
    assert check_pretrained_fit("reskanet_18", num_classes=3, in_chans=1) == "reskanet_18.tv_in1k"
    assert check_pretrained_fit("densekanet_121.tv_in1k", num_classes=3) == "densekanet_121.tv_in1k"
    with pytest.raises(CheckpointMismatchError, match="mis-shaped"):
        check_pretrained_fit("reskanet_50", width=0.5)


# ----------------------------------------------------------------------------------------- manifest, CLI

def test_manifest_validates_model_args_metric_labels_and_field_names():
    validate_manifest(PACKAGED, converters=CONVERTERS)
    entry = copy.deepcopy(PACKAGED["reskanet_18.tv_in1k"])
    bad = {"reskanet_18.a": dict(entry, model_args=["relu"]),
           "reskanet_18.b": dict(entry, metrics=dict(entry["metrics"], of=7)),
           "reskanet_18.c": dict(entry, model_arg={"act_layer": "relu"})}
    with pytest.raises(ManifestError) as info:
        validate_manifest(bad, converters=CONVERTERS)
    message = str(info.value)
    assert "reskanet_18.a: model_args must be an object" in message
    assert "reskanet_18.b: metrics 'of' must say" in message
    assert "reskanet_18.c: unknown field(s) ['model_arg']" in message


def test_cli_info_labels_source_accuracies_and_segment_has_the_encoder_flag(capsys):
    assert cli_main(["info", "reskanet_18"]) == 0
    out = capsys.readouterr().out
    assert "top1 69.758" in out and "(of the source CNN at initialisation" in out
    assert "builds  conv='kacn'" in out and "base_activation='identity'" in out
    parser = build_parser()
    base = ["segment", "--model", "ukanet_18", "--data", "d", "--out", "o"]
    assert parser.parse_args(base).pretrained_encoder is None
    assert parser.parse_args(base + ["--no-pretrained-encoder"]).pretrained_encoder is False
    assert parser.parse_args(base + ["--pretrained-encoder"]).pretrained_encoder is True
